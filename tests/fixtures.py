"""Shared fixtures (loaded for the whole tree by the root conftest.py): a throwaway artifact root,
constants, and the real local services the integration tests use."""

from __future__ import annotations

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
    (tests copy them); serving.testing.seed_datasets."""
    from serving.testing import seed_datasets

    root = tmp_path_factory.mktemp("seed") / "artifacts"
    seed_datasets(str(root))
    return root


@pytest.fixture(scope="session")
def feast_online_root(seed_root, tmp_path_factory) -> tuple[Path, str]:
    """(artifact root, Feast project) with the seeded spans, the feature sources built, the repo
    applied and February 2013 materialized into the SQLite online store (serving env's Feast);
    serving.testing.materialize_online."""
    from serving.testing import materialize_online

    root = tmp_path_factory.mktemp("feast-online") / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    project = f"t{uuid.uuid4().hex[:12]}"
    materialize_online(str(root), project, online_store="sqlite")
    return root, project
