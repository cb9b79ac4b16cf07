"""The synthetic flights: the calibration turned into numpy tables once per generate() call, then
whole days of flights drawn at a time (every draw vectorised), in chunks of whole days."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from mlops.datasets.synthetic.calibration import Calibration, derived_table
from mlops.datasets.synthetic.numerics import AliasSampler, QuantileKnots, normal_cdf, sigmoid
from mlops.datasets.synthetic.schema import DEFAULT_CHUNK_ROWS, FLIGHT_COLUMNS, LATE_THRESHOLD, SyntheticError
from mlops.datasets.synthetic.time_grid import TimeGrid, local_range, minutes_to_hhmm, time_grid
from mlops.datasets.synthetic.weather import weather_arrays, weather_logit_terms

# What each row of a day's uniforms is used for; the order is part of the output of a seed.
UNIFORM_USES = (
    "route",
    "hour",
    "minute",
    "late",
    "delay",
    "cancel",
    "divert",
    "divert_arr_time",
    "tail",
    "tail_missing",
    "flight",
    "carrier",
)


class FlightSampler:
    """Calibration turned into numpy tables once per generate() call."""

    def __init__(self, cal: Calibration, seed: int, grid: TimeGrid, drift: float):
        self.cal, self.seed, self.grid, self.drift = cal, int(seed), grid, float(drift)
        self._load_routes(cal)
        self._load_schedule(cal)
        self._load_delays(cal)
        self._load_tailnums(cal)
        self._load_weather_terms(cal)
        days = grid.days
        self.day_year = days.year.to_numpy().astype(np.int64)
        self.day_month = days.month.to_numpy().astype(np.int64)
        self.day_dom = days.day.to_numpy().astype(np.int64)
        self.day_ordinal = np.array([d.toordinal() for d in days.date], dtype=np.int64)

    def _load_routes(self, cal: Calibration) -> None:
        """Per-route arrays, the route | carrier sampler and the flight number | route sampler."""
        r = cal.routes
        self.route_carrier = np.asarray(r["carrier"], dtype=np.int64)
        self.route_origin = np.asarray(r["origin"], dtype=np.int64)
        self.route_dest = np.asarray(r["dest"], dtype=object)
        self.route_distance = np.asarray(r["distance"], dtype=np.int64)
        for k in ("air_time_mean", "air_time_std", "gain_mean", "gain_std"):
            setattr(self, k, np.asarray(r[k], dtype=float))
        self.block = np.asarray(r["block_minutes"], dtype=np.int64)
        self.flight_sampler = derived_table(cal, ("flights",), lambda: AliasSampler(r["flight_weights"]))
        k = self.flight_sampler.k
        self.flight_table = np.array(
            [fl + [fl[-1] if fl else 1] * (k - len(fl)) for fl in r["flights"]], dtype=np.int64
        )
        by_carrier = [np.flatnonzero(self.route_carrier == i) for i in range(len(cal.carriers))]
        width = max(max(len(x) for x in by_carrier), 1)
        self.carrier_routes = np.array(
            [np.pad(x, (0, width - len(x)), constant_values=x[0] if len(x) else 0) for x in by_carrier], dtype=np.int64
        )
        weight = np.asarray(r["weight"], dtype=float)
        self.route_sampler = derived_table(
            cal, ("routes",), lambda: AliasSampler([weight[x].tolist() for x in by_carrier])
        )

    def _load_schedule(self, cal: Calibration) -> None:
        """The carrier | month, hour | carrier and minute samplers."""
        carriers = cal.carriers
        self.carrier_names = np.asarray(carriers, dtype=object)
        self.origin_names = np.asarray(cal.origins, dtype=object)
        self.hour_sampler = derived_table(
            cal, ("hours",), lambda: AliasSampler([cal.schedule["hour_probs"][c] for c in carriers])
        )
        self.minute_sampler = derived_table(cal, ("minutes",), lambda: AliasSampler([cal.schedule["minute_probs"]]))
        self.carrier_sampler = derived_table(
            cal,
            ("carriers",),
            lambda: AliasSampler(np.array([cal.volume["carrier_by_month"][c] for c in carriers]).T.tolist()),
        )

    def _load_delays(self, cal: Calibration) -> None:
        """The late and cancellation logit tables and the delay quantiles."""
        carriers = cal.carriers
        d = cal.delay
        late_logit = d["logit"]
        self.offset_ch = np.array([late_logit["carrier_hour"][c] for c in carriers], dtype=float)
        self.gain_z = np.asarray(d["gain_z_quantiles"], dtype=float)
        # [month, origin]
        self.late_cell = np.array([late_logit["month_origin"][o] for o in cal.origins], dtype=float).T
        self.knots = QuantileKnots(d["quantile_probs"])
        self.late_q = np.array([d["late_excess_quantiles"][c] for c in carriers])
        self.on_q = np.array([d["on_time_quantiles"][c] for c in carriers])
        self.hour_scale = np.asarray(d["late_hour_scale"], dtype=float)
        cancel_logit = cal.cancellation["logit"]
        self.cancel_cell = np.array([cancel_logit["month_origin"][o] for o in cal.origins], dtype=float).T
        self.tail_missing = float(cal.cancellation["tailnum_missing_share"])
        self.divert = float(cal.cancellation["divert_share"])
        self.divert_arr = float(cal.cancellation["divert_arr_time_share"])

    def _load_tailnums(self, cal: Calibration) -> None:
        tails = [cal.tailnums[c] for c in cal.carriers]
        self.tail_sampler = derived_table(cal, ("tails",), lambda: AliasSampler([t["counts"] for t in tails]))
        kt = self.tail_sampler.k
        self.tail_table = np.array([t["tailnums"] + [None] * (kt - len(t["tailnums"])) for t in tails], dtype=object)

    def _load_weather_terms(self, cal: Calibration) -> None:
        """The weather terms (plus the drift ramp for late) of the late and cancellation logits,
        per origin and UTC hour, from the same weather generate_weather returns."""
        weather = weather_arrays(cal, self.seed, self.grid, self.drift)
        self.late_weather = weather_logit_terms(weather, cal.delay["logit"]) + self.drift * self.grid.frac[None, :]
        self.cancel_weather = weather_logit_terms(weather, cal.cancellation["logit"])

    def day_counts(self, n_rows: int) -> np.ndarray:
        """Flights per day of the grid: one multinomial (stream 2 of the seed) over month x weekday volume."""
        v = self.cal.volume
        days = self.grid.days
        w = (
            np.asarray(v["by_month"], dtype=float)[days.month.to_numpy() - 1]
            * np.asarray(v["by_weekday"], dtype=float)[days.dayofweek.to_numpy()]
        )
        rng = np.random.default_rng([self.seed, 2])
        return rng.multinomial(n_rows, w / w.sum())

    def _day_draws(self, day_index: np.ndarray, counts: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(uniforms by use, 2 rows of standard normals) for the flights of the days, each day from
        its own stream (seed, 3, day), so the rows of a day do not depend on the chunking."""
        n = int(counts.sum())
        uniforms = np.empty((len(UNIFORM_USES), n))  # one contiguous row of uniforms per use
        normals = np.empty((2, n))
        pos = 0
        for d, c in zip(day_index, counts):
            rng = np.random.default_rng([self.seed, 3, int(self.day_ordinal[d])])
            uniforms[:, pos : pos + c] = rng.random((len(UNIFORM_USES), c))
            normals[:, pos : pos + c] = rng.standard_normal((2, c))
            pos += c
        return dict(zip(UNIFORM_USES, uniforms)), normals

    def _schedule(self, day_index: np.ndarray, counts: np.ndarray, u: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(route, carrier, hour, minute, sched minute of day, day) of every flight, in schedule order."""
        day = np.repeat(day_index, counts)
        carrier = self.carrier_sampler.sample(self.day_month[day] - 1, u["carrier"])
        route = self.carrier_routes[carrier, self.route_sampler.sample(carrier, u["route"])]
        hour = self.hour_sampler.sample(carrier, u["hour"])
        minute = self.minute_sampler.sample(np.zeros(len(day), dtype=np.int64), u["minute"])
        sched = hour * 60 + minute
        # schedule order within each day: two stable radix sorts of 16-bit keys (O(n)) -
        # by minute of day, then by day
        order = np.argsort(sched.astype(np.uint16), kind="stable")
        rel_day = day[order] - day_index[0]
        if rel_day.max(initial=0) < 65536:
            order = order[np.argsort(rel_day.astype(np.uint16), kind="stable")]
        else:
            order = np.argsort(day * 1440 + sched, kind="stable")
        return tuple(a[order] for a in (route, carrier, hour, minute, sched, day))

    def _departure_delay(
        self,
        carrier: np.ndarray,
        hour: np.ndarray,
        month: np.ndarray,
        origin: np.ndarray,
        utc_idx: np.ndarray,
        u: dict[str, np.ndarray],
    ) -> np.ndarray:
        """dep_delay: late from the late model, then the delay | late or delay | on time quantile."""
        logit = self.offset_ch[carrier, hour] + self.late_cell[month - 1, origin] + self.late_weather[origin, utc_idx]
        late = u["late"] < sigmoid(logit)
        excess = self.knots.interp(self.late_q, u["delay"], carrier)
        on_time = self.knots.interp(self.on_q, u["delay"], carrier)
        return np.where(
            late,
            np.maximum(np.round(LATE_THRESHOLD + excess * self.hour_scale[hour]), LATE_THRESHOLD + 1),
            np.minimum(np.round(on_time), LATE_THRESHOLD),
        )

    def rows(self, day_index: np.ndarray, counts: np.ndarray) -> pd.DataFrame:
        """The flights of whole days (indexes into the grid's days), sorted by schedule."""
        u, normals = self._day_draws(day_index, counts)
        n = int(counts.sum())
        route, carrier, hour, minute, sched, day = self._schedule(day_index, counts, u)
        origin = self.route_origin[route]
        month = self.day_month[day]
        utc_idx = self.grid.local_hour_to_utc[day * 24 + hour]

        dep_delay = self._departure_delay(carrier, hour, month, origin, utc_idx, u)
        cancel_p = sigmoid(self.cancel_cell[month - 1, origin] + self.cancel_weather[origin, utc_idx])
        cancelled = u["cancel"] < cancel_p
        diverted = ~cancelled & (u["divert"] < self.divert)

        gain_z = self.knots.interp(self.gain_z, normal_cdf(normals[0]))
        arr_delay = dep_delay + np.round(self.gain_mean[route] + self.gain_std[route] * gain_z)
        correlated = 0.6 * normals[0] + 0.8 * normals[1]  # air time partly follows the arrival gain
        air_time = np.maximum(
            np.round(self.air_time_mean[route] + self.air_time_std[route] * correlated),
            np.maximum(self.air_time_mean[route] * 0.5, 15.0).round(),
        )
        sched_arr = (sched + self.block[route]) % 1440
        dep_time = minutes_to_hhmm(sched + dep_delay)
        arr_time = minutes_to_hhmm(sched_arr + arr_delay)
        arr_time = np.where(diverted & (u["divert_arr_time"] >= self.divert_arr), np.nan, arr_time)
        arr_delay = np.where(diverted, np.nan, arr_delay)
        air_time = np.where(diverted, np.nan, air_time)
        nan = np.full(n, np.nan)

        tailnum = self.tail_table[carrier, self.tail_sampler.sample(carrier, u["tail"])]
        tailnum = np.where(cancelled & (u["tail_missing"] < self.tail_missing), np.nan, tailnum).astype(object)
        flight = self.flight_table[route, self.flight_sampler.sample(route, u["flight"])]

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


def day_groups(counts: np.ndarray, chunk_rows: int) -> list[np.ndarray]:
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


def check_generate_arguments(n_rows: int, seed: int, start, months: int, chunk_rows: int) -> None:
    """SyntheticError naming the first bad argument of generate()."""
    if n_rows < 0 or int(n_rows) != n_rows:
        raise SyntheticError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if seed < 0 or int(seed) != seed:
        raise SyntheticError(f"seed must be a non-negative integer, got {seed!r}")
    if chunk_rows < 1:
        raise SyntheticError("chunk_rows must be positive")
    local_range(start, months)


def generate(
    calibration: Calibration,
    n_rows: int,
    seed: int,
    start="2013-01-01",
    months: int = 12,
    drift: float = 0.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Yields DataFrames of at most `chunk_rows` flights (flights.csv columns and dtypes), in
    schedule order, `n_rows` in total, local dates in [start, start + months) (so every
    time_hour lies in `time_range_utc(start, months)`). A chunk holds whole days unless one day
    alone exceeds chunk_rows. The same arguments give identical rows whatever chunk_rows is;
    delays depend on the weather of `generate_weather(calibration, seed, start, months, drift)`."""
    check_generate_arguments(n_rows, seed, start, months, chunk_rows)
    sampler = FlightSampler(calibration, int(seed), time_grid(start, months), drift)
    counts = sampler.day_counts(int(n_rows))
    for group in day_groups(counts, int(chunk_rows)):
        df = sampler.rows(group, counts[group])
        for lo in range(0, len(df), chunk_rows):
            yield df.iloc[lo : lo + chunk_rows].reset_index(drop=True) if len(df) > chunk_rows else df
