"""Registered versions in ML Metadata (real SQLite under the artifact root): the pusher
execution links the PushedModel to the trained Model, so lineage reaches the Dataset.

mlops.metadata.store is imported inside the tests: this module must still be collectable in the
serving environment (no ml-metadata), where conftest.py deselects its tests."""

from __future__ import annotations

import pytest

from mlops.config import load_config
from mlops.registry import ModelRegistry, RegistryNotFound, cli_ops
from mlops.registry.lineage import lineage_for, record_registration
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.registry_fakes import make_model_dir, record_training_run, register


def test_lineage_of_a_registered_version_reaches_the_dataset(artifact_root, tmp_path):
    from mlops.metadata.store import open_store

    config = load_config(FLIGHTS_CONFIG)
    assert config.artifact_root == str(artifact_root)
    store = open_store(config)
    uri = record_training_run(store, "run-1", str(artifact_root))
    version = register(ModelRegistry(config.artifact_root), make_model_dir(tmp_path))

    pushed_id = record_registration(
        config,
        version,
        run_id="run-1",
        pipeline="training",
        model_artifact_uri=uri["model"],
        blessing_artifact_uri=uri["blessing"],
    )
    assert (
        record_registration(
            config,
            version,
            run_id="run-1",
            pipeline="training",  # idempotent
            model_artifact_uri=uri["model"],
            blessing_artifact_uri=uri["blessing"],
        )
        == pushed_id
    )

    steps = lineage_for(config, "flights@1")
    summary = [
        (s.depth, s.artifact.type_name, s.execution and s.execution.component, s.consumed_as, s.repeated) for s in steps
    ]
    assert summary[:6] == [
        (0, "mlops.PushedModel", "pusher", None, False),
        (1, "mlops.Model", "trainer", "model", False),
        (2, "mlops.Examples", "example_gen", "examples", False),
        (3, "mlops.Dataset", None, "dataset", False),
        (2, "mlops.TransformGraph", "transform", "transform_graph", False),
        (3, "mlops.Examples", "example_gen", "examples", True),
    ]
    assert (1, "mlops.ModelBlessing", "evaluator", "model_blessing", False) in summary
    pushed, dataset = steps[0].artifact, steps[3].artifact
    assert (pushed.id, pushed.name, pushed.uri) == (pushed_id, "flights@1", version.uri)
    assert pushed.properties == {"name": "flights", "version": "1", "destination": version.uri}
    assert dataset.name == "flights-abc123def456"
    assert steps[0].execution.properties["git_commit"] == "deadbeef"
    # the trained model now carries its registry name and version, its producer's properties intact
    model = store.find_artifact("Model", uri=uri["model"])
    assert (model.properties["name"], model.properties["version"], model.properties["metrics"]) == (
        "flights",
        "1",
        '{"auc": 0.71}',
    )

    # aliases resolve through the registry first
    ModelRegistry(config.artifact_root).promote("flights", 1)
    assert [s.artifact.id for s in lineage_for(config, "flights@production")] == [s.artifact.id for s in steps]
    assert lineage_for(config, "flights")[0].artifact.id == pushed_id
    rows = cli_ops.lineage_rows(config, "flights@1")
    assert rows[0]["name"] == "flights@1" and rows[0]["component"] == "pusher" and rows[3]["type"] == "mlops.Dataset"


def test_lineage_errors_are_explicit(artifact_root, tmp_path):
    from mlops.metadata.store import open_store

    config = load_config(FLIGHTS_CONFIG)
    store = open_store(config)
    registry = ModelRegistry(config.artifact_root)
    version = register(registry, make_model_dir(tmp_path))
    with pytest.raises(RegistryNotFound, match=r"flights@1: no mlops.Model artifact with uri /nowhere"):
        record_registration(
            config, version, run_id="run-1", pipeline="training", model_artifact_uri="/nowhere", store=store
        )
    uri = record_training_run(store, "run-1", str(artifact_root))
    with pytest.raises(RegistryNotFound, match="no mlops.ModelBlessing artifact"):
        record_registration(
            config,
            version,
            run_id="run-1",
            pipeline="training",
            model_artifact_uri=uri["model"],
            blessing_artifact_uri="/nowhere",
            store=store,
        )
    with pytest.raises(RegistryNotFound, match="flights@1: no mlops.PushedModel named 'flights@1'"):
        lineage_for(config, "flights@1", store=store)
    with pytest.raises(RegistryNotFound, match="no alias 'production'"):
        lineage_for(config, "flights@production", store=store)
