"""Redis outages on the serving side, on a private redis-server (tests.support.redis_server: its own
port, AOF with fsync on every write), paused with SIGSTOP, killed with SIGKILL and restarted:

* `mlops stream`'s consumer under a steady producer: it detects the hung broker (socket timeouts),
  reconnects with backoff logging one line per state change, never crashes, and every request id
  is answered exactly once across the pause, the kill and a restart from the AOF; a Redis
  restarted EMPTY loses its unanswered events, but the consumer creates its group again and
  answers what comes next.
* the payload log's Redis sink: log() stays microseconds while the sink is hung or dead, rows
  that cannot be written are counted (dropped / lost), memory stays bounded by queue_size, and
  logging resumes by itself when the sink is back.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid

import numpy as np
import pytest

from tests.support.redis_server import RedisServer, wait_until

pytestmark = [pytest.mark.serving_env, pytest.mark.integration]


@pytest.fixture
def server(tmp_path):
    with RedisServer(tmp_path / "redis") as s:
        yield s


def stream_names(url: str) -> dict:
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    return {
        "input_stream": f"{prefix}:in",
        "output_stream": f"{prefix}:out",
        "dead_letter_stream": f"{prefix}:dead",
        "group": f"{prefix}-group",
        "redis_url": url,
    }


def with_stream(config, **stream):
    spec = config.serving.stream.model_copy(update=stream)
    return config.model_copy(update={"serving": config.serving.model_copy(update={"stream": spec})})


def request(i: int) -> dict:
    return {
        "hour": i % 24,
        "distance": 200.0 + i,
        "temp": 20.0,
        "seats": 150,
        "carrier": "UA",
        "origin": "EWR",
        "dest": "LAX",
        "month": "3",
    }


class Producer(threading.Thread):
    """Sends r0..r{n-1} in small pipelines at a steady rate; a pipeline that fails (broker down)
    is sent again until Redis takes it, so some events may be in the stream twice (a reply lost
    after Redis applied them): the same request id twice, still one answer."""

    def __init__(self, server: RedisServer, stream: str, n: int, per_second: float, chunk: int = 10):
        super().__init__(name="producer", daemon=True)
        self.client = server.client(socket_timeout=0.5, socket_connect_timeout=0.5)
        self.stream, self.n, self.chunk, self.pause = stream, n, chunk, chunk / per_second
        self.sent = 0
        self.resent_chunks = 0

    def run(self) -> None:
        import redis

        for start in range(0, self.n, self.chunk):
            while True:
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for i in range(start, min(self.n, start + self.chunk)):
                        pipe.xadd(self.stream, {"request_id": f"r{i}", "data": json.dumps(request(i))})
                    pipe.execute()
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    self.resent_chunks += 1
                    time.sleep(0.05)
            self.sent = min(self.n, start + self.chunk)
            time.sleep(self.pause)


def start_consumer(consumer) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["stats"] = consumer.run()
        except BaseException as e:  # the test fails on it below
            outcome["error"] = e

    thread = threading.Thread(target=run, name="consumer", daemon=True)
    thread.start()
    return thread, outcome


def answered_ids(client, stream: str) -> list[str]:
    return [fields[b"request_id"].decode() for _, fields in client.xrange(stream)]


def test_stream_consumer_rides_out_a_paused_killed_and_restarted_broker(tiny_config, server, caplog):
    from serving.handle import ModelHandle
    from serving.stream import BROKER_STALL_S, StreamConsumer

    class SlowModelConsumer(StreamConsumer):
        """40 ms per micro-batch (a real model's time): a batch is usually in flight, read but
        not committed, when the broker goes away."""

        def _predict(self, *args):
            time.sleep(0.04)
            return super()._predict(*args)

    caplog.set_level(logging.INFO, logger="mlops.serving.stream")
    names = stream_names(server.url)
    block_ms = 100
    config = with_stream(tiny_config, **names, batch_size=20, block_ms=block_ms, claim_idle_ms=1000)
    consumer = SlowModelConsumer(config, ModelHandle.from_config(tiny_config, "flights@production"), consumer="c1")
    consumer.ensure_group()
    client = server.client(socket_timeout=5)
    n = 2400
    producer = Producer(server, names["input_stream"], n, per_second=200)
    producer.start()
    thread, outcome = start_consumer(consumer)
    try:
        wait_until(lambda: client.xlen(names["output_stream"]) >= 200, 30, "answers before the pause")

        # 1. Hung broker: the blocking read and the commits time out instead of waiting for ever.
        paused_at = time.time()
        server.pause()
        wait_until(lambda: consumer.outage.down, block_ms / 1000 + BROKER_STALL_S + 3, "the hang to be detected")
        detected_after = time.time() - paused_at
        time.sleep(2)
        assert thread.is_alive()
        server.resume()
        wait_until(lambda: not consumer.outage.down, 15, "the consumer to be back after SIGCONT")
        answered_before_kill = client.xlen(names["output_stream"])
        wait_until(lambda: client.xlen(names["output_stream"]) >= answered_before_kill + 100, 30, "answers again")

        # 2. Dead broker, then restarted from its AOF with a batch in flight.
        in_flight: list = []

        def batch_in_flight() -> bool:
            in_flight[:] = client.xpending_range(names["input_stream"], names["group"], "-", "+", 1000)
            return bool(in_flight)

        wait_until(batch_in_flight, 10, "a batch in flight", interval=0.001)
        answered_at_kill = client.xlen(names["output_stream"])
        server.kill()
        time.sleep(3)
        assert thread.is_alive()
        server.start()
        assert client.xlen(names["output_stream"]) >= answered_at_kill  # the AOF kept every answer
        wait_until(lambda: producer.sent == n and not producer.is_alive(), 40, "the producer to finish")
        wait_until(
            lambda: (
                len(set(answered_ids(client, names["output_stream"]))) == n
                and client.xpending(names["input_stream"], names["group"])["pending"] == 0
            ),
            40,
            "every request id answered",
        )
    finally:
        consumer.stop()
        thread.join(30)
        server.resume()
    assert "error" not in outcome, outcome.get("error")
    stats = outcome["stats"]

    ids = answered_ids(client, names["output_stream"])
    counts = collections.Counter(ids)
    assert set(counts) == {f"r{i}" for i in range(n)}
    assert [rid for rid, c in counts.items() if c > 1] == []  # exactly once, across pause, kill and restart
    assert client.xlen(names["dead_letter_stream"]) == 0
    in_flight_ids = {e["message_id"] for e in in_flight}
    in_flight_requests = [
        f[b"request_id"].decode() for eid, f in client.xrange(names["input_stream"]) if eid in in_flight_ids
    ]
    assert in_flight_requests and all(counts[r] == 1 for r in in_flight_requests)

    # One line when the broker went, one when it came back, per outage; not one per retry.
    lines = [r.getMessage() for r in caplog.records if r.name == "mlops.serving.stream"]
    gone = [m for m in lines if "unavailable" in m]
    back = [m for m in lines if " back after " in m]
    assert len(gone) == 2 and len(back) == 2, lines
    assert "TimeoutError" in gone[0] and "ConnectionError" in gone[1]
    retries_while_dead = int(back[1].rsplit("(", 1)[1].split()[0])
    assert retries_while_dead >= 3  # several reconnection attempts, logged once
    assert detected_after < block_ms / 1000 + BROKER_STALL_S + 1.5
    print(
        f"\nhang detected after {detected_after:.1f} s; {len(in_flight)} events in flight at the kill; "
        f"{retries_while_dead} attempts while dead; {producer.resent_chunks} producer re-sends; "
        f"{stats.duplicates} duplicate events; {len(ids)} answers for {n} ids"
    )
    client.close()


def test_stream_consumer_recreates_its_group_when_redis_restarts_empty(tiny_config, tmp_path, caplog):
    """No persistence: the restarted Redis has lost the stream and the group (and the events in
    them: not the consumer's to recover). The consumer does not crash; it answers what comes next."""
    from serving.handle import ModelHandle
    from serving.stream import StreamConsumer

    caplog.set_level(logging.INFO, logger="mlops.serving.stream")
    with RedisServer(tmp_path / "redis", persistent=False) as server:
        names = stream_names(server.url)
        config = with_stream(tiny_config, **names, batch_size=20, block_ms=100, claim_idle_ms=1000)
        consumer = StreamConsumer(config, ModelHandle.from_config(tiny_config, "flights@production"), consumer="c1")
        consumer.ensure_group()
        client = server.client(socket_timeout=5)
        thread, outcome = start_consumer(consumer)
        try:
            Producer(server, names["input_stream"], 50, per_second=1000).run()
            wait_until(lambda: client.xlen(names["output_stream"]) == 50, 20, "the first answers")
            server.kill()
            time.sleep(0.5)
            server.start()
            assert client.xlen(names["output_stream"]) == 0  # empty: the old answers are gone
            wait_until(lambda: client.exists(names["input_stream"]), 20, "the group created again")
            client.xadd(names["input_stream"], {"request_id": "after", "data": json.dumps(request(1))})
            wait_until(lambda: client.xlen(names["output_stream"]) == 1, 20, "the answer after the restart")
        finally:
            consumer.stop()
            thread.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert answered_ids(client, names["output_stream"]) == ["after"]
        client.close()


# ---- the payload log's Redis sink --------------------------------------------------------------
def log_rows(logger, n: int, offset: int) -> bool:
    return logger.log(
        model="flights",
        version="1",
        source="online",
        request_ids=[f"r{offset + i}" for i in range(n)],
        features={"hour": np.full(n, 7.0, np.float32), "carrier": np.array(["UA"] * n, dtype=object)},
        predictions=np.full(n, 0.5, np.float32),
    )


def test_payload_log_to_a_hung_or_dead_redis_never_waits_counts_drops_and_resumes(tmp_path, caplog):
    from serving.payload_log import PayloadLogger, RedisSink

    caplog.set_level(logging.INFO, logger="mlops.serving.payload_log")
    with RedisServer(tmp_path / "redis") as server:
        stream = "test:payloads"
        client = server.client(socket_timeout=5)
        queue_size = 500
        logger = PayloadLogger(
            RedisSink(server.url, stream, maxlen=100_000), queue_size=queue_size, flush_rows=50, flush_seconds=0.05
        )
        try:
            assert log_rows(logger, 10, 0)
            logger.flush()
            assert client.xlen(stream) == 10

            durations: list[float] = []
            accepted_while_down = 0

            def keep_logging(seconds: float, offset: int) -> None:
                nonlocal accepted_while_down
                end = time.monotonic() + seconds
                i = offset
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    accepted_while_down += log_rows(logger, 5, i)
                    durations.append(time.perf_counter() - t0)
                    i += 5
                    time.sleep(0.002)

            server.pause()  # hung: the writer's calls time out
            keep_logging(4, 1_000_000)
            paused = logger.stats()
            server.kill()  # dead: connection refused
            keep_logging(3, 2_000_000)
            dead = logger.stats()
            assert max(durations) < 0.05 and np.median(durations) < 0.001  # never waits for the sink
            assert paused["dropped_rows"] > 0 and dead["dropped_rows"] > paused["dropped_rows"]
            assert dead["queued_rows"] <= queue_size  # bounded memory whatever the outage's length
            assert dead["logged_rows"] == dead["written_rows"] + dead["queued_rows"] + dead["lost_rows"]

            server.start()  # back (from its AOF): the writer reconnects by itself
            before = client.xlen(stream)
            wait_until(lambda: logger.stats()["queued_rows"] == 0, 30, "the queue to drain")
            assert log_rows(logger, 7, 9_000_000)
            logger.flush()
            after = logger.stats()
            assert after["queued_rows"] == 0
            assert client.xlen(stream) >= before + 7
            last = client.xrevrange(stream, count=1)[0][1]
            assert last[b"request_id"] == b"r9000006"
        finally:
            logger.close(timeout=10)
            client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "mlops.serving.payload_log"]
    assert len([m for m in lines if "unavailable" in m]) == 1, lines  # one outage: one line, not one per retry
    assert len([m for m in lines if " back after " in m]) == 1, lines
    print(
        f"\nlog() while the sink was down: median {np.median(durations) * 1e6:.0f} us, max "
        f"{max(durations) * 1e3:.2f} ms over {len(durations)} calls; dropped {after['dropped_rows']}, "
        f"lost {after['lost_rows']}, written {after['written_rows']}"
    )
