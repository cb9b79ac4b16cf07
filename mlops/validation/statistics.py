"""TFDV statistics of raw-feature frames: compute, store, load, summarise.

Everything that computes statistics (StatisticsGen on examples, monitoring on logged serving
requests) goes through `compute_statistics`, so training and serving statistics are comparable
(the skew check in ExampleValidator relies on that).

TFDV facts this module handles (tensorflow-data-validation 1.16.1, checked in its sources):
  * `generate_statistics_from_dataframe` turns the frame into ONE Arrow record batch
    (`pa.RecordBatch.from_pandas`, NaN -> null), so NaN in a float column is already counted as
    missing; but "" in a string column is a value. The raw encoding uses "" for a missing
    categorical (mlops.artifacts), so "" is turned into None before TFDV sees it.
  * `StatsOptions(sample_rate=...)` is applied per record batch, and the dataframe API makes one
    batch: measured, it does not sample at all (num_examples stays the full count). Sampling is
    therefore done on the frame with a seeded `DataFrame.sample`.
  * Columns of unsupported dtypes (datetimes, objects that are not strings) are silently
    dropped by TFDV: only the configured features and the label are passed in.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from tensorflow_metadata.proto.v0 import statistics_pb2

from mlops import storage
from mlops.artifacts import model_features
from mlops.config import ColumnKind, PlatformConfig

StatsList = statistics_pb2.DatasetFeatureStatisticsList


def stats_columns(config: PlatformConfig) -> list[str]:
    """The columns statistics describe: model features (config order) and the label."""
    return [f.name for f in model_features(config)] + [config.dataset.label.column]


def stats_frame(df: pd.DataFrame, config: PlatformConfig, sample_rate: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """The frame handed to TFDV: configured columns that exist (a missing one is reported by
    validation, not here), "" -> None in categorical features, optionally a seeded sample."""
    columns = [c for c in stats_columns(config) if c in df.columns]
    out = df[columns]
    if sample_rate < 1.0 and len(out):
        out = out.sample(frac=sample_rate, random_state=seed)
    out = out.copy()
    for f in model_features(config):
        if f.kind == ColumnKind.categorical and f.name in out.columns and out[f.name].dtype == object:
            col = out[f.name]
            out[f.name] = col.where(col != "", None)
    return out.reset_index(drop=True)


def compute_statistics(
    df: pd.DataFrame,
    config: PlatformConfig,
    name: str = "",
    *,
    sample_rate: float | None = None,
    seed: int | None = None,
) -> StatsList:
    """TFDV statistics of a raw-feature frame (in memory, no Beam). `sample_rate` defaults to
    config.validation.stats_sample_rate."""
    import tensorflow_data_validation as tfdv

    rate = config.validation.stats_sample_rate if sample_rate is None else sample_rate
    frame = stats_frame(df, config, rate, config.split.seed if seed is None else seed)
    stats = tfdv.generate_statistics_from_dataframe(frame, tfdv.StatsOptions())
    if name:
        for ds in stats.datasets:
            ds.name = name
    return stats


def _tfdv_batch(table, config: PlatformConfig):
    """An Arrow table of examples as TFDV's dataframe API feeds it to the generators (the same
    frame cleaning as in memory, then tfdv.utils.stats_gen_lib's conversion)."""
    import pyarrow as pa
    from tfx_bsl.arrow import table_util

    frame = stats_frame(table.to_pandas(), config)
    supported = [c for c, t in zip(frame.columns, frame.dtypes) if table_util.NumpyKindToArrowType(t.kind)]
    return table_util.CanonicalizeRecordBatch(pa.RecordBatch.from_pandas(frame[supported], preserve_index=False))


def _write_named(stats: StatsList, name: str, uri: str) -> None:
    for ds in stats.datasets:
        ds.name = name
    write_statistics(stats, uri)


def compute_statistics_beam(parquet_uri: str, config: PlatformConfig, out_uri: str, name: str = "") -> StatsList:
    """TFDV statistics of a parquet file of raw-feature examples, computed by tfdv.GenerateStatistics
    in a Beam pipeline on config.beam's runner (mlops.beam), written to `out_uri` and returned.
    The same generators and frame cleaning as `compute_statistics`: equal statistics (float
    tolerance, feature order aside). The workers read the file (beam.dask.workers slices of it on
    Dask) and write the result, so on a remote runner both are URIs they reach. A sample rate
    below 1 is TFDV's per-batch sampling (StatsOptions.sample_rate), not the seeded frame sample."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv

    from mlops import beam as mlops_beam

    rate = config.validation.stats_sample_rate
    options = tfdv.StatsOptions(sample_rate=rate) if rate < 1.0 else tfdv.StatsOptions()
    slices = mlops_beam.read_slices(config.beam)
    columns = stats_columns(config)
    with mlops_beam.pipeline(config.beam) as p:
        _ = (
            p
            | "Slices" >> beam.Create([(parquet_uri, k, slices) for k in range(slices)])
            | "Read" >> beam.FlatMapTuple(mlops_beam.read_parquet, columns=columns)
            | "ToTFDV" >> beam.Map(_tfdv_batch, config)
            | "GenerateStatistics" >> tfdv.GenerateStatistics(options)
            | "Write" >> beam.Map(_write_named, name, out_uri)
        )
    return read_statistics(out_uri)


def write_statistics(stats: StatsList, uri: str) -> None:
    """Binary DatasetFeatureStatisticsList (what tfdv.load_stats_binary reads), atomically."""
    storage.write_bytes_atomic(uri, stats.SerializeToString())


def read_statistics(uri: str) -> StatsList:
    stats = StatsList()
    stats.ParseFromString(storage.read_bytes(uri))
    return stats


def default_slice(stats: StatsList) -> statistics_pb2.DatasetFeatureStatistics:
    if not stats.datasets:
        raise ValueError("statistics hold no dataset")
    for ds in stats.datasets:
        if ds.name in ("", "All Examples") or len(stats.datasets) == 1:
            return ds
    return stats.datasets[0]


def num_examples(stats: StatsList) -> int:
    return int(default_slice(stats).num_examples)


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))) else float(v)


def feature_summary(stats: StatsList) -> dict[str, dict[str, Any]]:
    """Plain per-feature numbers (for reports and tests): kind, present, missing, and
    mean/std/min/median/max (numeric) or unique/top values (categorical)."""
    out: dict[str, dict[str, Any]] = {}
    for f in default_slice(stats).features:
        name = ".".join(f.path.step) or f.name
        kind = f.WhichOneof("stats")
        row: dict[str, Any] = {"type": statistics_pb2.FeatureNameStatistics.Type.Name(f.type)}
        if kind == "num_stats":
            s = f.num_stats
            row.update(
                kind="numeric",
                present=int(s.common_stats.num_non_missing),
                missing=int(s.common_stats.num_missing),
                mean=_num(s.mean),
                std=_num(s.std_dev),
                min=_num(s.min),
                median=_num(s.median),
                max=_num(s.max),
                zeros=int(s.num_zeros),
            )
        elif kind == "string_stats":
            s = f.string_stats
            row.update(
                kind="categorical",
                present=int(s.common_stats.num_non_missing),
                missing=int(s.common_stats.num_missing),
                unique=int(s.unique),
                top=[(v.value, int(v.frequency)) for v in s.top_values[:5]],
            )
        else:
            continue
        total = row["present"] + row["missing"]
        row["missing_share"] = row["missing"] / total if total else 0.0
        out[name] = row
    return out
