"""The contract between pipeline steps: what each artifact directory holds, and how raw
features look on the way into the model.

Every step reads and writes plain files under the artifact directory KFP gives it (or any
directory a plain-Python caller passes), so steps can be run, tested and inspected one by one.

Raw feature encoding (ExampleGen writes it; TFDV, TFT, the serving signature and the online
server all use it):
  * numeric     -> float32, NaN where missing
  * categorical -> string, "" where missing (integers become their decimal text: month 7 -> "7")
  * label       -> int64 for classification, float32 for regression
No nulls anywhere: every feature is a dense [batch] tensor, so the same SavedModel signature
serves a training batch, a batch-inference chunk and a single online row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.config import ColumnKind, PlatformConfig, TaskType, join_uri
from mlops.errors import MlopsError

SPLITS = ("train", "eval", "test")

# Examples (ExampleGen): <dir>/<split>.parquet + <dir>/examples.json
EXAMPLES_INFO = "examples.json"
# Statistics (StatisticsGen): <dir>/<split>.stats.pb (DatasetFeatureStatisticsList) + index.html
STATS_SUFFIX = ".stats.pb"
# Schema (SchemaGen): <dir>/schema.pbtxt
SCHEMA_FILE = "schema.pbtxt"
# Anomalies (ExampleValidator): <dir>/anomalies.json (summary), <dir>/<split>.anomalies.pbtxt, index.html
ANOMALIES_SUMMARY = "anomalies.json"
# TransformGraph (Transform): <dir>/transform_output/ (tft.TFTransformOutput dir), <dir>/transformed/<split>.tfrecord.gz
TRANSFORM_OUTPUT = "transform_output"
TRANSFORMED_EXAMPLES = "transformed"
# Model (Trainer): <dir>/serving_model/ (SavedModel, raw-feature signature), <dir>/model.tflite,
# <dir>/tflite_preprocessing.json, <dir>/training.json (history, params), <dir>/logs/ (TensorBoard)
SERVING_MODEL = "serving_model"
TFLITE_MODEL = "model.tflite"
TFLITE_PREPROCESSING = "tflite_preprocessing.json"
TRAINING_INFO = "training.json"
# Serving signature: inputs keyed by raw feature name; output key:
SERVING_SIGNATURE = "serving_default"
OUTPUT_KEY = {
    TaskType.binary_classification: "probability",
    TaskType.regression: "prediction",
    TaskType.multiclass_classification: "probabilities",
}
# ModelEvaluation (Evaluator): <dir>/metrics.json, <dir>/index.html; ModelBlessing: <dir>/blessing.json
METRICS_FILE = "metrics.json"
BLESSING_FILE = "blessing.json"


@dataclass(frozen=True)
class RawFeature:
    name: str
    kind: ColumnKind

    @property
    def dtype(self) -> str:
        return "float32" if self.kind == ColumnKind.numeric else "string"


def model_features(config: PlatformConfig) -> list[RawFeature]:
    """The raw inputs of the model, in config order (timestamps are not model inputs)."""
    return [RawFeature(f.name, f.kind) for f in config.dataset.features if f.kind != ColumnKind.timestamp]


def encode_features(df: pd.DataFrame, features: list[RawFeature]) -> pd.DataFrame:
    """Applies the raw feature encoding above. Missing columns are an error, not a default."""
    missing = [f.name for f in features if f.name not in df.columns]
    if missing:
        raise KeyError(f"missing feature column(s): {missing}")
    out = {}
    for f in features:
        col = df[f.name]
        if f.kind == ColumnKind.numeric:
            out[f.name] = pd.to_numeric(col, errors="coerce").astype(np.float32)
        else:
            as_text = col.map(_category_text)
            out[f.name] = as_text.astype(object)
    return pd.DataFrame(out, index=df.index)


def _category_text(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def encode_label(series: pd.Series, task: TaskType) -> pd.Series:
    if task == TaskType.regression:
        return series.astype(np.float32)
    return series.astype(np.int64)


def split_path(examples_dir: str, split: str) -> str:
    return join_uri(examples_dir, f"{split}.parquet")


def parquet_rows(uri: str) -> int:
    """Rows of a parquet file (local path or fsspec URI), from its footer."""
    import pyarrow.parquet as pq

    from mlops import storage

    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return int(pq.ParquetFile(f).metadata.num_rows)


class ExamplesError(MlopsError):
    """An Examples directory lacks a split (the message names the file and the splits found)."""


def read_split(examples_dir: str, split: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One split of an Examples artifact (<dir>/<split>.parquet) as a DataFrame, from a local path
    or any fsspec URI; `columns` reads only those. The one reader every step uses."""
    from mlops import storage

    uri = split_path(examples_dir, split)
    if not storage.exists(uri):
        found = (
            sorted(n for n in storage.listdir(examples_dir) if n.endswith(".parquet"))
            if storage.exists(examples_dir)
            else []
        )
        raise ExamplesError(f"examples {examples_dir}: no {split}.parquet (found {found or 'nothing'})")
    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return pd.read_parquet(f, columns=columns)


def stats_path(statistics_dir: str, split: str) -> str:
    return join_uri(statistics_dir, f"{split}{STATS_SUFFIX}")
