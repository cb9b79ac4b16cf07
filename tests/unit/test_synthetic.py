"""Synthetic nycflights13 generator: determinism, schema, calibration to the real data, drift."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mlops.datasets import synthetic as syn
from mlops.errors import status_of

N = 20_000
SEED = 7


def late_share(df: pd.DataFrame) -> float:
    flown = df[df["dep_delay"].notna()]
    return float((flown["dep_delay"] > 15).mean())


def late_by(df: pd.DataFrame, key: str) -> pd.Series:
    flown = df[df["dep_delay"].notna()]
    return (flown["dep_delay"] > 15).groupby(flown[key]).mean()


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Exact equality of two frames (columns, dtypes, every value, NaN == NaN); row hashes,
    because pandas' assert_frame_equal compares object columns element by element (slow)."""
    assert list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes) and len(a) == len(b)
    assert (
        pd.util.hash_pandas_object(a, index=False).to_numpy() == pd.util.hash_pandas_object(b, index=False).to_numpy()
    ).all()


def gen(cal, n=N, seed=SEED, **kw) -> pd.DataFrame:
    return pd.concat(list(syn.generate(cal, n, seed, **kw)), ignore_index=True)


@pytest.fixture(scope="module")
def real():
    return syn.load_reference(("flights", "weather"))


@pytest.fixture(scope="module")
def cal(real):
    return syn.fit_calibration(real["flights"], real["weather"])


@pytest.fixture(scope="module")
def flights(cal):
    return gen(cal)


def test_same_seed_identical_whatever_the_chunking(cal, flights):
    assert_same(flights, gen(cal, chunk_rows=3_000))
    assert_same(syn.generate_weather(cal, SEED), syn.generate_weather(cal, SEED))


def test_different_seed_differs(cal, flights):
    other = gen(cal, seed=SEED + 1)
    assert len(other) == len(flights)
    assert not other.equals(flights)
    assert (other["dep_delay"].fillna(-999).to_numpy() != flights["dep_delay"].fillna(-999).to_numpy()).mean() > 0.5
    assert not syn.generate_weather(cal, SEED + 1)["temp"].equals(syn.generate_weather(cal, SEED)["temp"])


def test_columns_and_dtypes_match_real(real, cal, flights):
    assert list(flights.columns) == list(real["flights"].columns)
    assert flights.dtypes.equals(real["flights"].dtypes)
    weather = syn.generate_weather(cal, SEED, start="2013-01-01", months=1)
    assert list(weather.columns) == list(real["weather"].columns)
    assert weather.dtypes.equals(real["weather"].dtypes)
    # value semantics: hhmm clock times, NaN only where the real data has them, ISO UTC hours
    assert flights["time_hour"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z").all()
    assert (flights["sched_dep_time"] == flights["hour"] * 100 + flights["minute"]).all()
    assert flights["dep_time"].dropna().between(1, 2400).all() and (flights["dep_time"].dropna() % 100 < 60).all()
    cancelled = flights["dep_delay"].isna()
    assert 0.005 < cancelled.mean() < 0.06
    assert flights.loc[cancelled, ["dep_time", "arr_time", "arr_delay", "air_time"]].isna().all().all()
    assert (
        flights[["year", "month", "day", "carrier", "flight", "origin", "dest", "distance", "time_hour"]]
        .notna()
        .all()
        .all()
    )
    assert set(flights["carrier"]) <= set(real["flights"]["carrier"]) and set(flights["origin"]) == {
        "EWR",
        "JFK",
        "LGA",
    }
    assert flights["tailnum"].dropna().isin(set(real["flights"]["tailnum"].dropna())).all()


def test_overall_late_share_close_to_real(real, flights):
    assert abs(late_share(flights) - late_share(real["flights"])) < 0.03


def test_monthly_carrier_and_hour_patterns_preserved(real, flights):
    by_month = late_by(flights, "month")
    real_month = late_by(real["flights"], "month")
    assert real_month[7] > real_month[9]  # the real pattern: July worst, September best
    assert by_month[7] > by_month[9] + 0.05
    assert np.corrcoef(by_month.reindex(range(1, 13)), real_month.reindex(range(1, 13)))[0, 1] > 0.8
    # carriers: the best and the worst of the big real carriers keep their order
    sizes = real["flights"]["carrier"].value_counts()
    big = sizes[sizes > 20_000].index
    real_carrier = late_by(real["flights"], "carrier")[big]
    carrier = late_by(flights, "carrier")
    assert carrier[real_carrier.idxmax()] > carrier[real_carrier.idxmin()] + 0.08
    by_hour = late_by(flights, "hour")
    assert by_hour.loc[17:21].mean() > by_hour.loc[5:8].mean() + 0.15


def test_delays_depend_on_weather(cal, flights):
    weather = syn.generate_weather(cal, SEED).drop(columns=["year", "month", "day", "hour"])
    joined = flights[flights["dep_delay"].notna()].merge(weather, on=["origin", "time_hour"], how="left")
    assert joined["temp"].notna().all()  # every flight hour has weather at its origin
    late = joined["dep_delay"] > 15
    assert late[joined["precip"] > 0].mean() > late[joined["precip"] == 0].mean() + 0.08
    assert late[joined["visib"] < 5].mean() > late[joined["visib"] == 10].mean() + 0.03


def test_drift_shifts_late_share_and_weather_later_in_the_range(cal, flights):
    drifted = gen(cal, drift=1.0)
    first, last = flights["month"] == 1, flights["month"] >= 11
    d_first, d_last = drifted["month"] == 1, drifted["month"] >= 11
    assert abs(late_share(drifted[d_first]) - late_share(flights[first])) < 0.03  # t ~ 0: no drift yet
    assert late_share(drifted[d_last]) > late_share(flights[last]) + 0.08
    assert late_share(gen(cal, drift=-1.0)[d_last]) < late_share(flights[last]) - 0.05
    w0 = syn.generate_weather(cal, SEED)
    w1 = syn.generate_weather(cal, SEED, drift=1.0)
    dec = w0["month"] == 12
    assert w1.loc[dec, "temp"].mean() > w0.loc[dec, "temp"].mean() + 3
    assert (w1.loc[dec, "precip"] > 0).mean() > (w0.loc[dec, "precip"] > 0).mean()
    jan = w0["month"] == 1
    assert abs(w1.loc[jan, "temp"].mean() - w0.loc[jan, "temp"].mean()) < 0.5


def test_time_hour_within_requested_range_and_consistent_with_local_time(cal):
    df = gen(cal, n=5_000, start="2013-03-01", months=2)  # spans the switch to daylight time
    lo, hi = syn.time_range_utc("2013-03-01", 2)
    th = pd.to_datetime(df["time_hour"], utc=True)
    assert th.min() >= lo and th.max() < hi
    assert set(df["month"]) == {3, 4} and (df["year"] == 2013).all()
    local = pd.to_datetime(dict(year=df["year"], month=df["month"], day=df["day"], hour=df["hour"]))
    expected = local.dt.tz_localize(syn.TIMEZONE, ambiguous=np.ones(len(df), bool), nonexistent="shift_forward")
    assert (expected.dt.tz_convert("UTC") == th).all()
    weather = syn.generate_weather(cal, 1, start="2013-03-01", months=2)
    wt = pd.to_datetime(weather["time_hour"], utc=True)
    assert wt.min() == lo and wt.max() == hi - pd.Timedelta(hours=1)
    assert len(weather) == 3 * int((hi - lo) / pd.Timedelta(hours=1))  # every hour, every origin
    # rows come in schedule order
    key = df["day"] * 10_000 + df["sched_dep_time"] + df["month"] * 1_000_000
    assert key.is_monotonic_increasing


def test_chunks_concatenate_to_exactly_n_rows(cal):
    chunks = list(syn.generate(cal, 20_001, 3, chunk_rows=3_000))
    assert sum(len(c) for c in chunks) == 20_001
    assert all(0 < len(c) <= 3_000 for c in chunks)
    assert list(syn.generate(cal, 0, 3)) == []
    assert sum(len(c) for c in syn.generate(cal, 7, 3, chunk_rows=2)) == 7


def test_calibration_is_small_json_and_round_trips(cal, flights):
    text = cal.to_json()
    assert len(text) < 500_000
    back = syn.Calibration.from_json(text)
    assert back == cal
    d = json.loads(text)
    assert d["seasonality"]["late_share_by_month"][6] > d["seasonality"]["late_share_by_month"][8]
    assert_same(gen(back), flights)


def test_write_synthetic(tmp_path, cal):
    out = str(tmp_path / "synth")
    m = syn.write_synthetic(out, 5_000, SEED, calibration=cal, chunk_rows=2_000, progress=False)
    parts = sorted(os.listdir(os.path.join(out, "flights")))
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"] and m["rows"] == 5_000
    back = pd.concat([pd.read_parquet(os.path.join(out, "flights", p)) for p in parts], ignore_index=True)
    assert_same(back, gen(cal, n=5_000))
    assert_same(pd.read_parquet(os.path.join(out, "weather.parquet")), syn.generate_weather(cal, SEED))
    assert len(pd.read_parquet(os.path.join(out, "planes.parquet"))) > 3000
    assert syn.Calibration.load(os.path.join(out, "calibration.json")) == cal
    assert json.load(open(os.path.join(out, "manifest.json")))["rows"] == 5_000
    assert not [f for f in os.listdir(out) + parts if f.startswith(".tmp-")]
    # a smaller rewrite leaves no stale part behind
    syn.write_synthetic(out, 1_000, SEED, calibration=cal, progress=False)
    assert os.listdir(os.path.join(out, "flights")) == ["part-00000.parquet"]


def test_same_seed_writes_the_same_dataset_from_a_fresh_fit(tmp_path, real, cal):
    """Everything a seed determines, end to end: a second fit on the same data gives the same
    calibration, and writing twice (the second time from a separate copy of the calibration, so no
    memoised weather or sampler tables are shared) gives the same files, whatever the chunking."""
    refit = syn.fit_calibration(real["flights"], real["weather"])
    assert refit.to_json() == cal.to_json()
    first, second = tmp_path / "first", tmp_path / "second"
    m1 = syn.write_synthetic(str(first), 6_000, SEED, calibration=cal, chunk_rows=2_500, progress=False)
    m2 = syn.write_synthetic(
        str(second),
        6_000,
        SEED,
        calibration=syn.Calibration.from_json(refit.to_json()),
        chunk_rows=1_000,
        progress=False,
    )
    assert {k: v for k, v in m1.items() if k not in ("seconds", "flights", "chunk_rows")} == {
        k: v for k, v in m2.items() if k not in ("seconds", "flights", "chunk_rows")
    }

    def flights(root):
        parts = sorted((root / "flights").iterdir())
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    assert_same(flights(first), flights(second))
    for name in ("weather.parquet", "planes.parquet"):
        assert_same(pd.read_parquet(first / name), pd.read_parquet(second / name))
    assert (first / "calibration.json").read_bytes() == (second / "calibration.json").read_bytes()


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda cal: list(syn.generate(cal, -1, SEED)), "n_rows"),
        (lambda cal: list(syn.generate(cal, 10, -3)), "seed"),
        (lambda cal: list(syn.generate(cal, 10, SEED, chunk_rows=0)), "chunk_rows"),
        (lambda cal: syn.generate_weather(cal, SEED, months=0), "months"),
        (lambda cal: syn.Calibration.from_dict({**cal.to_dict(), "format_version": 99}), "calibration format"),
        (lambda cal: syn.fit_calibration(pd.DataFrame({"year": [2013]}), pd.DataFrame()), "flights table"),
    ],
)
def test_bad_arguments_are_invalid_input_naming_the_parameter(cal, call, names):
    with pytest.raises(syn.SyntheticError, match=names) as err:
        call(cal)
    assert status_of(err.value).exit_code == 2 and status_of(err.value).http == 400


@pytest.mark.parametrize("bad", [dict(n_rows=-1), dict(seed=-2), dict(chunk_rows=0), dict(months=0)])
def test_write_synthetic_with_a_bad_argument_changes_nothing(tmp_path, cal, bad):
    out = tmp_path / "synth"
    syn.write_synthetic(str(out), 1_000, SEED, calibration=cal, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = {"n_rows": 500, "seed": SEED + 1, **bad}
    with pytest.raises(syn.SyntheticError):
        syn.write_synthetic(str(out), args.pop("n_rows"), args.pop("seed"), calibration=cal, progress=False, **args)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the manifest is still there
    fresh = tmp_path / "fresh"
    with pytest.raises(syn.SyntheticError):
        syn.write_synthetic(str(fresh), -1, SEED, calibration=cal, progress=False)
    assert not fresh.exists()
