"""The artifact root in an object store, as on a cluster (configs/cluster.yaml: s3:// on KFP's
MinIO), against a real S3 API on 127.0.0.1 (moto's server, tests/support/s3_server.py) through
the locked s3fs/botocore: the storage layer, the dataset repository, the model registry, the step
cache and the Feast integration (registry, sources and apply record in the bucket).

Clients find the server as the pods find MinIO: AWS_ENDPOINT_URL and the keys in the environment.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest

from mlops import storage
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration

BUCKET = "mlpipeline"


@pytest.fixture(scope="module")
def s3():
    """One server per module; its endpoint and keys in os.environ for the module's tests. fsspec
    caches one S3FileSystem per set of arguments, which then keeps this endpoint: one server, and
    a fresh prefix per test."""
    with S3Server() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def root(s3) -> str:
    return f"s3://{BUCKET}/t-{uuid.uuid4().hex[:10]}/mlops"


def _keys(prefix: str) -> list[str]:
    """Every object under an s3:// prefix, asked of the server afresh (no listing cache)."""
    fs, path = storage.fs_and_path(prefix)
    fs.invalidate_cache()
    return sorted(p[len(path) :].lstrip("/") for p in fs.find(path))


# ---- mlops.storage ----------------------------------------------------------------------------
def test_storage_reads_writes_lists_and_hashes_on_s3(root, tmp_path):
    uri = f"{root}/dir/a.json"
    assert not storage.exists(uri) and storage.listdir(f"{root}/dir") == []
    storage.write_json_atomic(uri, {"b": 1, "a": [1, 2]})
    assert storage.read_json(uri) == {"a": [1, 2], "b": 1}
    storage.write_bytes_atomic(f"{root}/dir/sub/b.bin", b"\x00bytes")
    df = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", None]})
    storage.write_parquet_atomic(df, f"{root}/dir/t.parquet")
    assert storage.exists(uri) and storage.listdir(f"{root}/dir") == ["a.json", "sub", "t.parquet"]
    assert storage.read_bytes(f"{root}/dir/sub/b.bin") == b"\x00bytes"
    pd.testing.assert_frame_equal(pd.read_parquet(f"{root}/dir/t.parquet"), df)
    # A put replaces the whole object: a reader sees the old content or the new, never a mix.
    storage.write_json_atomic(uri, {"v": 2})
    assert storage.read_json(uri) == {"v": 2}

    # tree_hash: the same files give the same hash on s3 as on a local disk, and any change shows.
    local = tmp_path / "dir"
    storage.copy_tree(f"{root}/dir", str(local))
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
        "a.json",
        "sub/b.bin",
        "t.parquet",
    ]
    assert storage.tree_hash(f"{root}/dir") == storage.tree_hash(str(local))
    (local / "sub" / "b.bin").write_bytes(b"\x00bytes!")
    assert storage.tree_hash(f"{root}/dir") != storage.tree_hash(str(local))
    # a local tree into the bucket, as a step's output into an s3:// cache
    storage.copy_tree(str(local), f"{root}/copy")
    assert storage.tree_hash(f"{root}/copy") == storage.tree_hash(str(local))

    storage.remove(f"{root}/dir", recursive=True)
    assert not storage.exists(uri) and _keys(f"{root}/dir") == []


# ---- dataset repository -----------------------------------------------------------------------
def test_dataset_repository_ingests_into_an_s3_artifact_root(root):
    from mlops.config import load_config
    from mlops.datasets.ingest import ingest
    from mlops.datasets.repository import DatasetRepository
    from tests.support.fixtures import FLIGHTS_CONFIG

    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": root})
    raw = pd.DataFrame(
        {
            "year": [2013] * 4,
            "month": [1] * 4,
            "day": [1, 1, 2, 2],
            "dep_delay": [3.0, 40.0, -2.0, 16.0],
            "hour": [5, 6, 7, 8],
            "carrier": ["UA", "AA", "B6", "UA"],
            "origin": ["EWR", "LGA", "JFK", "EWR"],
            "dest": ["IAH", "MIA", "BQN", "ORD"],
            "distance": [1400, 1089, 1576, 719],
            "tailnum": ["N14228", "N619AA", "N804JB", "N39463"],
            "flight": [1545, 1141, 725, 1696],
            "time_hour": ["2013-01-01 05:00:00", "2013-01-01 06:00:00", "2013-01-02 07:00:00", "2013-01-02 08:00:00"],
        }
    )
    first = ingest(config, span="2013-01", raw=raw, include_feature_tables=False)
    assert first.created and first.dataset.uri == f"{root}/datasets/flights/versions/{first.dataset.id}"
    assert _keys(first.dataset.uri) == ["data.parquet", "manifest.json"]
    again = ingest(config, span="2013-01", raw=raw, include_feature_tables=False)
    assert not again.created and again.dataset.id == first.dataset.id  # content addressed, nothing rewritten

    repo = DatasetRepository(root)
    assert repo.names() == ["flights"] and [v.id for v in repo.versions("flights")] == [first.dataset.id]
    loaded = repo.load(repo.resolve("flights", "latest"))
    assert len(loaded) == 4 and loaded["is_delayed"].tolist() == [0, 1, 0, 1]
    # A version whose manifest (the commit point, written last) is missing is invisible.
    fs, _ = storage.fs_and_path(root)
    fs.pipe_file(storage.fs_and_path(f"{root}/datasets/flights/versions/flights-000000000000/data.parquet")[1], b"x")
    assert [v.id for v in DatasetRepository(root).versions("flights")] == [first.dataset.id]


# ---- model registry --------------------------------------------------------------------------
def _model_dir(base: Path, tag: str) -> Path:
    d = base / f"trainer-{tag}"
    (d / "serving_model" / "variables").mkdir(parents=True)
    (d / "serving_model" / "saved_model.pb").write_bytes(b"pb-" + tag.encode())
    (d / "serving_model" / "variables" / "variables.index").write_bytes(b"idx-" + tag.encode())
    (d / "model.tflite").write_bytes(b"tflite-" + tag.encode())
    (d / "training.json").write_text(json.dumps({"epochs": 1}))
    return d


def test_model_registry_registers_and_resolves_on_s3(root, tmp_path):
    from mlops.config import TaskType
    from mlops.registry.store import ModelRegistry

    registry = ModelRegistry(root, lock_timeout_s=10)

    def register(tag: str):
        return registry.register(
            "flights",
            str(_model_dir(tmp_path, tag)),
            metrics={"auc": 0.7},
            blessing={"blessed": True, "reason": "auc 0.7 >= 0.65"},
            dataset_versions=["flights-abc123def456"],
            config_hash="cfg",
            git_commit="deadbeef",
            task=TaskType.binary_classification,
            output_key="probability",
            features=[{"name": "distance", "dtype": "float"}],
        )

    v1, v2 = register("1"), register("2")
    assert (v1.version, v2.version) == (1, 2) and v2.uri == f"{root}/registry/flights/versions/2"
    assert "saved_model.pb" in storage.listdir(f"{v2.uri}/serving_model")
    registry.promote("flights", 1)
    registry.promote("flights", 2)
    assert registry.rollback("flights").to_version == 1

    fresh = ModelRegistry(root)  # another process's view: everything from the bucket
    resolved = fresh.resolve("flights")
    assert resolved.version == 1 and resolved.manifest["content_hash"] == v1.manifest["content_hash"]
    assert storage.read_bytes(f"{resolved.serving_model_uri}/saved_model.pb") == b"pb-1"
    assert fresh.resolve("flights@staging").version == 2
    assert fresh.aliases("flights") == {"production": 1, "staging": 2}
    assert not any(k.endswith(".lock") for k in _keys(f"{root}/registry"))  # the lock object is released


# ---- step cache ------------------------------------------------------------------------------
def test_step_cache_stores_and_restores_on_s3(root, tmp_path):
    from mlops.config import load_config
    from mlops.steps import FINGERPRINT_FILE, StepCache, run_cached
    from tests.support.fixtures import FLIGHTS_CONFIG

    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": root})
    data = tmp_path / "in"
    data.mkdir()
    (data / "rows.txt").write_text("rows")
    calls = []

    def work_into(out: str):
        def work():
            calls.append(out)
            Path(out, "sub").mkdir(parents=True, exist_ok=True)
            Path(out, "model.bin").write_bytes(b"weights")
            Path(out, "sub", "vocab.txt").write_text("a\nb\n")
            return {"model_file": f"{out}/model.bin", "auc": 0.7}

        return work

    def run(out: str):
        return run_cached(
            config,
            "trainer",
            "v1",
            sections=["model"],
            inputs={"rows": str(data)},
            outputs={"model": out},
            params={},
            work=work_into(out),
            log=lambda *_: None,
        )

    out1, out2 = str(tmp_path / "run1" / "model"), str(tmp_path / "run2" / "model")
    r1, cached1 = run(out1)
    assert not cached1 and calls == [out1]
    entries = _keys(f"{root}/cache/trainer")
    assert len({e.split("/", 1)[0] for e in entries}) == 1  # one entry, under its key
    assert sorted(e.split("/", 1)[1] for e in entries) == [
        f"model/{FINGERPRINT_FILE}",
        "model/model.bin",
        "model/sub/vocab.txt",
        "result.json",
    ]
    assert not any("/.tmp-" in e or e.startswith(".tmp-") for e in entries)  # the staging copy is gone

    r2, cached2 = run(out2)  # another pod: a fresh local output directory, restored from the bucket
    assert cached2 and calls == [out1]
    assert Path(out2, "model.bin").read_bytes() == b"weights" and Path(out2, "sub", "vocab.txt").read_text() == "a\nb\n"
    assert r2["model_file"] == f"{out2}/model.bin" and r2["auc"] == r1["auc"]
    key = entries[0].split("/", 1)[0]
    assert StepCache(config).restore("trainer", key, {"model": str(tmp_path / "run3")}) is not None
    assert storage.tree_hash(str(tmp_path / "run3")) == storage.tree_hash(out1)


def test_storage_sees_what_another_process_wrote_since_it_listed(root):
    """A long-running reader (model server, stream consumer) lists, another pod writes: the
    next listing and existence check show it (s3fs would keep its first listing for ever)."""
    import fsspec

    storage.write_json_atomic(f"{root}/versions/1/manifest.json", {"v": 1})
    assert storage.listdir(f"{root}/versions") == ["1"] and not storage.exists(f"{root}/versions/2/manifest.json")
    other_pod = fsspec.filesystem("s3", skip_instance_cache=True)
    other_pod.pipe_file(storage.fs_and_path(f"{root}/versions/2/manifest.json")[1], b'{"v": 2}')
    assert storage.listdir(f"{root}/versions") == ["1", "2"]
    assert storage.exists(f"{root}/versions/2/manifest.json")
    assert storage.read_json(f"{root}/versions/2/manifest.json") == {"v": 2}


# ---- Feast: registry, sources and the apply record in the bucket ------------------------------
# The serving side (Feast 0.67) owns every write: apply (twice: the second must be skipped by the
# apply record in the bucket), then materialize one day into Redis, read it back online and drop
# the project's Redis keys (the pipeline interpreter has no Redis client).
_SERVING_SIDE = """
import datetime as dt, json, sys
import redis
from mlops.config import load_config
from mlops.features import store
config = load_config(sys.argv[1], overrides=json.loads(sys.argv[2]))
applied, ran = store.apply_if_changed(config)
again = store.apply_if_changed(config)[1]
start = dt.datetime(2013, 2, 10, tzinfo=dt.UTC)
store.materialize(config, start=start, end=start + dt.timedelta(days=1))
row = json.loads(sys.argv[3])
online = store.online_features(config, [row])[0]
host, port = config.features.redis_url.split(":")
client = redis.Redis(host=host, port=int(port))
keys = list(client.scan_iter(match=b"*" + config.features.project.encode(), count=1000))
client.delete(*keys)
print(json.dumps({"ran": ran, "again": again, "views": sorted(applied["FeatureView"]), "online": online}, default=str))
"""


@pytest.fixture(scope="module")
def feast_in_bucket(s3, seed_root, redis_url):
    """The seeded datasets in the bucket, the feature sources built there by this interpreter
    (Feast-free), the repo applied and one day materialized by the serving interpreter."""
    from mlops.config import load_config
    from mlops.datasets.repository import DatasetRepository
    from mlops.features import store
    from tests.support.fixtures import FLIGHTS_CONFIG, SERVING_PY, run_python

    root = f"s3://{BUCKET}/feast-{uuid.uuid4().hex[:10]}/mlops"
    fs, path = storage.fs_and_path(root)
    fs.put(str(seed_root / "datasets"), f"{path}/datasets", recursive=True)
    overrides = {
        "artifact_root": root,
        "features.project": f"t{uuid.uuid4().hex[:12]}",
        "features.online_store": "redis",
        "features.redis_url": redis_url,
    }
    with pytest.MonkeyPatch.context() as mp:
        config = load_config(FLIGHTS_CONFIG, overrides=overrides)
        for var in store.feast_env(config):
            mp.setenv(var, "")  # feature_store() sets them: restored after the module
        versions = store.build_feature_sources(config)
        repo = DatasetRepository(root)
        flights = repo.load(repo.resolve("flights", "2013-02"))
        day = flights["time_hour"].dt.strftime("%Y-%m-%d") == "2013-02-10"  # the materialized day
        flight = flights[day & flights["tailnum"].isin(repo.load(versions["planes"])["tailnum"])].iloc[0]
        row = {k: flight[k] for k in ("origin", "dest", "carrier", "tailnum")} | {"time_hour": str(flight["time_hour"])}
        proc = run_python(
            SERVING_PY, _SERVING_SIDE, str(FLIGHTS_CONFIG), json.dumps(overrides), json.dumps(row), root=root
        )
        served = json.loads(proc.stdout.strip().splitlines()[-1])
        yield config, versions, served, flight


@pytest.mark.redis
def test_feast_registry_sources_and_apply_record_live_in_the_bucket(feast_in_bucket):
    from mlops.features import store

    config, versions, served, flight = feast_in_bucket
    root = config.artifact_root
    assert served["ran"] is True and served["again"] is False  # applied.json in the bucket skips a no-op apply
    assert set(served["views"]) == {"weather_hourly", "plane_attributes", "route_delay_stats", "carrier_delay_stats"}
    assert {"registry.db", "sources.json", "applied.json"} <= set(_keys(f"{root}/feast"))
    sources = store.read_sources(config)
    assert sources["weather"]["path"] == f"{versions['weather'].uri}/data.parquet"
    assert all(s["path"].startswith(f"{root}/datasets/") for s in sources.values())
    # Served online from Redis, materialized by Feast 0.67 from the s3:// sources.
    planes = pd.read_parquet(sources["planes"]["path"]).set_index("tailnum")
    assert served["online"]["seats"] == planes.loc[flight["tailnum"], "seats"]
    weather = pd.read_parquet(sources["weather"]["path"])
    day = weather[(weather["origin"] == flight["origin"]) & (weather["event_day"] == "2013-02-10")]
    assert served["online"]["temp"] == day.sort_values("time_hour")["temp"].iloc[-1]  # the day's latest report


@pytest.mark.redis
def test_feast_0_48_point_in_time_join_reads_registry_and_sources_from_the_bucket(feast_in_bucket):
    import feast

    from mlops.datasets.repository import DatasetRepository
    from mlops.features import store

    config, _, _, _ = feast_in_bucket
    assert feast.__version__ == "0.48.1"
    registry = f"{config.artifact_root}/feast/registry.db"
    before = storage.read_bytes(registry)
    fs = store.feature_store(config, online=False)
    assert fs.config.registry.path == registry
    repo = DatasetRepository(config.artifact_root)
    flights = repo.load(repo.resolve("flights", "2013-02")).sample(200, random_state=0)
    # Just before an hourly report: the join must take the previous hour's, never the next one.
    probe = flights.assign(time_hour=flights["time_hour"] - pd.Timedelta(seconds=1))
    out = store.historical_features(config, probe, store=fs)
    assert len(out) == 200 and list(out.index) == list(probe.index)

    weather = pd.read_parquet(store.read_sources(config)["weather"]["path"]).set_index(["origin", "time_hour"])
    at = flights["time_hour"]
    nxt = weather["temp"].reindex(pd.MultiIndex.from_arrays([flights["origin"], at])).to_numpy()
    prev = (
        weather["temp"].reindex(pd.MultiIndex.from_arrays([flights["origin"], at - pd.Timedelta(hours=1)])).to_numpy()
    )
    same_day = ((at - pd.Timedelta(hours=1)).dt.floor("D") == at.dt.floor("D")).to_numpy()
    got = out["temp"].to_numpy(float)
    ok = ~pd.isna(prev) & same_day
    assert ok.sum() > 100
    assert (got[ok] == prev[ok]).all()
    telling = ok & ~pd.isna(nxt) & (nxt != prev)
    assert telling.sum() > 20 and not (got[telling] == nxt[telling]).any()
    assert out["route_delay_mean_7d"].notna().mean() > 0.9 and out["seats"].notna().mean() > 0.5
    assert storage.read_bytes(registry) == before  # the pipeline side only reads


def test_sqlite_online_store_is_refused_with_an_object_store_artifact_root(root):
    from mlops.config import load_config
    from mlops.features import store
    from tests.support.fixtures import FLIGHTS_CONFIG

    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": root, "features.online_store": "sqlite"})
    with pytest.raises(store.FeatureStoreError) as err:
        store.feature_store(config)
    message = str(err.value)
    assert "\n" not in message and "features.online_store: sqlite" in message and root in message
    assert _keys(root) == []  # nothing written
