"""The real `mlops` command line, as a user runs it."""

import json
import subprocess
import sys

import pytest
import yaml

from tests.support.fixtures import FLIGHTS_CONFIG, REPO


@pytest.mark.integration
def test_cli_ingest_twice_and_bad_config(tmp_path, artifact_root):
    """The real `mlops` command: prints the id, a re-run creates nothing, bad config exits 1."""
    mlops = [sys.executable, "-m", "cli"]
    out1 = subprocess.run(
        mlops + ["data", "ingest", "--span", "2013-04", "--no-feature-tables"], capture_output=True, text=True, cwd=REPO
    )
    assert out1.returncode == 0, out1.stderr
    out2 = subprocess.run(
        mlops + ["data", "ingest", "--span", "2013-04", "--no-feature-tables"], capture_output=True, text=True, cwd=REPO
    )
    assert out2.stdout.strip() == out1.stdout.strip() and "unchanged" in out2.stderr
    shown = subprocess.run(mlops + ["data", "show", out1.stdout.strip()], capture_output=True, text=True)
    assert json.loads(shown.stdout)["span"] == "2013-04"
    spans = subprocess.run(mlops + ["data", "spans"], capture_output=True, text=True)
    assert spans.stdout.split("\t")[0] == "2013-04"

    doc = yaml.safe_load(FLIGHTS_CONFIG.read_text())
    doc["split"]["ratio"] = 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    out = subprocess.run(mlops + ["data", "ingest", "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "split.ratio: unknown key" in out.stderr and "Traceback" not in out.stderr
