"""Rolling per-key statistics over trailing day windows, computed from past days only.

Pure pandas (no Feast): the same function builds the Feast source tables and can be unit tested
without a feature store. For each key and each UTC day D the statistics of `spec.value` use only
events with timestamp in [D - w days, D), i.e. strictly before D 00:00 UTC, so a row that a model
sees for an event on day D never contains that day's own outcome (no label leakage).

Output, one row per key and day (D from the key's first event day + 1 through its last event
day + 1, including days whose window holds no event):

    keys..., day_start (D 00:00 UTC, the Feast event timestamp),
    {name}_mean_{w}d, {name}_count_{w}d[, {name}_share_over_{w}d]   for each window w

A day with no event in a window has count 0 and mean/share NaN. Events whose value is missing do
not count. Column names match `mlops.datasets.ingest.aggregate_feature_names`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.config import RollingAggregateSpec
from mlops.datasets.ingest import aggregate_feature_names
from mlops.timestamps import as_utc

DAY_START = "day_start"


def rolling_aggregates(df: pd.DataFrame, spec: RollingAggregateSpec, event_timestamp: str) -> pd.DataFrame:
    """Daily trailing-window statistics of `spec.value` per `spec.keys` (see the module doc)."""
    missing = [c for c in [*spec.keys, spec.value, event_timestamp] if c not in df.columns]
    if missing:
        raise KeyError(f"rolling aggregate {spec.name!r}: input lacks column(s) {missing}")
    keys = list(spec.keys)
    windows = sorted(set(spec.windows_days))
    out_columns = [*keys, DAY_START] + _feature_columns(spec)

    value = pd.to_numeric(df[spec.value], errors="coerce").astype("float64")
    base = df[keys].copy()
    base["_day"] = as_utc(df[event_timestamp]).dt.floor("D")
    base["_sum"] = value.fillna(0.0)
    base["_n"] = value.notna().astype("int64")
    if spec.threshold is not None:
        base["_over"] = (value > spec.threshold).astype("int64")  # NaN > t is False
    base = base.dropna(subset=keys)  # an event without a key belongs to no key
    if base.empty:
        return _empty(df, spec, out_columns)

    # 1. Per key and event day: sum, count (and count over the threshold).
    daily = base.groupby([*keys, "_day"], sort=True, observed=True).sum().reset_index()

    # 2. A contiguous daily grid per key: first event day .. last event day + 1.
    bounds = daily.groupby(keys, sort=True, observed=True)["_day"].agg(["min", "max"]).reset_index()
    n_days = ((bounds["max"] - bounds["min"]).dt.days + 2).to_numpy()
    key_idx = np.repeat(np.arange(len(bounds)), n_days)
    starts = np.repeat(np.cumsum(n_days) - n_days, n_days)
    offsets = np.arange(int(n_days.sum())) - starts
    grid = bounds[keys].iloc[key_idx].reset_index(drop=True)
    first = bounds["min"].dt.tz_convert(None).to_numpy().astype("datetime64[ns]")
    days = first[key_idx] + offsets.astype("timedelta64[D]").astype("timedelta64[ns]")
    grid["_day"] = pd.Series(days).dt.tz_localize("UTC")
    grid = grid.merge(daily, on=[*keys, "_day"], how="left", sort=False)
    sums = [c for c in ("_sum", "_n", "_over") if c in grid.columns]
    grid[sums] = grid[sums].fillna(0)

    # 3. Window sums from cumulative sums: days [D - w, D) = csum(D - 1) - csum(D - 1 - w).
    #    The grid is contiguous per key, so "D - k days" is "k rows earlier within the key".
    group_id = pd.Series(key_idx)
    csum = grid[sums].groupby(group_id).cumsum()
    out = grid[keys].copy()
    out[DAY_START] = grid["_day"]
    before = csum.groupby(group_id).shift(1).fillna(0)
    for w in windows:
        window = before - csum.groupby(group_id).shift(w + 1).fillna(0)
        n = window["_n"].round().astype("int64")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{spec.name}_mean_{w}d"] = np.where(n > 0, window["_sum"] / n.where(n > 0, 1), np.nan)
            out[f"{spec.name}_count_{w}d"] = n
            if spec.threshold is not None:
                out[f"{spec.name}_share_over_{w}d"] = np.where(n > 0, window["_over"] / n.where(n > 0, 1), np.nan)

    # The first grid day of each key (its first event day) has no past: not emitted.
    first_day = np.r_[True, key_idx[1:] != key_idx[:-1]]
    out = out[~first_day].reset_index(drop=True)
    for k in keys:
        out[k] = out[k].astype(df[k].dtype)
    return out[out_columns]


def _feature_columns(spec: RollingAggregateSpec) -> list[str]:
    return list(dict.fromkeys(aggregate_feature_names(spec)))


def _empty(df: pd.DataFrame, spec: RollingAggregateSpec, columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({k: pd.Series(dtype=df[k].dtype) for k in spec.keys})
    out[DAY_START] = pd.Series(dtype="datetime64[ns, UTC]")
    for c in columns[len(spec.keys) + 1 :]:
        out[c] = pd.Series(dtype="int64" if "_count_" in c else "float64")
    return out[columns]
