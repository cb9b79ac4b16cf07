"""What each pipeline step used: wall time, CPU seconds and peak resident memory, as ML Metadata
execution properties and as Prometheus metrics.

The local runner (pipelines/runner.py) measures a step from outside: it starts the step's process
and reaps it with wait4(2), whose rusage covers that process and every descendant it waited for
(the kfp executor, TF workers run by mlops.modeling.child.run_child): CPU = user + system time of
the whole tree, peak RSS = the largest peak of any one process in it (the kernel's maxrss; not a
sum over processes running at once). A descendant nobody waits for (daemonised, or killed with the
step's process group) is not counted.

A run is a batch job like a monitoring run: the numbers reach Prometheus through
mlops.monitoring.prometheus.publish, pushed to `monitoring.pushgateway_url` grouped by job and
pipeline (a pipeline's next run replaces its numbers), else written as a `.prom` file beside the
run for a textfile collector. Metric names (the dashboard reads them): WALL, CPU, PEAK_RSS.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

JOB = "mlops_pipeline"
WALL = "mlops_step_wall_seconds"
CPU = "mlops_step_cpu_seconds"
PEAK_RSS = "mlops_step_peak_rss_bytes"
METRICS_FILE = "step_resources.prom"  # beside the run (its kfp.local run dir) without a gateway


@dataclass(frozen=True)
class StepResources:
    """One step's measured use. cpu_seconds / peak_rss_bytes are None when the step's process was
    not reaped by the runner (a cancelled step)."""

    wall_seconds: float
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = None

    def properties(self) -> dict[str, float | int]:
        """The ML Metadata custom properties of the step's execution (None values left out)."""
        values = {"wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds}
        values = {k: round(v, 3) for k, v in values.items() if v is not None}
        return values | ({"peak_rss_bytes": self.peak_rss_bytes} if self.peak_rss_bytes is not None else {})


def from_rusage(wall_seconds: float, usage) -> StepResources:
    """A reaped process tree's use from os.wait4's rusage (Linux: ru_maxrss in KiB)."""
    return StepResources(wall_seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def registry_for(pipeline: str, steps: dict[str, StepResources]):
    """A CollectorRegistry with the three gauges per step ({pipeline, step})."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges = {
        "wall_seconds": Gauge(WALL, "Wall time of a pipeline step", ["pipeline", "step"], registry=registry),
        "cpu_seconds": Gauge(
            CPU, "User + system CPU of a pipeline step's process tree", ["pipeline", "step"], registry=registry
        ),
        "peak_rss_bytes": Gauge(
            PEAK_RSS, "Peak resident memory of the largest process of a step", ["pipeline", "step"], registry=registry
        ),
    }
    for step, resources in steps.items():
        for key, value in resources.properties().items():
            gauges[key].labels(pipeline, step).set(value)
    return registry


def publish(pipeline: str, steps: dict[str, StepResources], pushgateway_url: str | None, textfile_uri: str) -> str:
    """Pushes the run's step numbers (or writes the textfile); returns where they went. A failed
    push is one warning line and the textfile instead: the numbers describe the run, they are not
    part of it, and nothing is lost."""
    from mlops.errors import Unavailable
    from mlops.monitoring import prometheus

    registry = registry_for(pipeline, steps)
    if pushgateway_url:
        try:
            return prometheus.publish(registry, pushgateway_url, "", job=JOB, grouping={"pipeline": pipeline})
        except Unavailable as e:
            print(f"step resources: {e}; written to {textfile_uri} instead", file=sys.stderr)
    return prometheus.publish(registry, None, textfile_uri, job=JOB, grouping={"pipeline": pipeline})


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB", 2.1e8 -> "200 MiB" (three significant digits at most)."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if value >= 100 or unit == "B" else f"{value:.3g} {unit}"
