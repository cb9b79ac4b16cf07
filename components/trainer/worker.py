"""The TensorFlow half of the Trainer step, run as a child process by executor.py.

    python -m components.trainer.worker REQUEST_JSON

REQUEST_JSON (written through mlops.modeling.child.run_child): {"config", "transform_dir",
"out_dir", "examples_dir" (optional: raw test rows for the TFLite parity check),
"parity_rows", "parity_tolerance", "marker", "nonce"}.

Steps: load the transformed train/eval/test TFRecords into memory (parse_example on big batches;
330k rows x ~45 columns is ~100 MB), fit the Keras core model (seeded, deterministic ops, early
stopping on eval loss with the best weights restored, TensorBoard logs, per-epoch checkpoints),
evaluate, export serving_model/ (raw-feature signature with the TFT layer inside), model.tflite
+ tflite_preprocessing.json, check TFLite vs SavedModel parity on raw test rows, write
training.json. TF_USE_LEGACY_KERAS=1 is set before TensorFlow is imported (tf.keras = tf_keras).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

TRANSFORMED_SIGNATURE = "transformed"  # the core model on transformed features (evaluation, TFMA)
LOAD_BATCH = 16_384


def load_transformed(tf, path: str, feature_spec: dict) -> dict:
    """All records of a transformed TFRecord file as {feature: np.ndarray}."""
    import numpy as np

    ds = (tf.data.TFRecordDataset(path, compression_type="GZIP", buffer_size=8 << 20)
          .batch(LOAD_BATCH)
          .map(lambda x: tf.io.parse_example(x, feature_spec), num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
          .prefetch(2))
    parts: dict[str, list] = {k: [] for k in feature_spec}
    for batch in ds:
        for k, v in batch.items():
            parts[k].append(v.numpy())
    return {k: (np.concatenate(v) if v else np.zeros((0,), feature_spec[k].dtype.as_numpy_dtype))
            for k, v in parts.items()}


def run(request: dict) -> dict:
    t_start = time.monotonic()
    durations: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        durations[name] = round(now - since, 3)
        return now


    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft

    from mlops import storage
    from mlops.artifacts import (OUTPUT_KEY, SERVING_MODEL, SERVING_SIGNATURE, SPLITS, TFLITE_MODEL,
                                 TFLITE_PREPROCESSING, TRAINING_INFO, TRANSFORM_OUTPUT, TRANSFORMED_EXAMPLES)
    from mlops.config import PlatformConfig, TaskType, join_uri
    from mlops.modeling.model import build_model, cardinalities, input_signature
    from mlops.modeling.preprocessing import FeaturePlan
    from mlops.modeling.tflite_export import convert_tflite, preprocessing_spec, transform_stats

    from components.trainer.executor import CHECKPOINTS, LOGS

    t = lap("import", t_start)
    config = PlatformConfig.model_validate(request["config"])
    spec = config.model
    plan = FeaturePlan.from_config(config)
    task = plan.task
    output_key = OUTPUT_KEY[task]
    out_dir, transform_dir = request["out_dir"], request["transform_dir"]
    for stale in (SERVING_MODEL, CHECKPOINTS, LOGS, TFLITE_MODEL, TFLITE_PREPROCESSING, TRAINING_INFO):
        storage.remove(join_uri(out_dir, stale), recursive=True)  # a retried step starts clean
    storage.makedirs(out_dir)

    tf.keras.utils.set_random_seed(spec.seed)
    tf.config.experimental.enable_op_determinism()

    tft_output = tft.TFTransformOutput(join_uri(transform_dir, TRANSFORM_OUTPUT))
    feature_spec = tft_output.transformed_feature_spec()
    model_inputs = plan.transformed_feature_names()
    absent = [k for k in model_inputs + [plan.label] if k not in feature_spec]
    if absent:
        raise ValueError(f"transform output lacks feature(s) {absent}: transform and trainer configs differ")
    data = {s: load_transformed(tf, join_uri(transform_dir, TRANSFORMED_EXAMPLES, f"{s}.tfrecord.gz"), feature_spec)
            for s in SPLITS}
    rows = {s: int(len(d[plan.label])) for s, d in data.items()}
    if rows["train"] == 0 or rows["eval"] == 0:
        raise ValueError(f"need train and eval rows to train, got {rows}")
    label_dtype = np.float32

    def xy(split):
        d = data[split]
        return {k: d[k] for k in model_inputs}, d[plan.label].astype(label_dtype)

    t = lap("load_data", t)

    vocab_sizes = {c: int(tft_output.vocabulary_size_by_name(plan.vocab_name(c))) for c in plan.categorical}
    cards = cardinalities(plan, vocab_sizes)
    model = build_model(spec, plan, cards)
    (x_train, y_train), (x_eval, y_eval) = xy("train"), xy("eval")
    early = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=spec.early_stopping_patience,
                                             restore_best_weights=True, verbose=1)
    callbacks = [
        early,
        tf.keras.callbacks.TensorBoard(log_dir=join_uri(out_dir, LOGS), histogram_freq=0, write_graph=False,
                                       update_freq="epoch", profile_batch=0),
        tf.keras.callbacks.ModelCheckpoint(join_uri(out_dir, CHECKPOINTS, "epoch-{epoch:02d}"),
                                           save_weights_only=True),
    ]
    eval_batch = max(spec.batch_size, 4096)
    history = model.fit(x_train, y_train, batch_size=spec.batch_size, epochs=spec.epochs,
                        validation_data=(x_eval, y_eval), validation_batch_size=eval_batch,
                        shuffle=True, callbacks=callbacks, verbose=2)
    t = lap("fit", t)

    metrics = {"eval": model.evaluate(x_eval, y_eval, batch_size=eval_batch, return_dict=True, verbose=0)}
    if rows["test"]:
        x_test, y_test = xy("test")
        metrics["test"] = model.evaluate(x_test, y_test, batch_size=eval_batch, return_dict=True, verbose=0)
    metrics = {s: {k: float(v) for k, v in m.items()} for s, m in metrics.items()}
    t = lap("evaluate", t)

    # --- serving SavedModel: raw features in, the TFT layer inside ---------------------------
    model.tft_layer = tft_output.transform_features_layer()
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

    serving_dir = join_uri(out_dir, SERVING_MODEL)
    model.save(serving_dir, save_format="tf", include_optimizer=False, signatures={
        SERVING_SIGNATURE: serve_raw.get_concrete_function(),
        TRANSFORMED_SIGNATURE: serve_transformed.get_concrete_function()})
    t = lap("export_savedmodel", t)

    # --- TFLite core model + the preprocessing constants ---------------------------------------
    tflite_bytes = convert_tflite(model, plan, output_key)
    storage.write_bytes_atomic(join_uri(out_dir, TFLITE_MODEL), tflite_bytes)
    stats = transform_stats(tft_output.transform_savedmodel_dir, plan)
    prep = preprocessing_spec(plan, tft_output, stats, output_key)
    storage.write_json_atomic(join_uri(out_dir, TFLITE_PREPROCESSING), prep)
    t = lap("export_tflite", t)

    # --- parity: TFLite (+ NumPy preprocessing) vs the exported SavedModel on raw rows --------
    parity = None
    if request.get("examples_dir"):
        from mlops.modeling.predictions import read_raw_rows, savedmodel_predict
        from mlops.modeling.tflite_predictor import TFLitePredictor

        raw_rows = read_raw_rows(request["examples_dir"], "test" if rows["test"] else "eval", plan.raw,
                                 int(request.get("parity_rows") or 2000))
        saved = savedmodel_predict(tf.saved_model.load(serving_dir), raw_rows, SERVING_SIGNATURE)
        lite = TFLitePredictor.from_dir(out_dir).predict(raw_rows)
        diff = float(np.max(np.abs(saved - lite))) if len(saved) else 0.0
        tol = float(request.get("parity_tolerance") or 1e-4)
        parity = {"rows": int(len(saved)), "max_abs_diff": diff, "tolerance": tol}
        if not diff <= tol:
            raise AssertionError(f"TFLite parity failed: max |SavedModel - TFLite| = {diff:.3g} > {tol:g} "
                                 f"on {len(saved)} rows")
        t = lap("parity", t)

    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    best_epoch = int(early.best_epoch) + 1 if hist else None
    info = {
        "task": task.value,
        "output_key": output_key,
        "seed": spec.seed,
        "params": {"model": spec.model_dump(mode="json"), "transform": config.transform.model_dump(mode="json"),
                   "config_hash": config.content_hash()},
        "features": {"raw": {f.name: f.dtype for f in plan.raw}, "model_inputs": model_inputs,
                     "cardinalities": cards, "vocabulary_sizes": vocab_sizes},
        "rows": rows,
        "history": hist,
        "epochs_run": len(next(iter(hist.values()), [])),
        "best_epoch": best_epoch,
        "stopped_early": bool(early.stopped_epoch),
        "metrics": metrics,
        "eval_loss": metrics["eval"]["loss"],
        **({"eval_auc": metrics["eval"]["auc"]} if task == TaskType.binary_classification else {}),
        "tflite_parity": parity,
        "signatures": {SERVING_SIGNATURE: "raw features -> " + output_key,
                       TRANSFORMED_SIGNATURE: "transformed features -> " + output_key},
        "versions": {"tensorflow": tf.__version__, "tensorflow_transform": tft.__version__,
                     "keras": tf.keras.__name__ + " " + getattr(tf.keras, "__version__", "")},
        "durations_s": durations,
    }
    durations["total_in_worker"] = round(time.monotonic() - t_start, 3)
    storage.write_json_atomic(join_uri(out_dir, TRAINING_INFO), info)
    return {"metrics": metrics, "rows": rows, "durations_s": durations, "tflite_parity": parity,
            "best_epoch": best_epoch, "epochs_run": info["epochs_run"]}


def main(argv: list[str]) -> None:
    from mlops.modeling.child import child_main

    child_main(argv, run)


if __name__ == "__main__":
    main(sys.argv[1:])
