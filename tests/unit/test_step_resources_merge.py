"""How the local runner keeps a step's measured resources (pipelines.runner._StepRecorder,
mlops.step_resources): on the ML Metadata execution(s) the step recorded, merged into what the
step wrote; on an execution of its own when the step recorded none; in a textfile when no
Pushgateway is configured or it does not answer. The measurement itself runs a real pipeline in
tests/integration/test_step_resources.py."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops.config import MetadataSpec
from mlops.metadata.store import MetadataStore, connection_config
from mlops.step_resources import PEAK_RSS, StepResources, human_bytes, publish
from pipelines.runner import StepResult, _StepRecorder


@pytest.fixture
def store(tmp_path) -> MetadataStore:
    store = MetadataStore(connection_config(MetadataSpec(), str(tmp_path / "mlmd.sqlite")))
    store.start_run("training", "r1", {"runner": "kfp.local"})
    return store


def step(tmp_path, task: str, status: str = "ok", log: str = "") -> StepResult:
    path = tmp_path / f"{task}.log"
    path.write_text(log)
    return StepResult(task, 12.5, status, str(path), resources=StepResources(12.5, 9.25, 300 << 20))


def record(store, component: str, **properties):
    return store.record_execution(store.run_context("training", "r1"), component, {}, {}, properties)


def test_resources_are_merged_into_the_executions_the_step_recorded(store, tmp_path):
    recorder = _StepRecorder(store, "training", "r1")
    record(store, "example_gen", config_hash="c0")
    before = recorder.before_step()
    record(store, "trainer", config_hash="c1", code_version="trainer/abc")
    recorder.after_step(step(tmp_path, "trainer"), before)
    executions = {e.component: e for e in store.list_executions("r1")}
    assert set(executions) == {"example_gen", "trainer"}
    trainer = executions["trainer"]
    assert trainer.state == "COMPLETE"
    assert trainer.properties == {
        "component": "trainer",
        "config_hash": "c1",  # what the step recorded stays
        "code_version": "trainer/abc",
        "step": "trainer",
        "wall_seconds": 12.5,
        "cpu_seconds": 9.25,
        "peak_rss_bytes": 300 << 20,
    }
    assert "wall_seconds" not in executions["example_gen"].properties  # an earlier step's


def test_a_step_that_recorded_nothing_gets_an_execution_of_its_own_unless_cancelled(store, tmp_path):
    recorder = _StepRecorder(store, "training", "r1")
    recorder.after_step(step(tmp_path, "resolve-config"), recorder.before_step())
    failing_log = "Traceback (most recent call last):\n  ...\nmlops.errors.InvalidInput: span 2013-02 has no rows\n"
    recorder.after_step(step(tmp_path, "example-gen", "failed", failing_log), recorder.before_step())
    recorder.after_step(step(tmp_path, "transform", "cancelled"), recorder.before_step())
    executions = {e.name: e for e in store.list_executions("r1")}
    assert set(executions) == {"r1/resolve-config", "r1/example-gen"}  # nothing for the cancelled step
    assert executions["r1/resolve-config"].state == "COMPLETE"
    failed = executions["r1/example-gen"]
    assert failed.state == "FAILED" and failed.properties["error"] == "InvalidInput: span 2013-02 has no rows"
    assert failed.properties["peak_rss_bytes"] == 300 << 20 and failed.properties["cpu_seconds"] == 9.25


def gauges(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (s.name, s.labels["pipeline"], s.labels["step"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_without_a_gateway_or_when_it_does_not_answer_the_numbers_go_to_the_textfile(tmp_path, capsys):
    import socket

    steps = {"transform": StepResources(44.2, 61.3, 1_300_000_000), "trainer": StepResources(3.0)}
    out = tmp_path / "run" / "step_resources.prom"
    assert publish("training", steps, None, str(out)) == str(out)
    written = gauges(out.read_text())
    assert written[("mlops_step_cpu_seconds", "training", "transform")] == 61.3
    assert written[(PEAK_RSS, "training", "transform")] == 1.3e9
    assert written[("mlops_step_wall_seconds", "training", "trainer")] == 3.0
    assert (PEAK_RSS, "training", "trainer") not in written  # not measured: no sample, not 0
    out.unlink()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert publish("training", steps, dead, str(out)) == str(out)
    assert gauges(out.read_text()) == written
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert dead in warning and str(out) in warning


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 1536, 200 << 20, 1_300_000_000, 3 << 40)] == [
        "512 B",
        "1.5 KiB",
        "200 MiB",
        "1.21 GiB",
        "3 TiB",
    ]
