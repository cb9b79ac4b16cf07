"""Predictions from model.tflite + tflite_preprocessing.json: a NumPy preprocessor (the TFT
transform, re-implemented from the exported constants) in front of the TFLite interpreter.

    predictor = TFLitePredictor.from_dir(model_dir)       # <model>/model.tflite + json
    p = predictor.predict({"hour": np.array([7.0], np.float32), "carrier": np.array(["DL"]), ...})

`rows` holds one array per raw feature (mlops.artifacts encoding: float32 with NaN for missing,
strings with "" for missing); scalars count as one row. This module imports no TensorFlow; the
interpreter comes from ai_edge_litert, tflite_runtime or tensorflow (first found) when the
predictor is created. `NumpyPreprocessor` alone needs only NumPy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from mlops.modeling.farmhash import fingerprint64

SUPPORTED_FORMAT = 1
# mlops.artifacts.TFLITE_MODEL / TFLITE_PREPROCESSING, repeated here because mlops.artifacts imports
# pandas and pydantic, which an edge device does not have (serving/edge_test.py keeps them equal).
MODEL_FILE = "model.tflite"
PREPROCESSING_FILE = "tflite_preprocessing.json"
_CACHE_LIMIT = 1_000_000


def _as_text(values) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=object))
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of strings, got shape {arr.shape}")
    return np.array(
        [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else ("" if v is None else str(v)) for v in arr],
        dtype=object,
    )


class NumpyPreprocessor:
    """Raw rows -> the core model's inputs, as TFT computes them (see tflite_preprocessing.json)."""

    def __init__(self, spec: Mapping):
        if spec.get("format_version") != SUPPORTED_FORMAT:
            raise ValueError(
                f"tflite_preprocessing format {spec.get('format_version')} is not supported "
                f"(this code reads format {SUPPORTED_FORMAT})"
            )
        self.spec = spec
        self.raw_features = [(f["name"], f["dtype"]) for f in spec["raw_features"]]
        self.missing_token = spec["missing_token"]
        self.separator = spec["cross_separator"]
        self.z_clip = np.float32(spec["z_clip"])
        self._numeric = [
            (n["name"], np.float32(n["mean"]), np.float32(n["std"]), n["z_output"], n["missing_output"])
            for n in spec["numeric"]
        ]
        self._buckets = [
            (b["name"], np.asarray(b["boundaries"], dtype=np.float32), b["output"]) for b in spec["bucketize"]
        ]
        self._vocab = [
            (c["name"], {v: i for i, v in enumerate(c["vocabulary"])}, int(c["num_oov_buckets"]), c["output"])
            for c in spec["categorical"]
        ]
        self._crosses = [(list(c["features"]), int(c["hash_buckets"]), c["output"]) for c in spec["crosses"]]
        self._fingerprints: dict[str, int] = {}

    def _fp(self, text: str) -> int:
        v = self._fingerprints.get(text)
        if v is None:
            v = fingerprint64(text)
            if len(self._fingerprints) < _CACHE_LIMIT:
                self._fingerprints[text] = v
        return v

    def _ids(self, values: np.ndarray, lookup) -> np.ndarray:
        uniques, inverse = np.unique(values, return_inverse=True)
        return np.fromiter((lookup(u) for u in uniques), dtype=np.int64, count=len(uniques))[inverse]

    def __call__(self, rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name, _ in self.raw_features if name not in rows]
        if missing:
            raise KeyError(f"missing raw feature(s): {missing}")
        n = None
        cols = {}
        for name, dtype in self.raw_features:
            col = (
                np.atleast_1d(np.asarray(rows[name], dtype=np.float32)) if dtype == "float32" else _as_text(rows[name])
            )
            if col.ndim != 1 or (n is not None and len(col) != n):
                raise ValueError(f"feature {name!r}: expected a 1-D array of {n} rows, got shape {col.shape}")
            n = len(col)
            cols[name] = col

        out: dict[str, np.ndarray] = {}
        filled = {}
        for name, mean, std, z_out, miss_out in self._numeric:
            x = cols[name]
            is_missing = np.isnan(x)
            f = np.where(is_missing, mean, x).astype(np.float32)
            filled[name] = f
            out[z_out] = np.clip((f - mean) / std, -self.z_clip, self.z_clip).astype(np.float32)
            out[miss_out] = is_missing.astype(np.float32)
        for name, boundaries, b_out in self._buckets:
            out[b_out] = np.searchsorted(boundaries, filled[name], side="right").astype(np.int64)
        for name, index, n_oov, c_out in self._vocab:
            size = len(index)
            token = self.missing_token

            def lookup(v, index=index, size=size, n_oov=n_oov, token=token):
                v = token if v == "" else v
                i = index.get(v)
                return i if i is not None else size + self._fp(v) % n_oov

            out[c_out] = self._ids(cols[name], lookup)
        for features, buckets, x_out in self._crosses:
            parts = [cols[f] for f in features]
            joined = np.array([self.separator.join(t) for t in zip(*parts)], dtype=object)
            out[x_out] = self._ids(joined, lambda v, buckets=buckets: self._fp(v) % buckets)
        return out


def load_interpreter(model_path: str, num_threads: int | None = None):
    """A TFLite interpreter from the first runtime installed: ai_edge_litert, tflite_runtime, TF."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=model_path, num_threads=num_threads)


class TFLitePredictor:
    """predict(rows) -> np.ndarray [n] of the model output (probability for binary tasks)."""

    def __init__(self, tflite_path: str, spec: Mapping, num_threads: int | None = None):
        self.preprocessor = NumpyPreprocessor(spec)
        self.output_key = spec["output_key"]
        self.interpreter = load_interpreter(tflite_path, num_threads)
        self.runner = self.interpreter.get_signature_runner(spec.get("signature", "serving_default"))
        self.model_inputs = dict(spec["model_inputs"])

    @classmethod
    def from_dir(cls, model_dir: str, num_threads: int | None = None) -> TFLitePredictor:
        with open(os.path.join(model_dir, PREPROCESSING_FILE)) as f:
            spec = json.load(f)
        return cls(os.path.join(model_dir, MODEL_FILE), spec, num_threads)

    def predict(self, rows: Mapping[str, np.ndarray]) -> np.ndarray:
        features = self.preprocessor(rows)
        inputs = {name: features[name].astype(dtype, copy=False) for name, dtype in self.model_inputs.items()}
        return np.asarray(self.runner(**inputs)[self.output_key], dtype=np.float32).reshape(-1)


def predict(model_dir: str, rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """One-shot convenience: TFLitePredictor.from_dir(model_dir).predict(rows)."""
    return TFLitePredictor.from_dir(model_dir).predict(rows)
