"""Shared fixtures (loaded for the whole tree by the root conftest.py): a throwaway artifact root,
constants, and the real local services the integration tests use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLIGHTS_CONFIG = REPO / "configs" / "flights.yaml"


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
