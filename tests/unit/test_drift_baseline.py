"""The drift baseline ExampleValidator picks by itself (real ML Metadata on SQLite): the statistics of
the last SUCCESSFUL run of the same project and dataset; never a failed run's, never another
project's."""

import pytest

from components.example_validator import executor as validator
from components.schema_gen.executor import run as run_schema_gen
from components.statistics_gen.executor import run as run_statistics_gen
from mlops.config import load_config
from mlops.metadata.store import open_store
from mlops.steps import record_step
from tests.support.fixtures import REPO
from tests.support.reference_data import split_positions, write_split_frames
from tests.support.sensor_data import sensor_events

CONFIG = REPO / "tests" / "configs" / "sensor_events.yaml"
PIPELINE = "training"


def model_inputs(seed: int, drop: tuple[str, ...] = ()) -> dict:
    """Examples as ExampleGen writes them (raw feature encoding), split 80/10/10."""
    df = sensor_events(seed=seed)[["station", "temperature", "pressure", "gust", "fault_code", "alarm"]]
    df = df.astype({"temperature": "float32", "pressure": "float32", "gust": "float32"})
    df["fault_code"] = df["fault_code"].fillna("")
    return split_positions(df.drop(columns=list(drop)))


def pipeline_run(cfg, tmp_path, run_id: str, seed: int, *, drop=(), later_failure: str | None = None):
    """StatisticsGen -> SchemaGen -> ExampleValidator of one run, recorded in MLMD; returns the
    statistics dir. `later_failure`: a later step of the run that failed."""
    examples = write_split_frames(str(tmp_path / run_id / "examples"), model_inputs(seed, drop))
    statistics = run_statistics_gen(
        cfg, examples, str(tmp_path / run_id / "statistics"), pipeline=PIPELINE, run_id=run_id
    ).out_dir
    schema_dir = str(tmp_path / "schema")  # one inferred schema, from the first run
    if not (tmp_path / "schema").exists():
        run_schema_gen(cfg, statistics, schema_dir, pipeline=PIPELINE, run_id=run_id)
    validator.run(cfg, statistics, schema_dir, str(tmp_path / run_id / "anomalies"), pipeline=PIPELINE, run_id=run_id)
    if later_failure:
        record_step(
            cfg,
            pipeline=PIPELINE,
            run_id=run_id,
            component=later_failure,
            state="FAILED",
            properties={"error": "out of memory"},
        )
    return statistics


@pytest.fixture
def cfg(artifact_root, monkeypatch):
    monkeypatch.setenv("SENSOR_EVENTS_SOURCE", "unused.csv")
    return load_config(CONFIG)


def test_baseline_is_the_last_successful_run_of_the_same_project(cfg, tmp_path):
    succeeded = pipeline_run(cfg, tmp_path, "run-1", seed=1)
    failed_validation = pipeline_run(cfg, tmp_path, "run-2", seed=2, drop=("pressure",))
    failed_training = pipeline_run(cfg, tmp_path, "run-3", seed=3, later_failure="trainer")
    other = load_config(CONFIG, overrides={"project": "other-sensors"})  # same metadata store
    other_project = pipeline_run(other, tmp_path, "run-4", seed=4)

    store = open_store(cfg)
    states = {e.name: e.state for e in store.list_executions() if e.component in ("example_validator", "trainer")}
    assert states == {
        "run-1/example_validator": "COMPLETE",
        "run-2/example_validator": "FAILED",
        "run-3/example_validator": "COMPLETE",
        "run-3/trainer": "FAILED",
        "run-4/example_validator": "COMPLETE",
    }

    current = pipeline_run(cfg, tmp_path, "run-5", seed=5)
    recorded = {e.name: e for e in store.list_executions("run-5")}["run-5/example_validator"]
    assert recorded.state == "COMPLETE"
    result = validator.previous_statistics(cfg, current)
    assert result == succeeded
    assert result not in (failed_validation, failed_training, other_project)
    statistics = {a.uri: a for a in store.list_artifacts("Statistics")}
    assert statistics[succeeded].properties["project"] == "sensor-events"
    assert statistics[other_project].properties["project"] == "other-sensors"
    # what run() compared with when it picked the baseline itself
    report = (tmp_path / "run-5" / "anomalies" / "anomalies.json").read_text()
    assert f'"previous_statistics": "{succeeded}"' in report

    # the other project's baseline is its own run, not this project's newer ones
    assert validator.previous_statistics(other, current) == other_project


def test_no_successful_run_means_no_baseline(cfg, tmp_path):
    pipeline_run(cfg, tmp_path, "run-1", seed=1, later_failure="trainer")
    pipeline_run(cfg, tmp_path, "run-2", seed=2, drop=("pressure",))
    current = pipeline_run(cfg, tmp_path, "run-3", seed=3)
    assert validator.previous_statistics(cfg, current) is None
    report = (tmp_path / "run-3" / "anomalies" / "anomalies.json").read_text()
    assert '"previous_statistics": null' in report
