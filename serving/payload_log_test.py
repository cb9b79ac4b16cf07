"""Payload logging: hour partitions with the logged values, a bounded queue that drops (counted)
without ever blocking log(), no partial files after SIGKILL, flush at exit, the Redis sink on the
real Redis, the no-op logger. The sink-agnostic tests run in both environments (pyarrow 10 /
numpy 1.26 and pyarrow 26 / numpy 2.4); Redis ones in the serving env (redis-py lives there)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from serving.payload_log import ParquetSink, PayloadLogger, payload_log_root, read_payload_logs
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

BOTH_ENVS = pytest.mark.parametrize(
    "env",
    [
        pytest.param("pipeline", id="pipeline-env"),
        pytest.param("serving", id="serving-env", marks=pytest.mark.serving_env),
    ],
)

T0 = dt.datetime(2024, 3, 5, 13, 59, 59, tzinfo=dt.UTC).timestamp()  # one second before 14:00 UTC


def features(n: int, offset: int = 0) -> dict[str, np.ndarray]:
    hour = np.arange(offset, offset + n, dtype=np.float32) % 24
    hour[::3] = np.nan  # a missing numeric stays NaN (the raw encoding)
    carrier = np.array([["UA", "DL", ""][i % 3] for i in range(n)], dtype=object)
    return {"hour": hour, "distance": np.full(n, 1000.0, np.float32), "carrier": carrier}


def log_call(
    logger,
    n: int,
    *,
    offset: int = 0,
    ts: float | None = None,
    model: str = "flights",
    version: str = "1",
    source: str = "online",
) -> bool:
    ids = [f"r{offset + i}" for i in range(n)]
    preds = (np.arange(offset, offset + n, dtype=np.float32) / 1e6).astype(np.float32)
    return logger.log(
        model=model,
        version=version,
        source=source,
        request_ids=ids,
        features=features(n, offset),
        predictions=preds,
        timestamp=ts,
    )


def config(root, **payload_log):
    from mlops.config import load_config

    return load_config(
        FLIGHTS_CONFIG,
        overrides={"artifact_root": str(root), **{f"serving.payload_log.{k}": v for k, v in payload_log.items()}},
    )


@BOTH_ENVS
def test_rows_land_in_their_hour_partitions_with_the_logged_values(env, tmp_path):
    import pandas as pd
    import pyarrow.dataset as ds

    logger = PayloadLogger.from_config(config(tmp_path, flush_seconds=60))
    assert log_call(logger, 5, offset=0, ts=T0, version="1")
    assert log_call(logger, 3, offset=5, ts=T0 + 2, version="2", source="batch")  # 14:00:01: next hour
    assert log_call(logger, 2, offset=8, ts=T0 + 2, model="other")
    logger.flush()
    assert logger.stats() == {
        "queued_rows": 0,
        "logged_rows": 10,
        "written_rows": 10,
        "dropped_rows": 0,
        "write_errors": 0,
        "lost_rows": 0,
    }
    logger.close()

    root = payload_log_root(config(tmp_path))
    assert root == f"{tmp_path}/payload_logs"
    layout = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert [p.rsplit("/", 1)[0] for p in layout] == [
        "flights/date=2024-03-05/hour=13",
        "flights/date=2024-03-05/hour=14",
        "other/date=2024-03-05/hour=14",
    ]
    assert all(p.rsplit("/", 1)[1].startswith("part-") and p.endswith(".parquet") for p in layout)

    df = read_payload_logs(root, "flights")
    assert list(df["request_id"]) == [f"r{i}" for i in range(8)]
    assert list(df["version"]) == ["1"] * 5 + ["2"] * 3
    assert list(df["source"]) == ["online"] * 5 + ["batch"] * 3
    assert set(df["model"]) == {"flights"}
    assert (
        list(df["timestamp"])
        == [pd.Timestamp(T0, unit="s", tz="UTC")] * 5 + [pd.Timestamp(T0 + 2, unit="s", tz="UTC")] * 3
    )
    first, second = features(5), features(3, offset=5)
    expected = {k: np.concatenate([first[k], second[k]]) for k in first}
    # raw types kept: float32 features with NaN for missing, strings
    assert df["hour"].dtype == np.float32 and df["prediction"].dtype == np.float32
    np.testing.assert_array_equal(df["hour"].to_numpy(), expected["hour"])
    assert list(df["carrier"]) == list(expected["carrier"])
    np.testing.assert_array_equal(df["prediction"].to_numpy(), np.arange(8, dtype=np.float32) / 1e6)

    # time range: only the 14:00 hour, and an end before everything
    assert list(read_payload_logs(root, "flights", start=T0 + 1)["request_id"]) == ["r5", "r6", "r7"]
    assert list(read_payload_logs(root, "flights", end="2024-03-05T13:59:59.5")["request_id"]) == [
        f"r{i}" for i in range(5)
    ]
    assert read_payload_logs(root, "flights", end=dt.datetime(2024, 3, 5, 13)).empty
    assert read_payload_logs(root, "nobody").empty

    # Plain Hive readers see the partitions (the `hour` feature is stored as feature_hour beside them).
    table = ds.dataset(f"{root}/flights", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 8 and {"date", "hour", "feature_hour"} <= set(table.column_names)
    assert len(pd.read_parquet(f"{root}/other")) == 2


@BOTH_ENVS
def test_writes_on_flush_rows_and_on_flush_seconds_without_flush_calls(env, tmp_path):
    by_rows = PayloadLogger(ParquetSink(str(tmp_path / "rows")), flush_rows=10, flush_seconds=3600)
    by_time = PayloadLogger(ParquetSink(str(tmp_path / "time")), flush_rows=10_000, flush_seconds=0.3)
    try:
        log_call(by_rows, 4)
        log_call(by_rows, 6, offset=4)  # reaches flush_rows
        log_call(by_time, 1)
        started = time.monotonic()
        while time.monotonic() - started < 5 and (
            by_rows.stats()["written_rows"] < 10 or by_time.stats()["written_rows"] < 1
        ):
            time.sleep(0.02)
        assert by_rows.stats()["written_rows"] == 10
        assert by_time.stats()["written_rows"] == 1
        assert time.monotonic() - started < 2  # by_time: about flush_seconds, not the hour of the other
    finally:
        by_rows.close()
        by_time.close()
    assert len(read_payload_logs(str(tmp_path / "rows"), "flights")) == 10


class GatedSink(ParquetSink):
    """The real parquet sink behind a gate: the writer thread blocks until the test opens it."""

    def __init__(self, root):
        super().__init__(root)
        self.gate = threading.Event()

    def write(self, payload):
        self.gate.wait()
        super().write(payload)


@BOTH_ENVS
def test_full_queue_drops_and_counts_while_log_never_blocks(env, tmp_path):
    sink = GatedSink(str(tmp_path))
    logger = PayloadLogger(sink, queue_size=100, flush_rows=10, flush_seconds=0.05)
    try:
        durations, accepted = [], []
        for i in range(1000):
            start = time.perf_counter()
            accepted.append(log_call(logger, 1, offset=i))
            durations.append(time.perf_counter() - start)
        stats = logger.stats()
        # The first 100 rows fill the queue (the blocked writer still holds its batch: it counts),
        # every later call is refused at once.
        assert accepted == [True] * 100 + [False] * 900
        assert stats["logged_rows"] == 100 and stats["dropped_rows"] == 900 and stats["queued_rows"] == 100
        assert stats["written_rows"] == 0
        print(
            f"\nlog() with the writer blocked: median {np.median(durations) * 1e6:.1f} us, "
            f"max {max(durations) * 1e3:.2f} ms"
        )
        assert max(durations) < 0.05  # never waits for the writer (50 ms: scheduling noise only)

        sink.gate.set()
        logger.flush()
        assert logger.stats()["written_rows"] == 100
        assert log_call(logger, 1, offset=5000)  # room again
    finally:
        sink.gate.set()
        logger.close()
    df = read_payload_logs(str(tmp_path), "flights")
    assert list(df["request_id"]) == [f"r{i}" for i in range(100)] + ["r5000"]
    assert not log_call(logger, 1)  # closed: refused and counted
    assert logger.stats()["dropped_rows"] == 901


@BOTH_ENVS
def test_log_costs_microseconds(env, tmp_path):
    """The request thread only queues references: cost per call, for one row and for 256 rows."""
    logger = PayloadLogger(ParquetSink(str(tmp_path)), queue_size=10_000_000, flush_rows=50_000)
    try:
        cost = {}
        for n in (1, 256):
            ids = [f"r{i}" for i in range(n)]
            feats = {f"f{j}": np.zeros(n, np.float32) for j in range(15)}  # flights-sized inputs
            preds = np.zeros(n, np.float32)
            calls = 20_000
            start = time.perf_counter()
            for _ in range(calls):
                logger.log(
                    model="flights", version="1", source="online", request_ids=ids, features=feats, predictions=preds
                )
            cost[n] = (time.perf_counter() - start) / calls * 1e6
        print(f"\nlog() cost per call: {cost[1]:.1f} us (1 row), {cost[256]:.1f} us (256 rows), 15 features")
        assert cost[1] < 100 and cost[256] < 100  # same work whatever the rows; generous for a busy CI box
        logger.flush(timeout=60)
        assert logger.stats()["written_rows"] == 20_000 * 257
    finally:
        logger.close()


@BOTH_ENVS
def test_bad_calls_raise_and_bad_sinks_count_lost_rows(env, tmp_path):
    logger = PayloadLogger(ParquetSink(str(tmp_path)), flush_seconds=0.05)
    with pytest.raises(ValueError, match="2 request ids for 3 predictions"):
        logger.log(
            model="m", version="1", source="online", request_ids=["a", "b"], features={}, predictions=np.zeros(3)
        )
    with pytest.raises(ValueError, match="feature 'hour' has 1 rows for 2 predictions"):
        logger.log(
            model="m",
            version="1",
            source="online",
            request_ids=["a", "b"],
            features={"hour": np.zeros(1)},
            predictions=np.zeros(2),
        )
    logger.close()

    # The log root is a file: every write attempt fails (a real OSError), the rows are lost and
    # counted, and log() kept returning at once.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    logger = PayloadLogger(ParquetSink(str(blocker)), flush_seconds=0.05)
    assert log_call(logger, 4)
    logger.flush()
    assert logger.stats() == {
        "queued_rows": 0,
        "logged_rows": 4,
        "written_rows": 0,
        "dropped_rows": 0,
        "write_errors": 3,
        "lost_rows": 4,
    }
    logger.close()


_KEEP_LOGGING = """
import sys, numpy as np
from serving.payload_log import PayloadLogger, ParquetSink
logger = PayloadLogger(ParquetSink(sys.argv[1]), flush_rows=20_000, flush_seconds=0.01, queue_size=200_000)
n = 20_000
feats = {"hour": np.arange(n, dtype=np.float32), "carrier": np.array(["UA"] * n, dtype=object),
         "note": np.array(["x" * 200] * n, dtype=object)}   # ~5 MB files: kills land mid-write
preds = np.zeros(n, np.float32)
i = 0
while True:
    if logger.log(model="flights", version="1", source="stream", request_ids=[f"{i}-{j}" for j in range(n)],
                  features=feats, predictions=preds):
        i += 1
"""


@BOTH_ENVS
@pytest.mark.integration
def test_sigkill_mid_write_leaves_no_partial_file(env, tmp_path):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    root = tmp_path / "logs"
    env_vars = dict(os.environ, PYTHONPATH=str(REPO))
    for round_ in range(3):  # three kills at different moments of the write cycle
        proc = subprocess.Popen([sys.executable, "-c", _KEEP_LOGGING, str(root)], env=env_vars, cwd=str(REPO))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(list(root.rglob("part-*.parquet"))) < 2 * (round_ + 1):
                time.sleep(0.01)
            time.sleep(0.013 * round_)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    files = list(root.rglob("part-*.parquet"))
    assert len(files) >= 6
    for f in files:  # every visible file is complete and whole batches
        assert pq.read_table(f).num_rows % 20_000 == 0
    total = ds.dataset(str(root / "flights"), format="parquet", partitioning="hive").count_rows()
    assert (
        len(read_payload_logs(str(root), "flights"))
        == total
        == 20_000 * sum(pq.ParquetFile(f).metadata.num_rows // 20_000 for f in files)
    )
    # Leftovers of a killed write, if any, are dot-files that readers skip (swept after an hour).
    assert all(p.name.startswith(".tmp-") for p in root.rglob("*") if p.is_file() and p not in files)


_EXIT_WITHOUT_CLOSE = """
import sys, numpy as np
from serving.payload_log import PayloadLogger, ParquetSink
logger = PayloadLogger(ParquetSink(sys.argv[1]), flush_rows=10_000, flush_seconds=3600)
logger.log(model="flights", version="1", source="batch", request_ids=["a", "b", "c"],
           features={"hour": np.zeros(3, np.float32)}, predictions=np.zeros(3, np.float32))
"""


@BOTH_ENVS
def test_rows_queued_at_interpreter_exit_are_written(env, tmp_path):
    subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_CLOSE, str(tmp_path)],
        check=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=str(REPO),
    )
    assert list(read_payload_logs(str(tmp_path), "flights")["request_id"]) == ["a", "b", "c"]


@BOTH_ENVS
def test_disabled_is_a_no_op(env, tmp_path):
    logger = PayloadLogger.from_config(config(tmp_path, enabled=False))
    assert not logger.enabled
    threads = threading.active_count()
    assert log_call(logger, 3) is False
    logger.flush()
    logger.close()
    assert set(logger.stats().values()) == {0}
    assert threading.active_count() == threads
    assert not (tmp_path / "payload_logs").exists()


@BOTH_ENVS
def test_keys_beside_features_and_logs_written_without_them_read_as_null(env, tmp_path):
    """Keys that are not features get their own columns (the config's event time as a UTC
    timestamp from ISO text or epoch seconds), a key that is a feature is stored once, and files
    written before keys were logged read back with null keys (typed as in the newer files)."""
    import pandas as pd

    logger = PayloadLogger.from_config(config(tmp_path, flush_seconds=60))
    assert log_call(logger, 3, offset=0, ts=T0)  # as every call was logged before: no keys
    logger.flush()
    ids = ["k0", "k1", "k2"]
    for keys, ts in (
        (
            {
                "tailnum": np.array(["N1", "", "N3"], dtype=object),
                "time_hour": np.array(["2013-02-01T05:00:00+00:00", "", "2013-02-01T07:30:00+00:00"], dtype=object),
                "carrier": np.array(["XX"] * 3, dtype=object),
            },
            T0 + 0.5,
        ),  # fmt: skip
        (
            {
                "tailnum": np.array(["N4", "N5", "N6"], dtype=object),
                "time_hour": np.array([1359694800.0, np.nan, 1359703800.0]),
            },
            T0 + 0.7,
        ),  # fmt: skip
    ):
        assert logger.log(
            model="flights",
            version="1",
            source="batch",
            request_ids=[f"{i}@{ts}" for i in ids],
            features=features(3),
            predictions=np.zeros(3, np.float32),
            timestamp=ts,
            keys=keys,
        )
    with pytest.raises(ValueError, match="key 'tailnum' has 2 rows for 3 predictions"):
        logger.log(model="flights", version="1", source="online", request_ids=ids, features=features(3),
                   predictions=np.zeros(3, np.float32), keys={"tailnum": ["a", "b"]})  # fmt: skip
    logger.close()
    assert logger.stats()["lost_rows"] == 0

    logged = read_payload_logs(payload_log_root(config(tmp_path)), "flights")
    assert len(logged) == 9 and "feature_carrier" not in logged.columns
    assert isinstance(logged["time_hour"].dtype, pd.DatetimeTZDtype)
    old, new = logged.iloc[:3], logged.iloc[3:]
    assert old["tailnum"].isna().all() and old["time_hour"].isna().all()
    assert new["tailnum"].tolist() == ["N1", None, "N3", "N4", "N5", "N6"]
    want = ["2013-02-01T05:00:00Z", None, "2013-02-01T07:30:00Z", "2013-02-01T05:00:00Z", None, "2013-02-01T07:30:00Z"]
    assert new["time_hour"].tolist() == [pd.NaT if t is None else pd.Timestamp(t) for t in want]
    assert new["carrier"].tolist() == ["UA", "DL", ""] * 2  # the feature, not the key of the same name


def test_redis_sink_needs_the_serving_env(tmp_path):
    """Pipeline env (no redis-py): the Redis sink refuses to start and says why."""
    from serving.redis_conn import RedisUnavailable

    with pytest.raises(RedisUnavailable, match="serving.payload_log.redis_url: the redis package is not installed"):
        PayloadLogger.from_config(config(tmp_path, sink="redis"))


@pytest.mark.serving_env
@pytest.mark.redis
def test_redis_sink_xadds_every_row_trimmed_to_maxlen(tmp_path, redis_url):
    import json

    import redis

    stream = f"test:payloads:{uuid.uuid4().hex}"
    client = redis.Redis(*redis_url.split(":"))
    logger = PayloadLogger.from_config(
        config(tmp_path, sink="redis", redis_url=redis_url, redis_stream=stream, redis_maxlen=1000, flush_rows=500)
    )
    try:
        assert log_call(logger, 3, ts=T0, version="7")
        logger.flush()
        entries = client.xrange(stream)
        assert len(entries) == 3
        first = {k.decode(): v.decode() for k, v in entries[0][1].items()}
        assert first == {
            "request_id": "r0",
            "model": "flights",
            "version": "7",
            "source": "online",
            "timestamp": repr(T0),
            "prediction": "0.0",
            "features": json.dumps({"hour": None, "distance": 1000.0, "carrier": "UA"}, separators=(",", ":")),
        }
        assert json.loads(entries[1][1][b"features"]) == {"hour": 1.0, "distance": 1000.0, "carrier": "DL"}

        # keys: the event time as ISO-8601 UTC text, from text or epoch seconds, calls of both in one write
        calls = {
            "t0": np.array(["2013-02-01T05:00:00+00:00", ""], dtype=object),
            "t1": np.array([1359703800.0, np.nan]),
        }
        for name, times in calls.items():
            assert logger.log(model="flights", version="7", source="online", request_ids=[f"{name}a", f"{name}b"],
                              features=features(2), predictions=np.zeros(2, np.float32),
                              keys={"tailnum": np.array(["N1", "N2"], dtype=object), "time_hour": times})  # fmt: skip
        logger.flush()
        keys = {
            fields[b"request_id"].decode(): json.loads(fields[b"keys"])
            for _, fields in client.xrange(stream)
            if b"keys" in fields
        }
        assert keys == {
            "t0a": {"tailnum": "N1", "time_hour": "2013-02-01T05:00:00+00:00"},
            "t0b": {"tailnum": "N2", "time_hour": None},
            "t1a": {"tailnum": "N1", "time_hour": "2013-02-01T07:30:00+00:00"},
            "t1b": {"tailnum": "N2", "time_hour": None},
        }

        for i in range(20):  # 6,000 rows more: MAXLEN ~ 1000 trims the stream
            log_call(logger, 300, offset=1000 + i * 300)
        logger.flush()
        stats = logger.stats()
        assert stats["written_rows"] == 6007 and stats["write_errors"] == 0
        assert 1000 <= client.xlen(stream) < 2000  # approximate trimming: whole macro nodes
    finally:
        logger.close()
        client.delete(stream)
        client.close()
