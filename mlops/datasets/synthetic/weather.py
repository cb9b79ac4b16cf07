"""The synthetic hourly weather: AR(1) latent processes per origin (a shared "wet" latent drives
rain, humidity, pressure and wind) mapped onto the calibrated per origin x month mean/std and the
real quantiles; and the weather terms of the late / cancellation models."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops.datasets.synthetic.calibration import Calibration, derived_table
from mlops.datasets.synthetic.numerics import ar1_paths, interp_quantiles, monthly_curve, normal_cdf
from mlops.datasets.synthetic.schema import (
    DRIFT_TEMP_F,
    GAUSSIAN_WEATHER_VARS,
    KNOTS_TO_MPH,
    WEATHER_COLUMNS,
    WEATHER_DTYPES,
    WEATHER_FEATURES,
)
from mlops.datasets.synthetic.time_grid import TimeGrid, time_grid

# Reported visibility (statute miles) takes these values only.
VISIBILITY_LEVELS = np.array(
    [0.0, 0.06, 0.12, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
)


def weather_features(w: pd.DataFrame) -> np.ndarray:
    """(n, len(WEATHER_FEATURES)) design of the weather terms; expects no NaN."""
    return np.column_stack(
        [
            (w["precip"].to_numpy(float) > 0).astype(float),
            (10.0 - np.clip(w["visib"].to_numpy(float), 0, 10)) / 10.0,
            np.clip(w["wind_speed"].to_numpy(float), 0, 60) / 10.0,
            w["humid"].to_numpy(float) / 100.0,
            (w["pressure"].to_numpy(float) - 1015.0) / 10.0,
            np.maximum(w["temp"].to_numpy(float) - 75.0, 0.0) / 10.0,
        ]
    )


def weather_logit_terms(weather: dict[str, np.ndarray], logit: dict[str, Any]) -> np.ndarray:
    """sum_k beta_k * feature_k of each origin-hour, shape (n_origins, n_hours)."""
    shape = weather["temp"].shape
    columns = ("precip", "visib", "wind_speed", "humid", "pressure", "temp")
    frame = pd.DataFrame({k: weather[k].ravel() for k in columns})
    beta = np.array([logit["weather"][k] for k in WEATHER_FEATURES])
    return (weather_features(frame) @ beta).reshape(shape)


def weather_arrays(cal: Calibration, seed: int, grid: TimeGrid, drift: float) -> dict[str, np.ndarray]:
    """Hourly weather per origin, arrays of shape (n_origins, n_hours) (memoised; read-only)."""
    key = ("weather", int(seed), str(grid.days[0].date()), len(grid.days), len(grid.utc), float(drift))
    return derived_table(cal, key, lambda: simulate_weather(cal.weather, cal.origins, seed, grid, drift))


def simulate_weather(
    weather_params: dict[str, Any], origins: list[str], seed: int, grid: TimeGrid, drift: float
) -> dict[str, np.ndarray]:
    """Every weather variable per origin and UTC hour of the grid, shape (n_origins, n_hours),
    drawn from stream 1 of the seed."""
    n_hours = len(grid.utc)
    rng = np.random.default_rng([int(seed), 1])
    names = ["wet", *GAUSSIAN_WEATHER_VARS, "visib", "wind_dir"]
    latents = dict(zip(names, ar1_paths(rng, [weather_params["ar_phi"][v] for v in names], len(origins), n_hours)))
    gust_u = rng.random((len(origins), n_hours))
    ramp = drift * grid.frac[None, :]

    wet, precip = _precipitation(weather_params, origins, grid, ramp, latents["wet"])
    out = _gaussian_variables(weather_params, origins, grid, ramp, latents)
    out.update(_wind(weather_params, out["wind_speed"], latents["wind_dir"], gust_u))
    out["visib"] = _visibility(weather_params, wet, latents["visib"])
    out["precip"] = precip
    out["dewp"] = _dew_point(out["temp"], out["humid"])
    return out


def _precipitation(
    weather_params: dict[str, Any], origins: list[str], grid: TimeGrid, ramp: np.ndarray, wet_latent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(wet, precip): it rains where the wet latent exceeds the origin x month rain share (scaled
    by the drift); the amount is the real precip quantile at the exceedance's depth."""
    share = monthly_curve(np.array([weather_params["by_origin"][o]["precip_share"] for o in origins]), grid.month_pos)
    share = np.clip(share * np.maximum(1.0 + ramp, 0.0), 0.0, 0.95)
    u_wet = normal_cdf(wet_latent)
    wet = u_wet > 1.0 - share
    probs = np.asarray(weather_params["quantile_probs"], dtype=float)
    intensity = np.clip((u_wet - (1.0 - share)) / np.maximum(share, 1e-9), 0.0, 1.0)
    amount = interp_quantiles(probs, np.asarray(weather_params["precip_quantiles"]), intensity)
    return wet, np.where(wet, np.maximum(np.round(amount, 2), 0.01), 0.0)


def _gaussian_variables(
    weather_params: dict[str, Any], origins: list[str], grid: TimeGrid, ramp: np.ndarray, latents: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """temp, humid, pressure and wind_speed: the origin x month mean curve plus the daily cycle,
    plus std times the variable's latent mixed with the wet latent; rounded as in the data."""
    out: dict[str, np.ndarray] = {}
    hour = grid.local["hour"]

    def curve(var: str, stat: str) -> np.ndarray:
        table = np.array([weather_params["by_origin"][o][var][stat] for o in origins])
        return monthly_curve(table, grid.month_pos)

    for v in GAUSSIAN_WEATHER_VARS:
        a = float(weather_params["wet_loading"][v])
        z = a * latents["wet"] + math.sqrt(1 - a * a) * latents[v]
        diurnal = np.asarray(weather_params["diurnal"][v], dtype=float)
        mean = curve(v, "mean") + diurnal[hour][None, :]
        std = np.maximum(curve(v, "std"), 0.0)
        std = np.sqrt(np.maximum(std**2 - diurnal.var(), (0.3 * std) ** 2))  # the cycle is part of the spread
        if v == "temp":
            mean = mean + DRIFT_TEMP_F * ramp
        out[v] = mean + std * z
    out["temp"] = np.round(out["temp"], 2)
    out["humid"] = np.round(np.clip(out["humid"], 5.0, 100.0), 2)
    out["pressure"] = np.round(out["pressure"], 1)
    return out


def _wind(
    weather_params: dict[str, Any], wind_speed: np.ndarray, wind_dir_latent: np.ndarray, gust_u: np.ndarray
) -> dict[str, np.ndarray]:
    """wind_speed snapped to whole knots, wind_gust on the windiest hours (the real gust share),
    wind_dir in tens of degrees (0 when calm)."""
    probs = np.asarray(weather_params["quantile_probs"], dtype=float)
    knots = np.round(np.maximum(wind_speed, 0.0) / KNOTS_TO_MPH)
    speed = np.round(knots * KNOTS_TO_MPH, 5)
    gust_threshold = np.quantile(speed, 1.0 - float(weather_params["gust"]["share"])) if speed.shape[1] else 0.0
    ratio = interp_quantiles(probs, np.asarray(weather_params["gust"]["ratio_quantiles"]), gust_u)
    gust = np.where(
        (speed >= gust_threshold) & (knots > 0),
        np.round(np.round(speed * ratio / KNOTS_TO_MPH) * KNOTS_TO_MPH, 5),
        np.nan,
    )
    direction = interp_quantiles(probs, np.asarray(weather_params["wind_dir_quantiles"]), normal_cdf(wind_dir_latent))
    direction = np.round(direction / 10.0) * 10.0
    direction = np.where(knots > 0, np.clip(direction, 10.0, 360.0), 0.0)
    return {"wind_speed": speed, "wind_gust": gust, "wind_dir": direction}


def _visibility(weather_params: dict[str, Any], wet: np.ndarray, visib_latent: np.ndarray) -> np.ndarray:
    """The dry or wet real visibility quantile at the latent's level, snapped to reported values."""
    probs = np.asarray(weather_params["quantile_probs"], dtype=float)
    u_vis = normal_cdf(visib_latent)
    dry = interp_quantiles(probs, np.asarray(weather_params["visib_quantiles"]["dry"]), u_vis)
    rainy = interp_quantiles(probs, np.asarray(weather_params["visib_quantiles"]["wet"]), u_vis)
    return snap_visibility(np.where(wet, rainy, dry))


def snap_visibility(v: np.ndarray) -> np.ndarray:
    """The nearest reported visibility level."""
    idx = np.clip(np.searchsorted(VISIBILITY_LEVELS, v), 1, len(VISIBILITY_LEVELS) - 1)
    lo, hi = VISIBILITY_LEVELS[idx - 1], VISIBILITY_LEVELS[idx]
    return np.where(v - lo < hi - v, lo, hi)


def _dew_point(temp_f: np.ndarray, humid: np.ndarray) -> np.ndarray:
    """Dew point (F) from temperature and relative humidity (Magnus formula, in Celsius)."""
    tc = (temp_f - 32.0) / 1.8
    gamma = np.log(humid / 100.0) + 17.625 * tc / (243.04 + tc)
    return np.round((243.04 * gamma / (17.625 - gamma)) * 1.8 + 32.0, 2)


def generate_weather(
    calibration: Calibration, seed: int, start="2013-01-01", months: int = 12, drift: float = 0.0
) -> pd.DataFrame:
    """The hourly weather (weather.csv columns) of every origin over the range; the same weather
    that `generate` with the same arguments used for its delays."""
    grid = time_grid(start, months)
    weather = weather_arrays(calibration, seed, grid, drift)
    n_o, n_h = len(calibration.origins), len(grid.utc)
    data: dict[str, Any] = {"origin": np.repeat(np.asarray(calibration.origins, dtype=object), n_h)}
    for k in ("year", "month", "day", "hour"):
        data[k] = np.tile(grid.local[k], n_o)
    for k in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"):
        data[k] = weather[k].ravel().astype(np.float64)
    data["time_hour"] = np.tile(grid.utc_str, n_o)
    df = pd.DataFrame(data, columns=WEATHER_COLUMNS)
    return df.astype(WEATHER_DTYPES)
