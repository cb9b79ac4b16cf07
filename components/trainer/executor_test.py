"""The Trainer step on a few thousand real rows: export layout, the raw-feature serving signature
(batch and single row), TFLite parity, the same SavedModel in the serving environment (TF 2.21),
reproducibility under one seed, wide_deep, MLMD."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from components.trainer.executor import TrainingError, run, run_training
from components.transform.executor import run_transform
from mlops.artifacts import SERVING_MODEL, SPLITS, TFLITE_MODEL, TFLITE_PREPROCESSING, TRAINING_INFO, split_path
from mlops.config import load_config
from mlops.envs import SERVING, interpreter
from mlops.modeling.preprocessing import FeaturePlan
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import write_examples

pytestmark = pytest.mark.integration

OVERRIDES = {"model.epochs": 2, "model.batch_size": 256}


def _config(root, **extra):
    return load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root / "artifacts"), **OVERRIDES, **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    cfg = _config(root)
    examples = str(root / "examples")
    write_examples(cfg, examples, n_rows=4000, seed=11)
    transform_dir = str(root / "transform")
    run_transform(cfg, examples, transform_dir)
    result = run(
        cfg, transform_dir, str(root / "model"), pipeline="trainer-test", run_id="run-1", examples_dir=examples
    )
    return root, cfg, examples, transform_dir, result


def _odd_rows(examples: str, plan: FeaturePlan) -> pd.DataFrame:
    """Real test rows plus rows a model meets at serving: unseen and missing categories, all
    numerics missing, extreme values, non-ASCII text."""
    real = pd.read_parquet(split_path(examples, "test"))[[f.name for f in plan.raw]]
    odd = real.head(4).copy().reset_index(drop=True)
    odd.loc[0, ["carrier", "dest", "month"]] = ["ZZ-unseen", "", "13"]
    odd.loc[1, [f.name for f in plan.raw if f.dtype == "float32"]] = np.nan
    odd.loc[1, ["carrier", "origin", "dest", "month"]] = ["", "", "", ""]
    odd.loc[2, ["distance", "hour", "temp", "humid"]] = [1e9, -1e9, 1e30, np.inf]
    odd.loc[3, ["origin", "dest"]] = ["東京", "naïve"]
    return pd.concat([real, odd], ignore_index=True)


def _predict(python: str, model_dir: str, examples: str, out: str) -> dict:
    subprocess.run(
        [
            python,
            "-m",
            "mlops.modeling.predictions",
            "--model-dir",
            model_dir,
            "--examples-dir",
            examples,
            "--split",
            "test",
            "--limit",
            "100000",
            "--single-rows",
            "5",
            "--out",
            out,
        ],
        check=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def predictions(trained):
    root, cfg, examples, _, result = trained
    odd_dir = root / "odd_examples"
    odd_dir.mkdir()
    _odd_rows(examples, FeaturePlan.from_config(cfg)).to_parquet(odd_dir / "test.parquet", index=False)
    pipeline = _predict(sys.executable, result.out_dir, str(odd_dir), str(root / "pred_pipeline.json"))
    serving_python = interpreter(SERVING)
    assert os.path.exists(serving_python), f"the serving environment is missing: {serving_python} (make setup)"
    serving = _predict(serving_python, result.out_dir, str(odd_dir), str(root / "pred_serving.json"))
    return pipeline, serving


def test_model_layout_and_training_json(trained):
    _, cfg, _, _, result = trained
    out = result.out_dir
    for rel in (f"{SERVING_MODEL}/saved_model.pb", TFLITE_MODEL, TFLITE_PREPROCESSING, TRAINING_INFO):
        assert os.path.exists(os.path.join(out, rel)), rel
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(result.logs_dir) for name in files)
    assert any(f.startswith("epoch-01") for f in os.listdir(os.path.join(out, "checkpoints")))
    info = json.load(open(os.path.join(out, TRAINING_INFO)))
    assert info["seed"] == cfg.model.seed and info["params"]["model"]["epochs"] == 2
    assert set(info["history"]) >= {"loss", "auc", "val_loss", "val_auc"} and info["epochs_run"] == 2
    assert 0.0 <= info["eval_auc"] <= 1.0 and info["eval_loss"] > 0
    assert info["metrics"]["eval"]["auc"] == info["eval_auc"] and "test" in info["metrics"]
    assert info["rows"] == result.rows and sum(info["rows"].values()) == 4000
    assert info["tflite_parity"]["max_abs_diff"] <= 1e-4
    assert {"fit", "export_savedmodel", "export_tflite"} <= set(info["durations_s"])
    prep = json.load(open(os.path.join(out, TFLITE_PREPROCESSING)))
    assert [c["name"] for c in prep["categorical"]] == ["month", "carrier", "origin", "dest"]
    assert len(prep["bucketize"][0]["boundaries"]) == 9 and prep["crosses"][0]["hash_buckets"] == 500


def test_raw_signature_gives_probabilities_for_a_batch_and_one_row(trained, predictions):
    pipeline, _ = predictions
    p = np.array(pipeline["savedmodel"])
    assert pipeline["rows"] == len(p) > 300
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.isfinite(p))
    # Unseen / missing categories, missing and extreme numerics (the last 4 rows) do not crash.
    assert np.all(np.isfinite(p[-4:]))
    # One row sent alone gives the same probability as within the batch.
    np.testing.assert_allclose(pipeline["savedmodel_single"], p[:5], atol=1e-6)


def test_tflite_matches_the_savedmodel(predictions):
    pipeline, _ = predictions
    diff = np.abs(np.array(pipeline["tflite"]) - np.array(pipeline["savedmodel"]))
    assert diff.max() <= 1e-4, f"max |TFLite - SavedModel| = {diff.max():.3g}"


def test_serving_environment_gives_the_same_predictions(predictions):
    pipeline, serving = predictions
    assert serving["tensorflow"].startswith("2.21") and pipeline["tensorflow"].startswith("2.16")
    np.testing.assert_allclose(serving["savedmodel"], pipeline["savedmodel"], atol=1e-5)
    np.testing.assert_allclose(serving["savedmodel_single"], pipeline["savedmodel_single"], atol=1e-5)
    np.testing.assert_allclose(serving["tflite"], pipeline["tflite"], atol=1e-5)


def test_same_seed_same_metrics(trained):
    root, cfg, examples, transform_dir, first = trained
    again = run_training(cfg, transform_dir, str(root / "model_again"))
    assert again.metrics == first.metrics
    history = [json.load(open(os.path.join(d, TRAINING_INFO)))["history"] for d in (first.out_dir, again.out_dir)]
    assert history[0] == history[1]


def test_wide_deep(trained):
    root, _, examples, transform_dir, _ = trained
    cfg = _config(root, **{"model.architecture": "wide_deep", "model.epochs": 1})
    result = run_training(cfg, transform_dir, str(root / "model_wide"), examples_dir=examples)
    assert result.epochs_run == 1 and result.tflite_parity["max_abs_diff"] <= 1e-4
    assert 0.0 <= result.metrics["eval"]["auc"] <= 1.0


def test_step_is_recorded_in_mlmd(trained):
    from mlops.metadata.store import open_store

    _, cfg, _, transform_dir, result = trained
    store = open_store(cfg)
    assert [e.name for e in store.list_executions("run-1")] == ["run-1/trainer"]
    (model,) = store.list_artifacts("Model")
    assert model.uri == result.out_dir and json.loads(model.properties["metrics"]) == result.metrics
    assert [g.uri for g in store.list_artifacts("TransformGraph")] == [transform_dir]
    assert transform_dir in {step.artifact.uri for step in store.lineage(model.id)}


def test_incomplete_transform_dir_is_rejected(tmp_path):
    cfg = _config(tmp_path)
    with pytest.raises(TrainingError, match="incomplete"):
        run_training(cfg, str(tmp_path / "nothing"), str(tmp_path / "model"))
    assert SPLITS == ("train", "eval", "test")
