"""Across the two environments: the pipeline environment registers a version and records its
lineage in MLMD; the serving environment, without ml-metadata, resolves and reads it."""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest

from mlops import envs, storage
from mlops.registry import ModelRegistry
from tests.support.fixtures import REPO

PIPELINE_SIDE = """
import sys
from pathlib import Path
from mlops.config import load_config
from mlops.metadata.store import open_store
from mlops.registry import ModelRegistry
from mlops.registry.lineage import lineage_for, record_registration
from tests.support.registry_fakes import make_model_dir, register
from tests.support.registry_fakes import record_training_run

config = load_config(sys.argv[1])
store = open_store(config)
uris = record_training_run(store, "run-1", config.artifact_root)
registry = ModelRegistry(config.artifact_root)
version = register(registry, make_model_dir(Path(sys.argv[2]), "trained"))
record_registration(config, version, run_id="run-1", pipeline="training", model_artifact_uri=uris["model"],
                    store=store)
registry.promote("flights", version.version, reason="pipeline push")
print(sorted({s.artifact.type_name for s in lineage_for(config, "flights@production", store=store)}))
"""


@pytest.mark.integration
@pytest.mark.serving_env
def test_version_registered_by_the_pipeline_env_is_served_without_ml_metadata(artifact_root, tmp_path):
    assert importlib.util.find_spec("ml_metadata") is None
    python = envs.interpreter(envs.PIPELINE)
    assert os.path.exists(python), f"{python} missing: run `make setup`"
    out = subprocess.run(
        [python, "-c", PIPELINE_SIDE, str(REPO / "configs" / "flights.yaml"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "'mlops.Dataset'" in out.stdout.strip().splitlines()[-1]  # lineage reached the dataset

    version = ModelRegistry(str(artifact_root)).resolve("flights")
    assert version.selector == "flights@1" and version.blessed
    assert storage.read_bytes(f"{version.serving_model_uri}/saved_model.pb") == b"pb-trained"
    assert (artifact_root / "metadata" / "mlmd.sqlite").is_file()  # lineage lives beside, not inside
