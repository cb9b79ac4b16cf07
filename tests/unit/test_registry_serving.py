"""The registry in the serving environment (kserve, TF 2.21, NO ml-metadata): a server resolves
an alias and reads the model files and its input signature from the artifact store alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlops import storage
from mlops.registry import ModelRegistry, NotBlessedError
from tests.support.registry_fakes import make_model_dir, register

pytestmark = pytest.mark.serving_env


def test_serving_env_resolves_and_reads_a_version_without_ml_metadata(tmp_path):
    assert importlib.util.find_spec("ml_metadata") is None, "the serving env must not have ml-metadata"
    assert importlib.util.find_spec("kserve") is not None
    registry = ModelRegistry(str(tmp_path / "artifacts"))
    for tag in ("1", "2"):
        register(registry, make_model_dir(tmp_path, tag))
    registry.promote("flights", 1, reason="first release")

    # what a model server does at start-up: resolve its configured model, read the files
    server_view = ModelRegistry(str(tmp_path / "artifacts"))
    version = server_view.resolve("flights")
    assert (version.selector, version.blessed) == ("flights@1", True)
    assert storage.read_bytes(f"{version.serving_model_uri}/saved_model.pb") == b"pb-1"
    assert Path(version.tflite_uri).read_bytes() == b"tflite-1"
    assert version.features == [{"name": "distance", "dtype": "float32"}, {"name": "carrier", "dtype": "string"}]
    assert (version.manifest["task"], version.manifest["output_key"]) == ("binary_classification", "probability")
    assert server_view.resolve("flights@staging").version == 2
    assert server_view.rollback("flights", alias="staging").to_version == 1
    with pytest.raises(NotBlessedError):
        register(registry, tmp_path / "trainer-1", blessing={"blessed": False})
    assert not any(m.startswith("ml_metadata") for m in sys.modules)


def test_models_cli_runs_in_the_serving_env_without_reexec(tmp_path, monkeypatch):
    """`mlops models ...` stays in the serving interpreter (a serving image has no pipeline env)."""
    import json

    from click.testing import CliRunner

    from cli.main import cli

    root = tmp_path / "artifacts"
    registry = ModelRegistry(str(root))
    register(registry, make_model_dir(tmp_path, "1"))
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", str(root))
    monkeypatch.setenv("MLOPS_PIPELINE_PYTHON", "/nonexistent/python")  # a re-exec would fail loudly
    runner = CliRunner()
    promoted = runner.invoke(cli, ["models", "promote", "flights@1", "--reason", "test"])
    assert promoted.exit_code == 0, promoted.output
    shown = runner.invoke(cli, ["models", "show", "flights@production"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["selector"] == "flights@1"
    assert not any(m.startswith("ml_metadata") for m in sys.modules)
