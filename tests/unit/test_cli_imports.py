"""The command line's fixed cost: a command imports only what it runs. `mlops --help`, a group's
help and the registry commands start without TensorFlow, Feast, KFP, ML Metadata, Beam or pandas
(each seconds to import here); the heavy imports happen inside the command that needs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.fixtures import REPO

HEAVY = ("tensorflow", "keras", "feast", "kfp", "ml_metadata", "tfx", "apache_beam", "dask", "pandas", "kserve")

# `python -m cli ARGS`, then the heavy top-level packages the process imported (help exits by SystemExit).
CODE = """
import json, runpy, sys
sys.argv = ["mlops", *sys.argv[1:]]
try:
    runpy.run_module("cli", run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(%r)))
print("IMPORTED " + json.dumps(heavy))
"""


def imported(args: list[str], root) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), MLOPS_ARTIFACT_ROOT=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", CODE % json.dumps(HEAVY), *args],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("IMPORTED ", 1)[1])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["predict", "batch", "--help"],
        ["monitor", "--help"],
        ["metadata", "--help"],
        ["serve", "--help"],
        ["models", "list"],
        ["models", "list", "flights"],
    ],
    ids=" ".join,
)
def test_short_commands_import_nothing_heavy(args, tmp_path):
    from tests.support.serving_models import register

    model = tmp_path / "model"
    (model / "serving_model").mkdir(parents=True)
    (model / "serving_model" / "saved_model.pb").write_bytes(b"not read by the registry commands")
    register(tmp_path / "artifacts", "flights", str(model), features=[{"name": "hour", "dtype": "float32"}])
    assert imported(args, tmp_path / "artifacts") == []


def test_the_check_sees_a_heavy_import(tmp_path):
    """The probe itself: a command that does import a heavy package is caught (`data list` reads
    the dataset repository with pandas)."""
    assert "pandas" in imported(["data", "list"], tmp_path)


def test_the_command_line_drops_google_libraries_python_version_warnings():
    """Google's client libraries (imported by TFX, Beam, Feast) warn at import that they will drop
    this Python version: `mlops` filters those in its own process; without it (the control) they
    print."""
    code = """
import sys
if sys.argv[1] == "cli":
    from cli.main import main
    sys.argv = ["mlops", "--help"]
    try:
        main()
    except SystemExit:
        pass
import google.api_core.operations_v1
"""
    stderr = {}
    for case in ("cli", "control"):
        proc = subprocess.run(
            [sys.executable, "-c", code, case],
            cwd=str(REPO),
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        stderr[case] = proc.stderr
    assert "FutureWarning" in stderr["control"]
    assert "FutureWarning" not in stderr["cli"]
