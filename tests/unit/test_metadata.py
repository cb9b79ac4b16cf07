"""The MLMD store against a real SQLite file: types, idempotent recording, sharing, lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import MetadataSpec, load_config
from mlops.metadata import types as T
from mlops.metadata.errors import MetadataError
from mlops.metadata.store import ArtifactRef, MetadataStore, connection_config, open_store

FLIGHTS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flights.yaml"

DATASET = ArtifactRef(
    "Dataset",
    "/data/flights/v1",
    name="flights-v1",
    properties={"version_id": "flights-v1", "span": "2013-01", "row_count": 1000},
)


@pytest.fixture
def store(tmp_path) -> MetadataStore:
    return MetadataStore(connection_config(MetadataSpec(), str(tmp_path / "md" / "mlmd.sqlite")))


def record_training(store: MetadataStore, run_id: str, model_uri: str = "/models/m1"):
    """Two steps: ExampleGen(dataset -> examples), Trainer(examples -> model)."""
    run = store.run_context("training", run_id, {"config_hash": "abc"})
    examples = ArtifactRef("Examples", f"/runs/{run_id}/examples", properties={"split_names": ["train", "eval"]})
    model = ArtifactRef("Model", model_uri, properties={"name": "flights", "metrics": {"auc": 0.7}})
    store.record_execution(run, "ExampleGen", {"dataset": [DATASET]}, {"examples": [examples]}, {"code_version": "1"})
    return store.record_execution(run, "Trainer", {"examples": [examples]}, {"model": [model]})


def test_open_store_from_config_creates_sqlite_and_registers_types_once(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, {"artifact_root": str(tmp_path / "artifacts")})
    first = open_store(cfg)
    type_ids = dict(first._type_ids)
    second = open_store(cfg)  # re-registering the same types is a no-op
    assert second._type_ids == type_ids
    assert (tmp_path / "artifacts" / "metadata" / "mlmd.sqlite").is_file()
    stored = {t.name for t in second.mlmd.get_artifact_types()}
    assert set(T.ARTIFACT_TYPES) <= stored
    assert len([t for t in second.mlmd.get_execution_types() if t.name == T.EXECUTION_TYPE]) == 1


def test_connection_configs(tmp_path, monkeypatch):
    monkeypatch.setenv("MLMD_PW", "s3cret")
    mysql = connection_config(MetadataSpec(backend="mysql", host="db", database="md", password_env="MLMD_PW"), "")
    m = mysql.mysql
    assert (m.host, m.port, m.database, m.user, m.password) == ("db", 3306, "md", "root", "s3cret")
    grpc = connection_config(MetadataSpec(backend="grpc", host="metadata-grpc-service"), "")
    assert (grpc.host, grpc.port) == ("metadata-grpc-service", 8080)
    with pytest.raises(MetadataError, match="NOPE"):
        connection_config(MetadataSpec(backend="mysql", password_env="NOPE"), "")
    with pytest.raises(MetadataError, match="local file"):
        connection_config(MetadataSpec(), "gs://bucket/mlmd.sqlite")


def test_recording_twice_for_one_run_is_idempotent(store):
    first = record_training(store, "run-1")
    second = record_training(store, "run-1")
    assert first == second
    assert len(store.list_executions()) == 2  # ExampleGen + Trainer, not 4
    assert len(store.list_artifacts("Model")) == 1
    assert len(store.list_artifacts()) == 3
    assert len(store.mlmd.get_events_by_execution_ids([first.execution_id])) == 2
    assert [c.name for c in store.list_contexts()] == ["training", "run-1"]


def test_shared_dataset_is_one_artifact_consumed_by_two_runs(store):
    record_training(store, "run-1", "/models/m1")
    record_training(store, "run-2", "/models/m2")
    [dataset] = store.list_artifacts("Dataset")
    consumers = {e.execution_id for e in store.mlmd.get_events_by_artifact_ids([dataset.id])}
    assert len(consumers) == 2
    assert {e.name for e in store.list_executions(run_id="run-2")} == {"run-2/ExampleGen", "run-2/Trainer"}
    # a consumer that only knows (type, uri) does not wipe the properties recorded earlier
    run = store.run_context("training", "run-3")
    store.record_execution(run, "ExampleGen", {"dataset": [ArtifactRef("Dataset", DATASET.uri)]}, {})
    found = store.find_artifact("Dataset", uri=DATASET.uri)
    assert found.properties["row_count"] == 1000 and found.name == "flights-v1"
    assert store.find_artifact("Dataset", name="flights-v1").id == dataset.id


def test_lineage_walks_from_model_back_to_dataset(store):
    recorded = record_training(store, "run-1")
    [model_id] = recorded.output_ids["model"]
    steps = store.lineage(model_id)
    assert [(s.depth, s.artifact.type_name, s.execution and s.execution.component, s.consumed_as) for s in steps] == [
        (0, "mlops.Model", "Trainer", None),
        (1, "mlops.Examples", "ExampleGen", "examples"),
        (2, "mlops.Dataset", None, "dataset"),
    ]
    model = steps[0].artifact
    assert model.properties["metrics"] == '{"auc": 0.7}' and model.state == "LIVE"


def test_failed_execution_is_recorded_and_retry_completes_it(store):
    run = store.run_context("training", "run-1")
    failed = store.record_execution(
        run,
        "Trainer",
        {"examples": [ArtifactRef("Examples", "/e")]},
        {},
        {"error": "OOM", "git_commit": "deadbeef"},
        state="FAILED",
    )
    [execution] = store.list_executions()
    assert (execution.state, execution.properties["error"], execution.component) == ("FAILED", "OOM", "Trainer")
    retried = store.record_execution(
        run, "Trainer", {"examples": [ArtifactRef("Examples", "/e")]}, {"model": [ArtifactRef("Model", "/m")]}
    )
    assert retried.execution_id == failed.execution_id
    [execution] = store.list_executions()
    assert execution.state == "COMPLETE"


def test_run_id_cannot_move_to_another_pipeline(store):
    store.run_context("training", "run-1")
    with pytest.raises(MetadataError, match="already belongs"):
        store.run_context("monitoring", "run-1")


def test_unknown_artifact_type_is_rejected(store):
    run = store.run_context("training", "run-1")
    with pytest.raises(MetadataError, match="unknown artifact type"):
        store.record_execution(run, "X", {}, {"out": [ArtifactRef("Modle", "/m")]})
