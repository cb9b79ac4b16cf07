"""The one home of fixtures (loaded for the whole tree by the root conftest.py): a throwaway artifact root,
constants, and the real local services the integration tests use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLIGHTS_CONFIG = REPO / "configs" / "flights.yaml"
PIPELINE_PY = REPO / ".venv" / "pipeline" / "bin" / "python"
SERVING_PY = REPO / ".venv" / "serving" / "bin" / "python"


@pytest.fixture
def artifact_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", str(root))
    return root


def service_up(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def mariadb():
    """The MariaDB at 127.0.0.1:3306 (root, no password, db `test`). .ci/run starts it."""
    if not service_up(3306):
        pytest.fail("MariaDB is not listening on 127.0.0.1:3306 (.ci/run starts it)")
    return {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}


@pytest.fixture(scope="session")
def redis_url():
    if not service_up(6379):
        pytest.fail("Redis is not listening on 127.0.0.1:6379 (.ci/run starts it)")
    return "127.0.0.1:6379"


def run_python(python: Path, code: str, *args: str, root: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c code args...` with the repo importable and MLOPS_ARTIFACT_ROOT=root; fails the
    test with the child's output if it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO), MLOPS_ARTIFACT_ROOT=str(root))
    proc = subprocess.run(
        [str(python), "-c", code, *args], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{python} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def seed_root(tmp_path_factory) -> Path:
    """Two monthly spans of flights plus the weather and planes tables, ingested once per session
    (tests copy them); tests.support.serving_models.seed_datasets."""
    from tests.support.serving_models import seed_datasets

    root = tmp_path_factory.mktemp("seed") / "artifacts"
    seed_datasets(str(root))
    return root


@pytest.fixture(scope="session")
def feast_online_root(seed_root, tmp_path_factory) -> tuple[Path, str]:
    """(artifact root, Feast project) with the seeded spans, the feature sources built, the repo
    applied and February 2013 materialized into the SQLite online store (serving env's Feast);
    tests.support.serving_models.materialize_online."""
    from tests.support.serving_models import materialize_online

    root = tmp_path_factory.mktemp("feast-online") / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    project = f"t{uuid.uuid4().hex[:12]}"
    materialize_online(str(root), project, online_store="sqlite")
    return root, project


# ------------------------------------------------------------ models for the serving tests
# tiny_registry: flights v1 (bias 0) and v2 (bias 1) built in-process (seconds), staging -> v2,
# production -> v1; real_model_dir: a flights model trained by the pipeline environment (TF 2.16,
# TFT) on 3,000 rows with SavedModel, TFLite and NumPy preprocessing (about a minute, once).


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[int, str]:
    from tests.support.serving_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {1: build_tiny_model(str(root / "v1"), bias=0.0), 2: build_tiny_model(str(root / "v2"), bias=1.0)}


@pytest.fixture
def tiny_registry(tmp_path, tiny_model_dirs) -> Path:
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import register

    root = tmp_path / "artifacts"
    register(root, "flights", tiny_model_dirs[1])
    register(root, "flights", tiny_model_dirs[2])
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    return root


@pytest.fixture
def tiny_config(tiny_registry):
    """The flights config on the tiny registry, without a feature store lookup."""
    from mlops.config import load_config

    return load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tiny_registry), "serving.feature_lookup": False})


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory) -> str:
    from tests.support.serving_models import build_real_model

    return build_real_model(str(tmp_path_factory.mktemp("real-model")), rows=3000)


@pytest.fixture(scope="session")
def q1_flights_model(tmp_path_factory):
    """flights@1 (production) trained on 20,000 January-March 2013 flights by the training steps'
    own code (StatisticsGen, SchemaGen, ExampleValidator, Transform, Trainer: lineage in ML Metadata,
    SQLite) and registered as the pusher does: tests.support.monitoring_data.train_q1_model (pipeline
    environment; about a minute and a half, once)."""
    from tests.support.monitoring_data import train_q1_model

    return train_q1_model(str(tmp_path_factory.mktemp("q1-model") / "artifacts"))


@pytest.fixture(scope="session")
def resource_run(tmp_path_factory):
    """One measured `mlops run resources` (tests.support.resource_pipeline: `allocate` holds 200 MiB
    in a worker, `burn` burns 1 s of CPU) under its own artifact root, run once for the tests that
    read its steps' numbers (copy `root` before writing next to it): a namespace of root, result
    (the CLI's), run (its ML Metadata context) and executions (by component)."""
    from types import SimpleNamespace

    from tests.support.resource_pipeline import run_locally

    root = tmp_path_factory.mktemp("resource-run") / "artifacts"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACT_ROOT", str(root))
        result, run, executions = run_locally(mp, allocate_mib=200, burn_cpu_seconds=1)
    return SimpleNamespace(root=root, result=result, run=run, executions=executions)
