"""A local run measures every step (wall, CPU of its process tree, peak RSS of its largest process)
and keeps the numbers in ML Metadata, in Prometheus metrics and in `mlops run`'s summary.

The run (the session's resource_run fixture) uses tests.support.resource_pipeline: `allocate`
holds 200 MiB in a worker child and records itself in ML Metadata, `burn` burns 1 s of CPU in a
worker child and records nothing; both floors are only reached when the step's children are
counted (the kfp executor alone stays near 100 MB and a few tenths of a second)."""

from __future__ import annotations

import os
import re
import resource
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

MIB = 1 << 20
STEP_METRICS = ("mlops_step_wall_seconds", "mlops_step_cpu_seconds", "mlops_step_peak_rss_bytes")


def samples(text: str, pipeline: str) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels["step"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in STEP_METRICS and s.labels.get("pipeline") == pipeline
    }


def test_a_local_run_records_each_steps_wall_cpu_and_peak_rss(resource_run):
    result, run, executions = resource_run.result, resource_run.run, resource_run.executions
    assert set(executions) == {"allocate", "burn"}
    allocate, burn = executions["allocate"], executions["burn"]
    assert allocate.state == burn.state == "COMPLETE"
    assert allocate.properties["config_hash"]  # the step's own record, the numbers merged into it
    for execution in (allocate, burn):
        used = execution.properties
        assert used["step"] == execution.component
        assert 0 < used["cpu_seconds"] <= used["wall_seconds"] * os.cpu_count()
        assert 0 < used["peak_rss_bytes"] < 8 << 30
    assert allocate.properties["peak_rss_bytes"] >= 200 * MIB  # the worker's block
    # Each step its own peak, not the run's. Linux keeps a forked child's high-water mark across
    # exec, so a step never reads below the driver's RSS when it was started: here the driver is
    # this test process (it may have imported TensorFlow for other tests).
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert burn.properties["peak_rss_bytes"] < max(200 * MIB, driver_peak + 50 * MIB)
    assert burn.properties["cpu_seconds"] >= 0.8  # the worker's burn

    # no Pushgateway configured: the metrics file beside the run holds the same numbers
    written = samples((Path(run.properties["run_dir"]) / "step_resources.prom").read_text(), "resources")
    for execution in (allocate, burn):
        used = execution.properties
        assert written[("mlops_step_wall_seconds", execution.component)] == used["wall_seconds"]
        assert written[("mlops_step_cpu_seconds", execution.component)] == used["cpu_seconds"]
        assert written[("mlops_step_peak_rss_bytes", execution.component)] == used["peak_rss_bytes"]

    # the summary: one line per step with the three numbers
    lines = {
        m[1]: m
        for m in re.finditer(
            r"  step      (\S+) +([\d.]+) s wall +([\d.]+) s CPU +([\d.]+) (\w+) peak RSS", result.output
        )
    }
    assert set(lines) == {"allocate", "burn"}, result.output
    assert float(lines["burn"][3]) >= 0.8
    assert lines["allocate"][5] == "MiB" and float(lines["allocate"][4]) >= 200, result.output


def test_step_numbers_pushed_to_a_real_pushgateway_are_grouped_by_pipeline(tmp_path):
    from mlops.step_resources import StepResources, publish
    from tests.support.prometheus import Pushgateway, needs_prometheus

    if needs_prometheus.args[0]:
        pytest.skip(needs_prometheus.kwargs["reason"])
    unused = tmp_path / "not-written.prom"
    with Pushgateway(tmp_path / "pushgateway") as gateway:
        publish("ingest", {"ingest": StepResources(3.5, 2.0, 150 * MIB)}, gateway.url, str(unused))
        publish("training", {"transform": StepResources(44.2, 61.3, 1_300_000_000)}, gateway.url, str(unused))
        # the pipeline's next run replaces its numbers (a step it no longer has disappears)
        publish("training", {"trainer": StepResources(120.5, 190.0, 2_100_000_000)}, gateway.url, str(unused))
        exposed = urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10).read().decode()
    assert samples(exposed, "ingest") == {
        ("mlops_step_wall_seconds", "ingest"): 3.5,
        ("mlops_step_cpu_seconds", "ingest"): 2.0,
        ("mlops_step_peak_rss_bytes", "ingest"): 150 * MIB,
    }
    assert samples(exposed, "training") == {
        ("mlops_step_wall_seconds", "trainer"): 120.5,
        ("mlops_step_cpu_seconds", "trainer"): 190.0,
        ("mlops_step_peak_rss_bytes", "trainer"): 2.1e9,
    }
    assert not unused.exists()
