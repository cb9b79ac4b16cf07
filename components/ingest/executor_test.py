"""The ingest step without KFP: dataset version + MLMD record, idempotent per run."""

from components.ingest.executor import run
from mlops.config import load_config
from mlops.metadata.store import open_store
from tests.support.fixtures import FLIGHTS_CONFIG


def test_ingest_step_records_dataset_once_per_run(artifact_root):
    cfg = load_config(FLIGHTS_CONFIG)
    first = run(cfg, span="2013-06", pipeline="ingest", run_id="run-1")
    again = run(cfg, span="2013-06", pipeline="ingest", run_id="run-1")  # a retried step
    assert first.version_id == again.version_id and first.created and not again.created
    store = open_store(cfg)
    assert [e.name for e in store.list_executions("run-1")] == ["run-1/ingest"]
    datasets = {a.name: a for a in store.list_artifacts("Dataset")}
    assert set(datasets) == {first.version_id, *first.pointer["feature_tables"].values()}
    assert datasets[first.version_id].properties["row_count"] == first.row_count
    assert datasets[first.version_id].properties["span"] == "2013-06"
    run(cfg, span="2013-06", pipeline="ingest", run_id="run-2")  # same data, new run: one artifact
    assert len(store.list_artifacts("Dataset")) == 3
    assert len(store.list_executions()) == 2
