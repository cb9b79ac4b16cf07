"""Fixtures of the serving tests: models in a registry, a real trained model, Feast online data.

* `tiny_registry`: an artifact root whose registry holds `flights` v1 (bias 0) and v2 (bias 1)
  built in-process (seconds); staging -> v2, production -> v1.
* `real_model_dir` (session): a flights model trained by the pipeline environment (TF 2.16, TFT)
  on 3,000 rows, with SavedModel, TFLite and its NumPy preprocessing (about a minute, once).
* `feast_online_root` (tests/fixtures.py): February 2013 materialized in a SQLite online store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import FLIGHTS_CONFIG


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[int, str]:
    from serving.testing import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {1: build_tiny_model(str(root / "v1"), bias=0.0), 2: build_tiny_model(str(root / "v2"), bias=1.0)}


@pytest.fixture
def tiny_registry(tmp_path, tiny_model_dirs) -> Path:
    from mlops.registry.store import ModelRegistry
    from serving.testing import register

    root = tmp_path / "artifacts"
    register(root, "flights", tiny_model_dirs[1])
    register(root, "flights", tiny_model_dirs[2])
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    return root


@pytest.fixture
def tiny_config(tiny_registry):
    """The flights config on the tiny registry, without a feature store lookup."""
    from mlops.config import load_config

    return load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tiny_registry),
                                                  "serving.feature_lookup": False})


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory) -> str:
    from serving.testing import build_real_model

    return build_real_model(str(tmp_path_factory.mktemp("real-model")), rows=3000)
