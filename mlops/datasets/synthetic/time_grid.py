"""The generated time range: local dates, every UTC hour in it and the maps between them, and
the nycflights13 clock formats (hhmm, time_hour)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.datasets.synthetic.schema import TIMEZONE, SyntheticError
from mlops.timestamps import as_utc


@dataclass
class TimeGrid:
    days: pd.DatetimeIndex  # local dates of the range
    utc: pd.DatetimeIndex  # every UTC hour whose local time lies in the range
    utc_str: np.ndarray  # "YYYY-MM-DDTHH:00:00Z" per UTC hour (object)
    frac: np.ndarray  # elapsed fraction of the range per UTC hour, [0, 1)
    local: dict[str, np.ndarray]  # year, month, day, hour (local) per UTC hour
    local_hour_to_utc: np.ndarray  # index into utc of local (day index * 24 + hour)
    month_pos: np.ndarray  # continuous calendar-month coordinate per UTC hour (0 = mid-January)


def local_range(start, months: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, end) local midnights of the range `months` long from the local date of `start`."""
    if int(months) != months or months < 1:
        raise SyntheticError(f"months must be a positive integer, got {months!r}")
    s = pd.Timestamp(start)
    if s.tzinfo is not None:
        s = s.tz_convert(TIMEZONE).tz_localize(None)
    s = s.normalize()
    return s, s + pd.DateOffset(months=int(months))


def time_range_utc(start="2013-01-01", months: int = 12) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, end) of the generated range in UTC: local midnight of `start` to local midnight
    `months` later; every generated time_hour lies in it."""
    s, e = local_range(start, months)
    return s.tz_localize(TIMEZONE).tz_convert("UTC"), e.tz_localize(TIMEZONE).tz_convert("UTC")


def time_grid(start, months: int) -> TimeGrid:
    s, _ = local_range(start, months)
    return _time_grid_of_date(str(s.date()), int(months))


@functools.lru_cache(maxsize=8)
def _time_grid_of_date(start: str, months: int) -> TimeGrid:
    s, e = local_range(start, months)
    us, ue = time_range_utc(start, months)
    days = pd.date_range(s, e, freq="D", inclusive="left")
    utc = pd.date_range(us, ue, freq="H", inclusive="left")
    loc = utc.tz_convert(TIMEZONE)
    naive = days.repeat(24) + pd.to_timedelta(np.tile(np.arange(24), len(days)), unit="h")
    aware = naive.tz_localize(TIMEZONE, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward")
    lh2u = ((aware.tz_convert("UTC").floor("H") - us) // pd.Timedelta(hours=1)).to_numpy().astype(np.int64)
    lh2u = np.clip(lh2u, 0, len(utc) - 1)
    frac = ((utc - us) / (ue - us)).to_numpy(dtype=float)
    month = loc.month.to_numpy()
    pos = (month - 1) + (loc.day.to_numpy() - 1 + loc.hour.to_numpy() / 24.0) / loc.days_in_month.to_numpy() - 0.5
    return TimeGrid(
        days=days,
        utc=utc,
        utc_str=np.char.add(np.datetime_as_string(utc.tz_convert(None).to_numpy(), unit="s"), "Z").astype(object),
        frac=frac,
        local={
            "year": loc.year.to_numpy().astype(np.int64),
            "month": month.astype(np.int64),
            "day": loc.day.to_numpy().astype(np.int64),
            "hour": loc.hour.to_numpy().astype(np.int64),
        },
        local_hour_to_utc=lh2u,
        month_pos=pos,
    )


def hhmm_to_minutes(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return (a // 100) * 60 + a % 100


def minutes_to_hhmm(minutes: np.ndarray) -> np.ndarray:
    """Clock time hhmm (float) of whole minutes after local midnight; midnight is 2400 as in the data."""
    m = minutes.astype(np.int64) % 1440
    m[m == 0] = 1440
    return ((m // 60) * 100 + m % 60).astype(np.float64)


def epoch_hours(s: pd.Series) -> np.ndarray:
    """Whole hours since the epoch of UTC timestamps (strings or datetimes)."""
    ns = as_utc(s).dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    return ns // 3_600_000_000_000
