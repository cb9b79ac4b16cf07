"""Rolling aggregates: windows, empty days and no label leakage (pure pandas, no Feast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.config import RollingAggregateSpec, load_config
from mlops.datasets.ingest import aggregate_feature_names
from mlops.features.aggregates import DAY_START, rolling_aggregates
from tests.support.fixtures import FLIGHTS_CONFIG

SPEC = RollingAggregateSpec(name="delay", keys=["k"], value="v", windows_days=[1, 3], threshold=10)


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["k", "t", "v"]).assign(t=lambda d: pd.to_datetime(d["t"], utc=True))


@pytest.fixture
def tiny() -> pd.DataFrame:
    return frame(
        [
            ("a", "2013-01-01 05:00", 5.0),
            ("a", "2013-01-01 23:59", 20.0),
            ("a", "2013-01-02 00:00", 30.0),  # exactly at midnight: belongs to Jan 2
            ("a", "2013-01-05 12:00", 0.0),  # after a 2-day gap
            ("b", "2013-01-03 08:00", 11.0),
            ("b", "2013-01-03 09:00", np.nan),  # missing value: not counted
        ]
    )


def row(out: pd.DataFrame, key: str, day: str) -> pd.Series:
    sel = out[(out["k"] == key) & (out[DAY_START] == ts(day))]
    assert len(sel) == 1, f"expected one row for {key} {day}, got {len(sel)}"
    return sel.iloc[0]


def test_columns_match_ingest_names_and_types(tiny):
    out = rolling_aggregates(tiny, SPEC, "t")
    assert list(out.columns) == ["k", DAY_START, *aggregate_feature_names(SPEC)]
    assert str(out[DAY_START].dtype) == "datetime64[ns, UTC]"
    assert out["delay_count_3d"].dtype == np.int64 and out["delay_mean_3d"].dtype == np.float64


def test_one_row_per_day_from_first_day_plus_one_to_last_day_plus_one(tiny):
    out = rolling_aggregates(tiny, SPEC, "t")
    a = out[out["k"] == "a"][DAY_START].tolist()
    assert a == list(pd.date_range("2013-01-02", "2013-01-06", freq="D", tz="UTC"))
    b = out[out["k"] == "b"][DAY_START].tolist()
    assert b == [ts("2013-01-04")]
    assert not out.duplicated(["k", DAY_START]).any()


def test_windows_cover_the_days_strictly_before(tiny):
    out = rolling_aggregates(tiny, SPEC, "t")
    # Jan 2: 1-day and 3-day windows see Jan 1 only (5, 20); the midnight event of Jan 2 is excluded.
    r = row(out, "a", "2013-01-02")
    assert (r.delay_count_1d, r.delay_mean_1d, r.delay_share_over_1d) == (2, 12.5, 0.5)
    assert (r.delay_count_3d, r.delay_mean_3d) == (2, 12.5)
    # Jan 3: 1-day window = Jan 2 (30); 3-day window = Jan 1..2 (5, 20, 30).
    r = row(out, "a", "2013-01-03")
    assert (r.delay_count_1d, r.delay_mean_1d, r.delay_share_over_1d) == (1, 30.0, 1.0)
    assert r.delay_count_3d == 3 and r.delay_mean_3d == pytest.approx(55 / 3)
    assert r.delay_share_over_3d == pytest.approx(2 / 3)
    # Jan 5: 3-day window = Jan 2..4 -> only the Jan 2 event; Jan 1 has left the window.
    r = row(out, "a", "2013-01-05")
    assert (r.delay_count_3d, r.delay_mean_3d) == (1, 30.0)
    # Jan 6 (last event day + 1): the Jan 5 event.
    r = row(out, "a", "2013-01-06")
    assert (r.delay_count_1d, r.delay_mean_1d, r.delay_share_over_1d) == (1, 0.0, 0.0)
    # Missing values do not count.
    r = row(out, "b", "2013-01-04")
    assert (r.delay_count_1d, r.delay_mean_1d, r.delay_share_over_1d) == (1, 11.0, 1.0)


def test_days_without_events_in_the_window_have_count_zero_and_nan_mean(tiny):
    out = rolling_aggregates(tiny, SPEC, "t")
    for day in ("2013-01-04", "2013-01-05"):  # Jan 3 and Jan 4 had no event for key a
        r = row(out, "a", day)
        assert r.delay_count_1d == 0
        assert np.isnan(r.delay_mean_1d) and np.isnan(r.delay_share_over_1d)
    assert row(out, "a", "2013-01-04").delay_count_3d == 3  # Jan 1..3: the 3-day window is not empty


def test_without_threshold_there_is_no_share_and_several_keys_work():
    spec = RollingAggregateSpec(name="r", keys=["o", "d"], value="v", windows_days=[2])
    df = pd.DataFrame(
        {"o": ["x", "x", "y"], "d": ["p", "q", "p"], "v": [1, 2, 3], "t": pd.to_datetime(["2013-03-01 10:00"] * 3)}
    )  # naive: taken as UTC
    out = rolling_aggregates(df, spec, "t")
    assert list(out.columns) == ["o", "d", DAY_START, "r_mean_2d", "r_count_2d"]
    assert len(out) == 3 and set(out[DAY_START]) == {ts("2013-03-02")}
    assert out.set_index(["o", "d"])["r_mean_2d"].to_dict() == {("x", "p"): 1.0, ("x", "q"): 2.0, ("y", "p"): 3.0}


def test_timestamps_in_another_zone_are_bucketed_by_utc_day():
    spec = RollingAggregateSpec(name="z", keys=["k"], value="v", windows_days=[1])
    # 2013-01-01 20:00 in New York is 2013-01-02 01:00 UTC: the event belongs to UTC day Jan 2.
    df = pd.DataFrame({"k": ["a"], "v": [4.0], "t": [pd.Timestamp("2013-01-01 20:00", tz="America/New_York")]})
    out = rolling_aggregates(df, spec, "t")
    assert out[DAY_START].tolist() == [ts("2013-01-03")]


def _random_events(n=3000, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = ts("2013-01-01").value
    t = pd.to_datetime(rng.integers(start, start + 60 * 86400 * 10**9, n), utc=True)
    return pd.DataFrame({"k": rng.choice(["a", "b", "c"], n), "t": t, "v": rng.normal(10, 20, n).round(1)})


@pytest.mark.parametrize("change", ["modify", "add", "add_new_key"])
def test_no_leakage_events_on_day_d_change_no_row_up_to_day_d(change):
    spec = RollingAggregateSpec(name="delay", keys=["k"], value="v", windows_days=[1, 7, 28], threshold=15)
    df = _random_events()
    before = rolling_aggregates(df, spec, "t")
    day = ts("2013-01-20")
    changed = df.copy()
    if change == "modify":  # an outcome on day D becomes known / changes
        on_day = changed.index[(changed["t"] >= day) & (changed["t"] < day + pd.Timedelta(days=1))]
        assert len(on_day) > 0
        changed.loc[on_day, "v"] += 1000.0
    elif change == "add":
        changed.loc[len(changed)] = {"k": "a", "t": day + pd.Timedelta(hours=23, minutes=59), "v": 5000.0}
    else:
        changed.loc[len(changed)] = {"k": "zz", "t": day, "v": 5000.0}
    after = rolling_aggregates(changed, spec, "t")

    def upto(out):
        return out[out[DAY_START] <= day].sort_values(["k", DAY_START]).reset_index(drop=True)

    pd.testing.assert_frame_equal(upto(before), upto(after))
    # ...while the next day does see it (the test would be vacuous otherwise).
    nxt = day + pd.Timedelta(days=1)
    key = "zz" if change == "add_new_key" else "a"
    b = before[(before["k"] == key) & (before[DAY_START] == nxt)]
    a = after[(after["k"] == key) & (after[DAY_START] == nxt)]
    assert len(a) == 1 and (b.empty or not np.isclose(a["delay_mean_1d"].iloc[0], b["delay_mean_1d"].iloc[0]))


def test_matches_a_brute_force_computation():
    spec = RollingAggregateSpec(name="delay", keys=["k"], value="v", windows_days=[3, 10], threshold=15)
    df = _random_events(800, seed=1)
    out = rolling_aggregates(df, spec, "t")
    for _, r in out.iterrows():
        sub = df[df["k"] == r["k"]]
        for w in spec.windows_days:
            win = sub[(sub["t"] >= r[DAY_START] - pd.Timedelta(days=w)) & (sub["t"] < r[DAY_START])]["v"]
            assert r[f"delay_count_{w}d"] == len(win)
            if len(win):
                assert r[f"delay_mean_{w}d"] == pytest.approx(win.mean(), abs=1e-9)
                assert r[f"delay_share_over_{w}d"] == pytest.approx((win > 15).mean())
            else:
                assert np.isnan(r[f"delay_mean_{w}d"])


def test_flights_config_aggregates_are_fast_on_the_full_year_sized_input():
    """330k events (the size of nycflights13) in seconds, not minutes."""
    import time

    config = load_config(FLIGHTS_CONFIG)
    rng = np.random.default_rng(2)
    n = 330_000
    start = ts("2013-01-01").value
    df = pd.DataFrame(
        {
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "dest": rng.choice([f"D{i:03d}" for i in range(100)], n),
            "carrier": rng.choice([f"C{i}" for i in range(16)], n),
            "dep_delay": rng.normal(12, 40, n).round(),
            "time_hour": pd.to_datetime(rng.integers(start, start + 365 * 86400 * 10**9, n), utc=True).floor("h"),
        }
    )
    t0 = time.perf_counter()
    outs = [rolling_aggregates(df, spec, "time_hour") for spec in config.features.aggregates]
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, f"rolling aggregates took {elapsed:.1f} s"  # ~1 s here; catches a quadratic blow-up
    for spec, out in zip(config.features.aggregates, outs):
        assert set(aggregate_feature_names(spec)) <= set(out.columns)
        days = df.groupby(spec.keys)["time_hour"].agg(["min", "max"])
        expected = int(((days["max"].dt.floor("D") - days["min"].dt.floor("D")).dt.days + 1).sum())
        assert len(out) == expected  # every day from first event day + 1 to last event day + 1
