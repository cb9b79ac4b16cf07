"""Issue 11, online feature reads: the real server on its own Redis online store (a redis-server
on a free port, never the shared one on 6379), under a bounded closed-loop load (REST and gRPC),
while that Redis is paused (hung), resumed, killed (dead) and restarted empty; for both
serving.feature_store.on_failure policies.

Asserted: no request takes longer than the deadline + model time + a margin; no 500 / INTERNAL
and never the driver's text; `defaults` answers 200 with the degraded mark during the outage,
`fail` answers 503 (Retry-After) / UNAVAILABLE saying the feature store is unavailable; the
breaker opens and closes (metrics, one log line per change); the failure metrics count what the
clients saw; readiness follows the policy; the server recovers without a restart."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from serving.server_test import free_port, make_registry, metric, scrape, serve

pytestmark = [pytest.mark.serving_env, pytest.mark.integration]

DEADLINE_MS = 150
COOLDOWN_S = 1.0
MARGIN_S = 0.5  # model time (tiny model: ~1 ms) + HTTP + a shared, loaded 2-core machine
REQUEST = {  # what a client knows; temp and seats come from the store
    "origin": ["EWR"],
    "dest": ["ATL"],
    "carrier": ["UA"],
    "tailnum": ["N14228"],
    "hour": [7.0],
    "distance": [746.0],
    "month": ["2"],
    "time_hour": ["2013-02-10T07:00:00+00:00"],
}
DRIVER_TEXT = ("Error 111", "ConnectionError", "Timeout reading", "redis", "Connection refused")


class RedisProcess:
    """A redis-server of this test on `port`: pause (SIGSTOP), resume, kill, start (empty)."""

    def __init__(self, port: int, workdir: Path):
        self.port, self.workdir, self.proc = port, workdir, None

    def start(self) -> RedisProcess:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*argv, "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from tests.support.fixtures import service_up

        deadline = time.monotonic() + 10
        while not service_up(self.port):
            assert time.monotonic() < deadline and self.proc.poll() is None, "redis-server did not start"
            time.sleep(0.05)
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def redis_store(seed_root, tmp_path_factory, tiny_model_dirs):
    """(artifact root with the tiny registry and the Feast repo materialized into our Redis, project, Redis)."""
    from tests.support.serving_models import materialize_online

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    tmp = tmp_path_factory.mktemp("outage")
    redis = RedisProcess(free_port(), tmp).start()
    root = tmp / "artifacts"
    shutil.copytree(seed_root / "datasets", root / "datasets")
    project = f"t{uuid.uuid4().hex[:12]}"
    try:
        materialize_online(
            str(root), project, online_store="redis", overrides={"features.redis_url": f"127.0.0.1:{redis.port}"}
        )
        make_registry(root, tiny_model_dirs)
        yield root, project, redis
    finally:
        redis.kill()


class Load:
    """Closed-loop clients (3 REST, 1 gRPC) recording (phase, protocol, seconds, status, degraded,
    error text, Retry-After) per request, and a probe thread recording readiness and the breaker."""

    def __init__(self, server):
        self.server = server
        self.phase = "healthy"
        self.records: list[tuple] = []
        self.probes: list[tuple] = []  # (phase, readiness status, breaker state)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.rest, daemon=True) for _ in range(3)]
        self.threads += [threading.Thread(target=self.grpc, daemon=True), threading.Thread(target=self.probe)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def rest(self):
        import httpx

        body = {
            "inputs": [
                {"name": k, "datatype": "FP32" if k in ("hour", "distance") else "BYTES", "shape": [1], "data": v}
                for k, v in REQUEST.items()
            ]
        }
        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            while not self.stop.is_set():
                phase, started = self.phase, time.perf_counter()
                r = client.post("/v2/models/flights/infer", json=body)
                seconds = time.perf_counter() - started
                answer = r.json()
                degraded = (answer.get("parameters") or {}).get("degraded") if r.status_code == 200 else None
                error = answer.get("error", "") if r.status_code != 200 else ""
                self.records.append(
                    (phase, "rest", seconds, r.status_code, degraded, error, r.headers.get("retry-after"))
                )

    def grpc(self):
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

        inputs = []
        for k, v in REQUEST.items():
            if k in ("hour", "distance"):
                inputs.append(
                    pb.ModelInferRequest.InferInputTensor(
                        name=k, datatype="FP32", shape=[1], contents={"fp32_contents": v}
                    )
                )
            else:
                contents = {"bytes_contents": [x.encode() for x in v]}
                inputs.append(
                    pb.ModelInferRequest.InferInputTensor(name=k, datatype="BYTES", shape=[1], contents=contents)
                )
        request = pb.ModelInferRequest(model_name="flights", inputs=inputs)
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            stub = pbg.GRPCInferenceServiceStub(channel)
            while not self.stop.is_set():
                phase, started = self.phase, time.perf_counter()
                try:
                    response = stub.ModelInfer(request, timeout=10)
                    degraded = (
                        response.parameters["degraded"].string_param if "degraded" in response.parameters else None
                    )
                    record = ("OK", degraded, "", None)
                except grpc.RpcError as e:
                    trailing = dict(e.trailing_metadata() or ())
                    record = (e.code().name, None, e.details() or "", trailing.get("retry-after"))
                code, degraded, error, retry_after = record
                self.records.append((phase, "grpc", time.perf_counter() - started, code, degraded, error, retry_after))

    def probe(self):
        import httpx

        with httpx.Client(base_url=self.server.url, timeout=10) as client:
            while not self.stop.is_set():
                ready = client.get("/v2/health/ready").status_code
                state = metric(scrape(client), "mlops_feature_store_breaker_state", model="flights")
                self.probes.append((self.phase, ready, state))
                time.sleep(0.1)


def run_outage(tmp: Path, redis_store, policy: str) -> tuple[Load, dict, str]:
    import httpx

    root, project, redis = redis_store
    if redis.proc.poll() is not None:
        redis.start()
    sets = {
        "serving.feature_lookup": True,
        "features.project": project,
        "features.online_store": "redis",
        "features.redis_url": f"127.0.0.1:{redis.port}",
        "serving.payload_log.enabled": False,
        "serving.feature_store.timeout_ms": DEADLINE_MS,
        "serving.feature_store.on_failure": policy,
        "serving.feature_store.breaker_failures": 3,
        "serving.feature_store.breaker_cooldown_s": COOLDOWN_S,
    }
    server = serve(tmp, root, sets=sets, name=f"server-{policy}").ready()
    try:
        with Load(server) as load:
            for phase, seconds, action in [
                ("healthy", 1.5, None),
                ("hung", 3.0, lambda: redis.signal(signal.SIGSTOP)),
                ("resumed", 2.5, lambda: redis.signal(signal.SIGCONT)),
                ("dead", 3.0, redis.kill),
                ("restarted", 2.5, redis.start),
            ]:
                if action is not None:
                    action()
                load.phase = phase
                time.sleep(seconds)
        with httpx.Client(base_url=server.url) as client:
            values = scrape(client)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    return load, values, server.log_path.read_text(errors="replace")


def check_common(load: Load, values: dict, log: str) -> None:
    records = load.records
    assert len(records) > 100, f"only {len(records)} requests"
    slowest = max(r[2] for r in records)
    assert slowest <= DEADLINE_MS / 1000 + MARGIN_S, f"a request took {slowest:.3f} s"
    codes = {r[3] for r in records}
    assert not codes & {500, "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"}, codes
    for r in records:
        assert not any(t in r[5] for t in DRIVER_TEXT), r
    # healthy before and after: answered from the store
    for phase in ("healthy",):
        assert_answered_from_the_store([r for r in records if r[0] == phase])
    # the breaker opened during both outages and closed after each (probes every 0.1 s)
    states = [(p[0], p[2]) for p in load.probes]
    for outage in ("hung", "dead"):
        assert any(s == 2 for phase, s in states if phase == outage), (outage, states)
    for recovered in ("resumed", "restarted"):
        tail = [s for phase, s in states if phase == recovered][-5:]
        assert tail and all(s == 0 for s in tail), (recovered, states)
    assert metric(values, "mlops_feature_store_breaker_state", model="flights") == 0
    for reason in ("timeout", "unavailable", "breaker_open"):
        assert metric(values, "mlops_feature_store_failures_total", model="flights", reason=reason) > 0, reason
    # one log line per state change: open, half-open, closed... never one per request
    changes = [line for line in log.splitlines() if "feature store circuit breaker" in line]
    assert 4 <= len(changes) <= 30, changes
    assert not any("Traceback" in line for line in log.splitlines()), log[-3000:]
    # recovered without a restart: the last second of the restarted store is all plain answers
    end = [r for r in records if r[0] == "restarted"][-20:]
    assert end
    assert_answered_from_the_store(end)


def assert_answered_from_the_store(records: list) -> None:
    """Every answer a plain one, except that on a loaded 2-core machine a healthy read may now and
    then miss its deadline: at most 1 in 20 of them may be degraded by a timeout (nothing else)."""
    plain = [r for r in records if r[3] in (200, "OK") and r[4] is None]
    slow = [r for r in records if r[4] == "feature_store_timeout" or r[3] in (503, "UNAVAILABLE")]
    assert len(plain) + len(slow) == len(records), [r for r in records if r not in plain + slow]
    assert len(slow) <= max(1, len(records) // 20), slow


def test_defaults_policy_serves_degraded_answers_through_a_hung_and_a_dead_store(tmp_path, redis_store):
    load, values, log = run_outage(tmp_path, redis_store, "defaults")
    check_common(load, values, log)
    records = load.records
    assert {r[3] for r in records} <= {200, "OK"}
    degraded = [r for r in records if r[4] is not None]
    assert {r[4] for r in degraded} >= {"feature_store_timeout", "feature_store_breaker_open"}
    assert any(r[4] == "feature_store_unavailable" for r in degraded if r[0] == "dead")
    assert any(r[1] == "grpc" for r in degraded)
    # every degraded answer was counted, and nothing else
    assert metric(values, "mlops_feature_store_failures_total", model="flights") == len(degraded)
    assert all(p[1] == 200 for p in load.probes), "with `defaults` readiness stays 200"


def test_fail_policy_answers_503_with_retry_after_and_readiness_follows_the_breaker(tmp_path, redis_store):
    load, values, log = run_outage(tmp_path, redis_store, "fail")
    check_common(load, values, log)
    records = load.records
    assert {r[3] for r in records} <= {200, "OK", 503, "UNAVAILABLE"}
    refused = [r for r in records if r[3] in (503, "UNAVAILABLE")]
    assert any(r[1] == "rest" for r in refused) and any(r[1] == "grpc" for r in refused)
    for r in refused:
        assert r[5].startswith("the feature store is unavailable ("), r
        assert r[6] is not None and int(r[6]) >= 1, r  # Retry-After header / retry-after trailer
    assert all(r[4] is None for r in records)  # no degraded answers with `fail`
    assert metric(values, "mlops_feature_store_failures_total", model="flights") == len(refused)
    # not ready while the breaker is open (and only then, give or take a probe interval)
    assert any(ready == 503 and state == 2 for _, ready, state in load.probes)
    assert all(ready == 200 for phase, ready, _ in load.probes if phase == "healthy")
