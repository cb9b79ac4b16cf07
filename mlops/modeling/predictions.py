"""Predictions of an exported Model directory on raw rows, from the SavedModel and from TFLite.

    python -m mlops.modeling.predictions --model-dir M --examples-dir E [--split test]
        [--limit 2000] [--single-rows 5] --out result.json

Runs in either environment (TF 2.16 pipeline, TF 2.21 serving): the parity and cross-environment
tests call it in a subprocess of each interpreter and compare the JSON it writes:
{"tensorflow": version, "rows": n, "savedmodel": [...], "savedmodel_single": [...], "tflite": [...]}
("savedmodel_single": the first --single-rows rows, each sent alone as a batch of one).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import numpy as np

from mlops.artifacts import RawFeature


def read_raw_rows(examples_dir: str, split: str, raw: Sequence[RawFeature], limit: int | None = None) -> dict:
    """Raw feature columns of <examples>/<split>.parquet (first `limit` rows), raw encoding:
    float32 with NaN for missing, Python str with "" for missing."""
    from mlops.artifacts import read_split

    frame = read_split(examples_dir, split, columns=[r.name for r in raw])
    if limit is not None:
        frame = frame.iloc[:limit]
    rows = {}
    for r in raw:
        col = frame[r.name]
        if r.dtype == "float32":
            rows[r.name] = col.astype("float64").to_numpy(dtype=np.float32, na_value=np.nan)
        else:
            rows[r.name] = col.fillna("").astype(str).to_numpy(dtype=object)
    return rows


def savedmodel_predict(
    model_dir_or_loaded, rows: dict, signature: str = "serving_default", output_key: str | None = None
) -> np.ndarray:
    """The serving signature of <model_dir>/serving_model (or a loaded SavedModel) on raw rows
    ({feature: 1-D array}), as a 1-D array of `output_key` (default: the signature's only output).
    The one way the pipeline side calls an exported model (Trainer parity, Evaluator, tests)."""
    import tensorflow as tf

    from mlops.artifacts import SERVING_MODEL

    loaded = model_dir_or_loaded
    if isinstance(loaded, str):
        loaded = tf.saved_model.load(os.path.join(loaded, SERVING_MODEL))
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    out = fn(**{k: tf.constant(rows[k], dtype=spec.dtype) for k, spec in specs.items()})
    value = out[output_key] if output_key is not None else next(iter(out.values()))
    return value.numpy().reshape(-1)


def raw_features_of(model_dir: str) -> list[RawFeature]:
    from mlops.artifacts import TFLITE_PREPROCESSING
    from mlops.config import ColumnKind

    with open(os.path.join(model_dir, TFLITE_PREPROCESSING)) as f:
        spec = json.load(f)
    return [
        RawFeature(r["name"], ColumnKind.numeric if r["dtype"] == "float32" else ColumnKind.categorical)
        for r in spec["raw_features"]
    ]


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--examples-dir", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--single-rows", type=int, default=5)
    ap.add_argument("--no-tflite", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import tensorflow as tf

    from mlops.artifacts import SERVING_MODEL

    rows = read_raw_rows(args.examples_dir, args.split, raw_features_of(args.model_dir), args.limit)
    loaded = tf.saved_model.load(os.path.join(args.model_dir, SERVING_MODEL))
    result = {
        "tensorflow": tf.__version__,
        "rows": int(len(next(iter(rows.values())))),
        "savedmodel": savedmodel_predict(loaded, rows).tolist(),
    }
    result["savedmodel_single"] = [
        float(savedmodel_predict(loaded, {k: v[i : i + 1] for k, v in rows.items()})[0])
        for i in range(min(args.single_rows, result["rows"]))
    ]
    if not args.no_tflite:
        from mlops.modeling.tflite_predictor import TFLitePredictor

        result["tflite"] = TFLitePredictor.from_dir(args.model_dir).predict(rows).tolist()
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
