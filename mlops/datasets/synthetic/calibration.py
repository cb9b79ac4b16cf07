"""The calibration: the small, JSON-serialisable set of distributions the generator samples from,
and the per-calibration memo of the numpy tables derived from it."""

from __future__ import annotations

import dataclasses
import json
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops import storage
from mlops.datasets.synthetic.schema import CALIBRATION_FORMAT, SyntheticError


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
    # (the late model: logit P(late) = sum of the three terms, + drift * t); quantile_probs;
    # late_excess_quantiles / on_time_quantiles {carrier: [...]} (delay | late as excess over
    # 15 min before the hour scale, delay | on time); late_hour_scale [24]; gain_z_quantiles
    # (standardised arr_delay - dep_delay)
    delay: dict[str, Any]
    seasonality: dict[str, list[float]]  # observed late_share_by_month [12], cancel_share_by_month [12]
    cancellation: dict[str, Any]  # logit {...}, tailnum_missing_share, divert_share, divert_arr_time_share
    # by_origin {o: {var: {mean [12], std [12]}, precip_share [12]}}, ar_phi {var: phi},
    # wet_loading {var: a}, diurnal {var: [24] mean anomaly by local hour}, visib_quantiles {dry, wet},
    # precip_quantiles, wind_dir_quantiles, gust {share, ratio_quantiles}, quantile_probs
    weather: dict[str, Any]
    tailnums: dict[str, dict[str, list]]  # carrier -> {tailnums: [...], counts: [...]}

    def to_dict(self) -> dict[str, Any]:
        """An independent deep copy as plain JSON types."""
        return json.loads(self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
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
    def from_json(cls, text: str | bytes) -> Calibration:
        return cls.from_dict(json.loads(text))

    def save(self, uri: str) -> None:
        storage.write_bytes_atomic(uri, (self.to_json() + "\n").encode())

    @classmethod
    def load(cls, uri: str) -> Calibration:
        return cls.from_json(storage.read_bytes(uri))


def json_float(x: Any) -> float:
    """A JSON-safe rounded float."""
    x = float(x)
    if not math.isfinite(x):
        raise SyntheticError(f"non-finite calibration value {x}")
    return round(x, 6)


def json_floats(a) -> list[float]:
    """json_float of every element, flattened."""
    return [json_float(v) for v in np.asarray(a, dtype=float).ravel()]


_DERIVED: dict[int, tuple[weakref.ref, dict]] = {}


def derived_table(cal: Calibration, key: tuple, build: Callable[[], Any], limit: int = 8) -> Any:
    """Per-calibration memo of derived tables (alias tables, weather paths): tests and repeated
    generate() calls do not rebuild them. A Calibration is treated as immutable. At most `limit`
    tables of one kind (key[0]) are kept per calibration, the oldest dropped first."""
    for k in [k for k, (ref, _) in _DERIVED.items() if ref() is None]:
        del _DERIVED[k]
    entry = _DERIVED.get(id(cal))
    if entry is None or entry[0]() is not cal:
        entry = (weakref.ref(cal), {})
        _DERIVED[id(cal)] = entry
    store = entry[1]
    if key not in store:
        same_kind = [k for k in store if k[0] == key[0]]
        if len(same_kind) >= limit:
            del store[same_kind[0]]
        store[key] = build()
    return store[key]
