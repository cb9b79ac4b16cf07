"""`mlops data list` on an empty repository says where it looked."""

import os
import subprocess
import sys

from tests.support.fixtures import FLIGHTS_CONFIG, REPO


def test_empty_repository_names_the_artifact_root(tmp_path):
    root = tmp_path / "empty-root"
    env = dict(os.environ, MLOPS_ARTIFACT_ROOT=str(root), COLUMNS="300")
    out = subprocess.run(
        [sys.executable, "-m", "cli", "data", "list", "--config", str(FLIGHTS_CONFIG)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    said = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert f"no dataset versions yet under {root}/datasets: run `mlops data ingest`" in said
