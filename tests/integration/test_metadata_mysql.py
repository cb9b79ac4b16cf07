"""The MLMD store against the real MariaDB: a fresh database per session, dropped at the end."""

from __future__ import annotations

import uuid

import pymysql
import pytest

from mlops.config import MetadataSpec
from mlops.metadata.store import ArtifactRef, MetadataStore, connection_config

pytestmark = [pytest.mark.integration, pytest.mark.mysql]


@pytest.fixture(scope="session")
def mlmd_database(mariadb):
    """A throwaway database, so runs never see each other's rows (and never touch `test`)."""
    name = f"mlmd_test_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(
        host=mariadb["host"], port=mariadb["port"], user=mariadb["user"], password="", autocommit=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield {**mariadb, "database": name}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="session")
def spec(mlmd_database) -> MetadataSpec:
    return MetadataSpec(
        backend="mysql",
        host=mlmd_database["host"],
        port=mlmd_database["port"],
        database=mlmd_database["database"],
        user=mlmd_database["user"],
    )


def test_record_and_read_back_on_mariadb(spec):
    store = MetadataStore(connection_config(spec, "unused.sqlite"))
    MetadataStore(connection_config(spec, "unused.sqlite"))  # a second client: types already there
    dataset = ArtifactRef("Dataset", "s3://bucket/datasets/flights/v1", properties={"row_count": 42})
    model = ArtifactRef(
        "Model",
        "s3://bucket/models/flights/1",
        name="flights@1",
        properties={"name": "flights", "version": "1", "metrics": {"auc": 0.71}},
    )
    for run_id in ("run-a", "run-b"):
        run = store.run_context("training", run_id, {"git_commit": "abc123"})
        for _ in range(2):  # recorded twice: still one execution per (run, component)
            store.record_execution(
                run,
                "Trainer",
                {"dataset": [dataset]},
                {"model": [model]} if run_id == "run-a" else {},
                {"config_hash": "h1"},
                state="COMPLETE" if run_id == "run-a" else "FAILED",
            )

    # read back through a fresh connection: everything is in MariaDB, nothing was cached
    reader = MetadataStore(connection_config(spec, "unused.sqlite"))
    # (filtered: other tests of this session share the database)
    assert [(e.name, e.state) for e in reader.list_executions() if e.component == "Trainer"] == [
        ("run-a/Trainer", "COMPLETE"),
        ("run-b/Trainer", "FAILED"),
    ]
    assert [a.uri for a in reader.list_artifacts("Dataset")] == [dataset.uri]
    assert [a.uri for a in reader.list_artifacts("Model")] == [model.uri]
    assert [(c.type_name, c.name) for c in reader.list_contexts() if c.name in {"training", "run-a", "run-b"}] == [
        ("mlops.Pipeline", "training"),
        ("mlops.PipelineRun", "run-a"),
        ("mlops.PipelineRun", "run-b"),
    ]
    stored_model = reader.find_artifact("Model", name="flights@1")
    assert stored_model.properties["metrics"] == '{"auc": 0.71}'
    steps = reader.lineage(stored_model.id)
    assert [(s.artifact.type_name, s.execution and s.execution.name) for s in steps] == [
        ("mlops.Model", "run-a/Trainer"),
        ("mlops.Dataset", None),
    ]
    assert steps[1].artifact.properties["row_count"] == 42


def test_uris_differing_only_in_case_are_two_artifacts(spec):
    """MySQL compares external_id case-insensitively; hashing the uri keeps them apart."""
    store = MetadataStore(connection_config(spec, "unused.sqlite"))
    run = store.run_context("case-check", "run-case")
    refs = [ArtifactRef("Examples", "s3://b/Examples"), ArtifactRef("Examples", "s3://b/examples")]
    recorded = store.record_execution(run, "ExampleGen", {}, {"examples": refs})
    assert len(set(recorded.output_ids["examples"])) == 2
