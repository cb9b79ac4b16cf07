"""The TensorFlow half of the Trainer step, run as a child process by executor.py.

    python -m components.trainer.worker REQUEST_JSON

REQUEST_JSON (written through mlops.modeling.child.run_child): {"config", "transform_dir",
"out_dir", "examples_dir" (optional: raw test rows for the TFLite parity check),
"parity_rows", "parity_tolerance", "marker", "nonce"}. The result (the marker's fields next to
"ok"): {"metrics", "rows", "durations_s", "tflite_parity", "best_epoch", "epochs_run"}.

Steps: load the transformed train/eval/test TFRecords into memory (parse_example on big batches;
330k rows x ~45 columns is ~100 MB), fit the Keras core model (seeded, deterministic ops, early
stopping on eval loss with the best weights restored, TensorBoard logs, per-epoch checkpoints),
evaluate, export serving_model/ (raw-feature signature with the TFT layer inside), model.tflite
+ tflite_preprocessing.json, check TFLite vs SavedModel parity on raw test rows, write
training.json. TF_USE_LEGACY_KERAS=1 is set before TensorFlow is imported (tf.keras = tf_keras).
TensorFlow is imported by run() (so its import time is measured), never at module level.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from mlops import storage
from mlops.artifacts import (
    OUTPUT_KEY,
    SERVING_MODEL,
    SERVING_SIGNATURE,
    SPLITS,
    TFLITE_MODEL,
    TFLITE_PREPROCESSING,
    TRAINING_INFO,
    TRANSFORM_OUTPUT,
    TRANSFORMED_EXAMPLES,
)
from mlops.config import PlatformConfig, TaskType, join_uri
from mlops.modeling.model import build_model, cardinalities, input_signature
from mlops.modeling.preprocessing import FeaturePlan
from mlops.modeling.tflite_export import convert_tflite, preprocessing_spec, transform_stats

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

TRANSFORMED_SIGNATURE = "transformed"  # the core model on transformed features (evaluation, TFMA)
LOAD_BATCH = 16_384
DEFAULT_PARITY_ROWS = 2000
DEFAULT_PARITY_TOLERANCE = 1e-4


class Stopwatch:
    """Seconds spent per phase, in order: lap(name) closes the phase that ran since the last lap."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.durations: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.durations[name] = round(now - self.last, 3)
        self.last = now

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def run(request: dict) -> dict:
    """Trains, exports and checks the model of the request; writes training.json; returns the
    result the executor reads."""
    stopwatch = Stopwatch()
    import tensorflow as tf
    import tensorflow_transform as tft

    from components.trainer.executor import CHECKPOINTS, LOGS

    stopwatch.lap("import")
    config = PlatformConfig.model_validate(request["config"])
    plan = FeaturePlan.from_config(config)
    out_dir, transform_dir = request["out_dir"], request["transform_dir"]
    output_key = OUTPUT_KEY[plan.task]
    clear_previous_outputs(
        out_dir, (SERVING_MODEL, CHECKPOINTS, LOGS, TFLITE_MODEL, TFLITE_PREPROCESSING, TRAINING_INFO)
    )
    make_deterministic(tf, config.model.seed)

    tft_output = tft.TFTransformOutput(join_uri(transform_dir, TRANSFORM_OUTPUT))
    data = load_splits(tf, tft_output, plan, transform_dir)
    rows = {s: int(len(d[plan.label])) for s, d in data.items()}
    if rows["train"] == 0 or rows["eval"] == 0:
        raise ValueError(f"need train and eval rows to train, got {rows}")
    stopwatch.lap("load_data")

    vocab_sizes = {c: int(tft_output.vocabulary_size_by_name(plan.vocab_name(c))) for c in plan.categorical}
    cards = cardinalities(plan, vocab_sizes)
    model = build_model(config.model, plan, cards)
    history, early_stopping = fit(tf, model, config, plan, data, out_dir, logs=LOGS, checkpoints=CHECKPOINTS)
    stopwatch.lap("fit")

    metrics = evaluate(model, config, plan, data, rows)
    stopwatch.lap("evaluate")

    serving_dir = join_uri(out_dir, SERVING_MODEL)
    export_savedmodel(tf, model, tft_output, plan, output_key, serving_dir)
    stopwatch.lap("export_savedmodel")

    export_tflite(model, tft_output, plan, output_key, out_dir)
    stopwatch.lap("export_tflite")

    parity = None
    if request.get("examples_dir"):
        parity = check_tflite_parity(tf, request, plan, "test" if rows["test"] else "eval", serving_dir, out_dir)
        stopwatch.lap("parity")

    stopwatch.durations["total_in_worker"] = stopwatch.total()
    info = training_info(
        tf,
        tft,
        config,
        plan,
        output_key,
        rows,
        history,
        early_stopping,
        metrics,
        parity,
        cards,
        vocab_sizes,
        stopwatch.durations,
    )
    storage.write_json_atomic(join_uri(out_dir, TRAINING_INFO), info)
    return {
        "metrics": metrics,
        "rows": rows,
        "durations_s": stopwatch.durations,
        "tflite_parity": parity,
        "best_epoch": info["best_epoch"],
        "epochs_run": info["epochs_run"],
    }


def clear_previous_outputs(out_dir: str, names: tuple[str, ...]) -> None:
    """A retried step starts clean: the outputs of an earlier attempt are removed."""
    for stale in names:
        storage.remove(join_uri(out_dir, stale), recursive=True)
    storage.makedirs(out_dir)


def make_deterministic(tf, seed: int) -> None:
    """One seed for Python, NumPy and TensorFlow, and deterministic TF ops: the same request
    trains the same weights."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_splits(tf, tft_output, plan: FeaturePlan, transform_dir: str) -> dict[str, dict]:
    """Every split's transformed examples in memory, {split: {feature: np.ndarray}}; refuses a
    transform output that lacks a model input or the label."""
    feature_spec = tft_output.transformed_feature_spec()
    absent = [k for k in plan.transformed_feature_names() + [plan.label] if k not in feature_spec]
    if absent:
        raise ValueError(f"transform output lacks feature(s) {absent}: transform and trainer configs differ")
    return {
        s: load_transformed(tf, join_uri(transform_dir, TRANSFORMED_EXAMPLES, f"{s}.tfrecord.gz"), feature_spec)
        for s in SPLITS
    }


def load_transformed(tf, path: str, feature_spec: dict) -> dict:
    """All records of a transformed TFRecord file as {feature: np.ndarray}."""
    import numpy as np

    ds = (
        tf.data.TFRecordDataset(path, compression_type="GZIP", buffer_size=8 << 20)
        .batch(LOAD_BATCH)
        .map(lambda x: tf.io.parse_example(x, feature_spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(2)
    )
    parts: dict[str, list] = {k: [] for k in feature_spec}
    for batch in ds:
        for k, v in batch.items():
            parts[k].append(v.numpy())
    return {
        k: (np.concatenate(v) if v else np.zeros((0,), feature_spec[k].dtype.as_numpy_dtype)) for k, v in parts.items()
    }


def features_and_label(plan: FeaturePlan, data: dict[str, dict], split: str) -> tuple[dict, Any]:
    """(model inputs, float32 label) of a split, as Keras takes them."""
    import numpy as np

    d = data[split]
    return {k: d[k] for k in plan.transformed_feature_names()}, d[plan.label].astype(np.float32)


def evaluation_batch_size(config: PlatformConfig) -> int:
    """Evaluation needs no gradients: big batches, at least the training batch."""
    return max(config.model.batch_size, 4096)


def fit(
    tf,
    model,
    config: PlatformConfig,
    plan: FeaturePlan,
    data: dict[str, dict],
    out_dir: str,
    *,
    logs: str,
    checkpoints: str,
):
    """Fits on train with eval as validation: early stopping on the eval loss (best weights
    restored), TensorBoard logs in out_dir/logs, weights checkpointed every epoch. Returns the
    Keras history and the early-stopping callback."""
    spec = config.model
    x_train, y_train = features_and_label(plan, data, "train")
    x_eval, y_eval = features_and_label(plan, data, "eval")
    early_stopping = tf.keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=spec.early_stopping_patience, restore_best_weights=True, verbose=1
    )
    callbacks = [
        early_stopping,
        tf.keras.callbacks.TensorBoard(
            log_dir=join_uri(out_dir, logs), histogram_freq=0, write_graph=False, update_freq="epoch", profile_batch=0
        ),
        tf.keras.callbacks.ModelCheckpoint(join_uri(out_dir, checkpoints, "epoch-{epoch:02d}"), save_weights_only=True),
    ]
    history = model.fit(
        x_train,
        y_train,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        validation_data=(x_eval, y_eval),
        validation_batch_size=evaluation_batch_size(config),
        shuffle=True,
        callbacks=callbacks,
        verbose=2,
    )
    return history, early_stopping


def evaluate(
    model, config: PlatformConfig, plan: FeaturePlan, data: dict[str, dict], rows: dict[str, int]
) -> dict[str, dict[str, float]]:
    """The compiled metrics on eval, and on test when it has rows: {split: {metric: value}}."""
    batch = evaluation_batch_size(config)
    splits = ["eval", "test"] if rows["test"] else ["eval"]
    metrics = {}
    for split in splits:
        x, y = features_and_label(plan, data, split)
        metrics[split] = model.evaluate(x, y, batch_size=batch, return_dict=True, verbose=0)
    return {s: {k: float(v) for k, v in m.items()} for s, m in metrics.items()}


def export_savedmodel(tf, model, tft_output, plan: FeaturePlan, output_key: str, serving_dir: str) -> None:
    """serving_model/: the raw-feature signature (the TFT layer inside, what servers call) and the
    transformed-feature signature (evaluation)."""
    model.tft_layer = tft_output.transform_features_layer()
    model_inputs = plan.transformed_feature_names()
    raw_dtypes = {"float32": tf.float32, "string": tf.string}
    raw_signature = {f.name: tf.TensorSpec([None], raw_dtypes[f.dtype], name=f.name) for f in plan.raw}

    @tf.function(input_signature=[raw_signature])
    def serve_raw(raw):
        transformed = model.tft_layer(raw)
        features = {k: transformed[k] for k in model_inputs}
        return {output_key: tf.reshape(model(features, training=False), [-1])}

    @tf.function(input_signature=[input_signature(plan)])
    def serve_transformed(features):
        return {output_key: tf.reshape(model(features, training=False), [-1])}

    model.save(
        serving_dir,
        save_format="tf",
        include_optimizer=False,
        signatures={
            SERVING_SIGNATURE: serve_raw.get_concrete_function(),
            TRANSFORMED_SIGNATURE: serve_transformed.get_concrete_function(),
        },
    )


def export_tflite(model, tft_output, plan: FeaturePlan, output_key: str, out_dir: str) -> None:
    """model.tflite (the core model on transformed features) and tflite_preprocessing.json (the
    constants with which NumPy reproduces the TFT preprocessing on the edge)."""
    storage.write_bytes_atomic(join_uri(out_dir, TFLITE_MODEL), convert_tflite(model, plan, output_key))
    stats = transform_stats(tft_output.transform_savedmodel_dir, plan)
    storage.write_json_atomic(
        join_uri(out_dir, TFLITE_PREPROCESSING), preprocessing_spec(plan, tft_output, stats, output_key)
    )


def check_tflite_parity(
    tf, request: dict, plan: FeaturePlan, split: str, serving_dir: str, out_dir: str
) -> dict[str, Any]:
    """TFLite (+ NumPy preprocessing) vs the exported SavedModel on raw rows of `split`; raises
    when they differ by more than the request's tolerance. Returns {rows, max_abs_diff, tolerance}."""
    import numpy as np

    from mlops.modeling.predictions import read_raw_rows, savedmodel_predict
    from mlops.modeling.tflite_predictor import TFLitePredictor

    raw_rows = read_raw_rows(
        request["examples_dir"], split, plan.raw, int(request.get("parity_rows") or DEFAULT_PARITY_ROWS)
    )
    saved = savedmodel_predict(tf.saved_model.load(serving_dir), raw_rows, SERVING_SIGNATURE)
    lite = TFLitePredictor.from_dir(out_dir).predict(raw_rows)
    diff = float(np.max(np.abs(saved - lite))) if len(saved) else 0.0
    tol = float(request.get("parity_tolerance") or DEFAULT_PARITY_TOLERANCE)
    if not diff <= tol:
        raise AssertionError(
            f"TFLite parity failed: max |SavedModel - TFLite| = {diff:.3g} > {tol:g} on {len(saved)} rows"
        )
    return {"rows": int(len(saved)), "max_abs_diff": diff, "tolerance": tol}


def training_info(
    tf,
    tft,
    config: PlatformConfig,
    plan: FeaturePlan,
    output_key: str,
    rows: dict[str, int],
    history,
    early_stopping,
    metrics: dict,
    parity: dict | None,
    cards: dict,
    vocab_sizes: dict,
    durations: dict[str, float],
) -> dict[str, Any]:
    """The content of training.json: what was trained on what, how it went, what was exported."""
    spec = config.model
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return {
        "task": plan.task.value,
        "output_key": output_key,
        "seed": spec.seed,
        "params": {
            "model": spec.model_dump(mode="json"),
            "transform": config.transform.model_dump(mode="json"),
            "config_hash": config.content_hash(),
        },
        "features": {
            "raw": {f.name: f.dtype for f in plan.raw},
            "model_inputs": plan.transformed_feature_names(),
            "cardinalities": cards,
            "vocabulary_sizes": vocab_sizes,
        },
        "rows": rows,
        "history": hist,
        "epochs_run": len(next(iter(hist.values()), [])),
        "best_epoch": int(early_stopping.best_epoch) + 1 if hist else None,
        "stopped_early": bool(early_stopping.stopped_epoch),
        "metrics": metrics,
        "eval_loss": metrics["eval"]["loss"],
        **({"eval_auc": metrics["eval"]["auc"]} if plan.task == TaskType.binary_classification else {}),
        "tflite_parity": parity,
        "signatures": {
            SERVING_SIGNATURE: "raw features -> " + output_key,
            TRANSFORMED_SIGNATURE: "transformed features -> " + output_key,
        },
        "versions": {
            "tensorflow": tf.__version__,
            "tensorflow_transform": tft.__version__,
            "keras": tf.keras.__name__ + " " + getattr(tf.keras, "__version__", ""),
        },
        "durations_s": durations,
    }


def main(argv: list[str]) -> None:
    from mlops.modeling.child import child_main

    child_main(argv, run)


if __name__ == "__main__":
    main(sys.argv[1:])
