"""One rule for timestamps across the platform: naive means UTC; everything is compared in UTC."""

from __future__ import annotations

import pandas as pd


def as_utc(ts: pd.Series) -> pd.Series:
    """datetime64[ns, UTC] of a Series of timestamps, datetimes or ISO-8601 text (naive = UTC)."""
    if not pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True)
    elif ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    else:
        ts = ts.dt.tz_convert("UTC")
    return ts.astype("datetime64[ns, UTC]")
