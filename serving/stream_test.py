"""Streaming on the real Redis at 127.0.0.1:6379 with the tiny registry model: predictions equal
the model's, malformed events dead-lettered with their reason, one answer per request id (twice
sent, re-delivered after a restart, claimed from a dead consumer, or processed by a slow consumer
after a takeover), a real `mlops stream` process killed with SIGKILL mid-stream and replaced, and
the throughput. Stream names are unique per test and deleted afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import numpy as np
import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO, SERVING_PY

pytestmark = [pytest.mark.serving_env, pytest.mark.redis]


@pytest.fixture
def streams(redis_url):
    """Unique stream names (every key the test makes starts with the prefix; all deleted after)."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:12]}"
    client = redis.Redis(*redis_url.split(":"))
    names = {
        "input_stream": f"{prefix}:in",
        "output_stream": f"{prefix}:out",
        "dead_letter_stream": f"{prefix}:dead",
        "group": f"{prefix}-group",
        "redis_url": redis_url,
    }
    yield client, names
    keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


def with_stream(config, **stream):
    spec = config.serving.stream.model_copy(update=stream)
    return config.model_copy(update={"serving": config.serving.model_copy(update={"stream": spec})})


@pytest.fixture
def handle(tiny_config):
    from serving.handle import ModelHandle

    return ModelHandle.from_config(tiny_config, "flights@production")  # v1: bias 0


def request_row(i: int) -> dict:
    return {
        "hour": i % 24,
        "distance": 200.0 + 37 * i,
        "temp": None if i % 5 == 0 else 30.0 + i % 40,
        "seats": 150,
        "carrier": ["UA", "DL", "B6"][i % 3],
        "origin": ["EWR", "JFK", "LGA"][i % 3],
        "dest": "LAX",
        "month": str(1 + i % 12),
    }


def expected(i: int) -> float:
    from tests.support.serving_models import tiny_probability

    row = request_row(i)
    cols = {k: [np.nan if v is None else v] for k, v in row.items()}
    return float(tiny_probability(cols, bias=0.0)[0])


def send(client, stream: str, events: list[dict]) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for fields in events:
        pipe.xadd(stream, fields)
    return pipe.execute()


def send_requests(client, stream: str, ids) -> None:
    send(client, stream, [{"request_id": f"r{i}", "data": json.dumps(request_row(i))} for i in ids])


def outputs(client, stream: str) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)]


def pending(client, names) -> int:
    return client.xpending(names["input_stream"], names["group"])["pending"]


def test_predictions_equal_the_tiny_model_and_are_payload_logged(tiny_config, handle, streams, tmp_path):
    from serving.payload_log import ParquetSink, PayloadLogger, read_payload_logs
    from serving.stream import StreamConsumer

    client, names = streams
    config = with_stream(tiny_config, **names, batch_size=64)
    send_requests(client, names["input_stream"], range(300))  # before the group exists: answered too
    logger = PayloadLogger(ParquetSink(str(tmp_path / "logs")))
    stats = StreamConsumer(config, handle, logger, consumer="c1").run(max_events=300)
    logger.close()

    out = outputs(client, names["output_stream"])
    assert [o["request_id"] for o in out] == [f"r{i}" for i in range(300)]
    np.testing.assert_allclose([float(o["prediction"]) for o in out], [expected(i) for i in range(300)], atol=1e-6)
    assert {(o["model"], o["version"]) for o in out} == {("flights", "1")}
    assert all(abs(float(o["timestamp"]) - time.time()) < 120 for o in out)
    assert stats.answered == 300 and stats.batches >= 5 and stats.dead_lettered == 0
    assert pending(client, names) == 0

    logged = read_payload_logs(str(tmp_path / "logs"), "flights")
    assert sorted(logged["request_id"]) == sorted(f"r{i}" for i in range(300))
    assert set(logged["source"]) == {"stream"} and set(logged["version"]) == {"1"}
    by_id = logged.set_index("request_id")
    assert by_id.loc["r7", "carrier"] == "DL" and by_id.loc["r7", "hour"] == 7
    np.testing.assert_allclose(by_id.loc["r7", "prediction"], expected(7), atol=1e-6)


def test_payload_log_stream_carries_each_events_entity_keys_and_event_time(tiny_config, handle, tmp_path):
    """On a private redis-server: events that send tailnum and time_hour (ISO text, epoch seconds)
    and events that do not, in one micro-batch; the Redis payload-log sink's `keys` field holds
    each event's own (time as ISO-8601 UTC, null when not sent); origin stays in `features` only."""
    from serving.payload_log import PayloadLogger, RedisSink
    from serving.stream import StreamConsumer
    from tests.support.redis_server import RedisServer

    with RedisServer(tmp_path / "redis", persistent=False) as server:
        client = server.client()
        names = {"input_stream": "in", "output_stream": "out", "dead_letter_stream": "dead", "group": "g"}
        config = with_stream(tiny_config, **names, redis_url=server.url, batch_size=64)
        times = ["2013-02-01T05:00:00Z", 1359698400, None]  # ISO text, epoch seconds (06:00 UTC), not sent
        events = []
        for i in range(30):
            row = request_row(i)
            if times[i % 3] is not None:
                row.update(tailnum=f"N{i:03d}", time_hour=times[i % 3])
            events.append({"request_id": f"k{i}", "data": json.dumps(row)})
        send(client, "in", events)
        logger = PayloadLogger(RedisSink(server.url, "payloads", 10_000, event_time="time_hour"))
        stats = StreamConsumer(config, handle, logger, consumer="c1").run(max_events=30)
        logger.close()
        assert stats.answered == 30 and stats.batches == 1

        logged = {m["request_id"]: m for m in outputs(client, "payloads")}
        client.close()
    assert sorted(logged) == sorted(f"k{i}" for i in range(30))
    want_time = {0: "2013-02-01T05:00:00+00:00", 1: "2013-02-01T06:00:00+00:00"}
    for i in range(30):
        message = logged[f"k{i}"]
        keys = json.loads(message["keys"])
        if i % 3 == 2:
            assert keys == {"tailnum": None, "time_hour": None}, message
        else:
            assert keys == {"tailnum": f"N{i:03d}", "time_hour": want_time[i % 3]}, message
        features = json.loads(message["features"])
        assert features["origin"] == request_row(i)["origin"] and "origin" not in keys
        assert message["source"] == "stream"


def test_malformed_events_go_to_the_dead_letter_stream_with_the_reason(tiny_config, handle, streams):
    from serving.stream import StreamConsumer

    client, names = streams
    good = json.dumps(request_row(1))
    bad = {
        "no-id": {"data": good},
        "bad-json": {"request_id": "bad-json", "data": "{hour: 7"},
        "not-object": {"request_id": "not-object", "data": "[1, 2]"},
        "unknown": {"request_id": "unknown", "data": json.dumps({**request_row(1), "colour": "red"})},
        "missing": {
            "request_id": "missing",
            "data": json.dumps({k: v for k, v in request_row(1).items() if k != "distance"}),
        },
        "wrong-type": {"request_id": "wrong-type", "data": json.dumps({**request_row(1), "hour": "seven"})},
        "nested": {"request_id": "nested", "data": json.dumps({**request_row(1), "temp": [1, 2]})},
        "no-data": {"request_id": "no-data", "hour": "7"},
        "bad-utf8": {"request_id": b"\xff\xfe", "data": good},
    }
    events = [{"request_id": "ok-1", "data": good}, *bad.values(), {"request_id": "ok-2", "data": good}]
    event_ids = send(client, names["input_stream"], events)
    stats = StreamConsumer(with_stream(tiny_config, **names), handle, consumer="c1").run(max_events=len(events))

    assert [o["request_id"] for o in outputs(client, names["output_stream"])] == ["ok-1", "ok-2"]
    dead = [fields for _, fields in client.xrange(names["dead_letter_stream"])]
    assert len(dead) == len(bad) == stats.dead_lettered
    reasons = {}
    for fields, (label, original), event_id in zip(dead, bad.items(), event_ids[1:-1]):
        assert fields[b"event_id"] == event_id and fields[b"input_stream"] == names["input_stream"].encode()
        assert fields[b"consumer"] == b"c1"
        for k, v in original.items():  # the original fields, byte for byte
            assert fields[b"event:" + k.encode()] == (v if isinstance(v, bytes) else v.encode())
        reasons[label] = fields[b"reason"].decode()
    assert "request_id" in reasons["no-id"] and "request_id" in reasons["bad-utf8"]
    assert "'data' is not valid JSON" in reasons["bad-json"]
    assert "'data' must be a JSON object, got list" in reasons["not-object"]
    assert "unknown input(s) ['colour']" in reasons["unknown"]
    assert "missing input(s) ['distance']" in reasons["missing"]
    assert "input 'hour': expected numbers, got 'seven'" in reasons["wrong-type"]
    assert "data field 'temp': expected a single value" in reasons["nested"]
    assert "missing field 'data'" in reasons["no-data"]
    assert dead[0].get(b"request_id") is None and dead[1][b"request_id"] == b"bad-json"
    assert pending(client, names) == 0  # dead letters are acknowledged too


def test_values_the_model_cannot_take_are_dead_lettered_naming_the_field(tiny_config, handle, streams):
    """The online server's value rules, event by event: non-finite numbers, text in a numeric
    field, a gap in a request field (allowed only in what the feature store provides)."""
    from serving.stream import StreamConsumer

    client, names = streams
    row = request_row(1)
    bad = {
        "beyond-fp32": (json.dumps({**row, "distance": 1e39}), "input 'distance': 1e+39 is not a finite number"),
        "infinity": ('{"hour": Infinity}', "'data' is not valid JSON"),  # JSON has no inf / NaN
        "nan": ('{"hour": NaN}', "'data' is not valid JSON"),
        "text-number": (json.dumps({**row, "distance": "far"}), "input 'distance': expected numbers, got 'far'"),
        "bool-number": (json.dumps({**row, "hour": True}), "input 'hour': expected numbers, got boolean"),
        "null-request-field": (json.dumps({**row, "carrier": None}), "input 'carrier': missing value"),
        "empty-request-field": (json.dumps({**row, "origin": ""}), "input 'origin': missing value"),
    }
    ok = {**row, "temp": None}  # a feature-store feature may be missing: answered
    events = [{"request_id": rid, "data": data} for rid, (data, _) in bad.items()]
    events.append({"request_id": "ok", "data": json.dumps(ok)})
    send(client, names["input_stream"], events)
    stats = StreamConsumer(with_stream(tiny_config, **names), handle, consumer="c1").run(max_events=len(events))

    assert [o["request_id"] for o in outputs(client, names["output_stream"])] == ["ok"]
    reasons = {f[b"request_id"].decode(): f[b"reason"].decode() for _, f in client.xrange(names["dead_letter_stream"])}
    assert set(reasons) == set(bad) and stats.dead_lettered == len(bad)
    for rid, (_, expected_reason) in bad.items():
        assert reasons[rid].startswith(expected_reason) or expected_reason in reasons[rid], (rid, reasons[rid])
        assert " at row " not in reasons[rid]  # one event is one row: no row number
    assert pending(client, names) == 0


def test_the_same_request_id_is_answered_once(tiny_config, handle, streams):
    from serving.stream import StreamConsumer

    client, names = streams
    config = with_stream(tiny_config, **names, batch_size=4)
    # r1 twice in one batch, r2 again three batches later (with other data: still the first answer)
    send_requests(client, names["input_stream"], [0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    send(client, names["input_stream"], [{"request_id": "r2", "data": json.dumps(request_row(5))}])
    stats = StreamConsumer(config, handle, consumer="c1").run(max_events=13)
    out = outputs(client, names["output_stream"])
    assert sorted(o["request_id"] for o in out) == sorted(f"r{i}" for i in range(11))
    assert float(next(o for o in out if o["request_id"] == "r2")["prediction"]) == pytest.approx(expected(2), abs=1e-6)
    assert stats.duplicates == 2 and stats.answered == 11 and pending(client, names) == 0


def test_restart_under_the_same_name_answers_its_unacknowledged_events(tiny_config, handle, streams):
    from serving.stream import StreamConsumer

    client, names = streams
    config = with_stream(tiny_config, **names, batch_size=8)
    consumer = StreamConsumer(config, handle, consumer="c1")
    consumer.ensure_group()
    send_requests(client, names["input_stream"], range(20))
    # A previous life of c1 read 12 events and died before answering them.
    client.xreadgroup(names["group"], "c1", {names["input_stream"]: ">"}, count=12)
    assert pending(client, names) == 12
    stats = consumer.run(max_events=20)
    assert sorted(o["request_id"] for o in outputs(client, names["output_stream"])) == sorted(
        f"r{i}" for i in range(20)
    )
    assert stats.answered == 20 and stats.claimed == 0 and pending(client, names) == 0


def test_idle_events_of_a_dead_consumer_are_claimed_and_a_slow_one_cannot_answer_twice(tiny_config, handle, streams):
    from serving.stream import StreamConsumer

    client, names = streams
    config = with_stream(tiny_config, **names, batch_size=8, claim_idle_ms=200)
    alive = StreamConsumer(config, handle, consumer="alive")
    alive.ensure_group()
    send_requests(client, names["input_stream"], range(20))
    taken = client.xreadgroup(names["group"], "slow", {names["input_stream"]: ">"}, count=5)[0][1]
    time.sleep(0.3)  # "slow" stays silent longer than claim_idle_ms
    stats = alive.run(max_events=20)
    assert stats.claimed == 5 and stats.answered == 20
    # "slow" wakes up and finishes the batch it had read: the request ids are answered already.
    late = StreamConsumer(config, handle, consumer="slow")
    late.process(taken)
    assert late.stats.duplicates == 5 and late.stats.answered == 0
    ids = [o["request_id"] for o in outputs(client, names["output_stream"])]
    assert sorted(ids) == sorted(f"r{i}" for i in range(20))
    assert pending(client, names) == 0


@pytest.mark.integration
def test_events_are_enriched_from_feast_and_a_lookup_failure_only_dead_letters_its_event(
    feast_online_root, tiny_model_dirs, streams
):
    """Real Feast online store: the tiny model takes temp and seats from it (weather, planes)."""
    import pandas as pd

    from mlops.config import load_config
    from mlops.datasets.repository import DatasetRepository
    from mlops.features.store import read_sources
    from serving.handle import ModelHandle
    from serving.stream import StreamConsumer
    from tests.support.serving_models import tiny_probability

    client, names = streams
    root, project = feast_online_root
    config = with_stream(
        load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "features.project": project}), **names
    )
    handle = ModelHandle.from_config(config, tiny_model_dirs[1], name="flights")
    assert {s.name for s in handle.current.enricher.store_features} == {"temp", "seats"}

    repo = DatasetRepository(config.artifact_root)
    flights = repo.load(repo.resolve(config.dataset.name, "latest"))
    planes = pd.read_parquet(read_sources(config)["planes"]["path"]).set_index("tailnum")
    f = flights[
        (flights["time_hour"] >= pd.Timestamp("2013-02-10", tz="UTC")) & flights["tailnum"].isin(planes.index)
    ].iloc[0]
    known = {
        "origin": f.origin,
        "dest": f.dest,
        "carrier": f.carrier,
        "tailnum": f.tailnum,
        "hour": float(f.hour),
        "month": str(f.month),
        "distance": float(f.distance),
        "time_hour": f.time_hour.isoformat(),
    }
    requests = {
        "known": known,
        "unknown-plane": {**known, "tailnum": "N0NE-UNKNOWN"},
        "bad-time": {**known, "time_hour": "not a time"},
        "time-out-of-range": {**known, "time_hour": 1e300},
    }
    send(client, names["input_stream"], [{"request_id": k, "data": json.dumps(v)} for k, v in requests.items()])
    stats = StreamConsumer(config, handle, consumer="c1").run(max_events=4)

    out = {o["request_id"]: float(o["prediction"]) for o in outputs(client, names["output_stream"])}
    assert set(out) == {"known", "unknown-plane"} and stats.dead_lettered == 2
    weather = handle.current.enricher.complete({k: [v] for k, v in known.items()})[0]["temp"][0]
    assert not np.isnan(weather)
    for rid, seats in (("known", planes.loc[f.tailnum, "seats"]), ("unknown-plane", np.nan)):  # documented default
        row = {**{k: [v] for k, v in requests[rid].items()}, "temp": [weather], "seats": [seats]}
        assert out[rid] == pytest.approx(float(tiny_probability(row)[0]), abs=1e-6)
    assert planes.loc[f.tailnum, "seats"] > 0  # so the store's value changes the prediction
    dead = {f[b"request_id"]: f[b"reason"].decode() for _, f in client.xrange(names["dead_letter_stream"])}
    # refused by the request check (serving.enrichment.request_times) before any lookup, naming the field
    assert dead[b"bad-time"].startswith("input 'time_hour': 'not a time' is not a time")
    assert dead[b"time-out-of-range"].startswith("input 'time_hour': 1e+300 is not a time")
    assert pending(client, names) == 0


def cli(names: dict, *args: str, **stream) -> list[str]:
    sets = {
        "serving.feature_lookup": False,
        "serving.payload_log.enabled": False,
        **{f"serving.stream.{k}": v for k, v in {**names, **stream}.items()},
    }
    return [
        str(SERVING_PY),
        "-m",
        "cli",
        "stream",
        "--config",
        str(FLIGHTS_CONFIG),
        "--model",
        "flights@production",
        *args,
        *[f"--set={k}={json.dumps(v)}" for k, v in sets.items()],
    ]


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the consumer exited ({proc.returncode}) while waiting for {what}:\n"
                f"{proc.stderr.read().decode()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.integration
def test_consumer_killed_mid_stream_then_replaced_answers_every_event_exactly_once(tiny_registry, streams):
    client, names = streams
    n = 6000
    env = dict(os.environ, PYTHONPATH=str(REPO), MLOPS_ARTIFACT_ROOT=str(tiny_registry), TF_CPP_MIN_LOG_LEVEL="2")
    send_requests(client, names["input_stream"], range(n))
    # An answer appears at the end of a batch: kill once the next batch is read. The kill can
    # still land after the batch's commit script was sent (Redis then runs it): nothing was in
    # flight, so kill another consumer, until one dies holding unacknowledged events.
    for attempt in range(5):
        first = subprocess.Popen(
            cli(names, "--consumer", f"first-{attempt}", batch_size=100, claim_idle_ms=1000),
            env=env,
            cwd=str(REPO),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            target = client.xlen(names["output_stream"]) + 300
            wait_for(lambda: client.xlen(names["output_stream"]) >= target, 120, "answers", first)  # noqa: B023
            wait_for(lambda: pending(client, names) > 0, 30, "a batch in flight", first)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        if pending(client, names):
            break
    answered_before = client.xlen(names["output_stream"])
    in_flight = pending(client, names)
    print(
        f"\nSIGKILL after {answered_before} answers (attempt {attempt + 1}); "
        f"{in_flight} events delivered but not acknowledged"
    )
    assert answered_before < n and in_flight > 0  # killed mid-stream, holding a batch

    second = subprocess.Popen(
        cli(names, "--consumer", "second", batch_size=100, claim_idle_ms=1000),
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: client.xlen(names["output_stream"]) >= n and pending(client, names) == 0,
            120,
            "every event answered",
            second,
        )
    finally:
        second.send_signal(signal.SIGTERM)  # graceful: finishes its batch, acks, prints its counters
        stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr.decode()[-3000:]
    stats = json.loads(stdout)
    assert stats["claimed"] == in_flight  # the dead consumer's batch, taken over
    ids = [o["request_id"] for o in outputs(client, names["output_stream"])]
    assert len(ids) == n and set(ids) == {f"r{i}" for i in range(n)}  # every id, exactly once
    assert client.xlen(names["dead_letter_stream"]) == 0


def test_cli_names_an_unreachable_redis_and_exits_non_zero(tiny_registry, streams):
    _, names = streams
    env = dict(os.environ, PYTHONPATH=str(REPO), MLOPS_ARTIFACT_ROOT=str(tiny_registry), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        cli({**names, "redis_url": "127.0.0.1:1"}), env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 75  # Unavailable: EX_TEMPFAIL, try again later
    assert "serving.stream.redis_url 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("Error:")]) == 1


@pytest.mark.integration
def test_throughput(tiny_config, handle, redis_url):
    from serving.stream import benchmark_throughput

    result = benchmark_throughput(with_stream(tiny_config, redis_url=redis_url), handle, events=5000)
    print(
        f"\nstream throughput: {result['events_per_s']:,.0f} events/s end to end ({result['events']} events in "
        f"{result['seconds']} s, mean micro-batch {result['mean_batch']})"
    )
    assert result["answered"] == 5000 and result["dead_lettered"] == 0
    assert result["events_per_s"] >= 1000
