"""The local rollout, end to end: three real model servers (`python -m serving` under the serving
interpreter, on loopback) of three registry versions built from tiny models of different quality,
the real splitter (`python -m serving.splitter`) in front, synthetic labelled requests, and
`mlops deploy evaluate` deciding from the payload logs + traffic log, recording in ML Metadata and
moving the aliases. Canary ratio, A/B stickiness and shadow answers are checked on the way.

Quality: labels are 1[z > 1.5] with 10 % flipped, z the tiny models' logit without bias. The
champion (bias -0.5) misclassifies z in (0.5, 1.5); the better challenger (bias -1.5) only the
flips; the worse one (bias +0.5) z in (-0.5, 1.5)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from mlops.envs import SERVING, interpreter
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

BIASES = {1: -0.5, 2: -1.5, 3: 0.5}  # champion, better, worse
N_REQUESTS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, argv: list[str], log: Path, url: str):
        self.url, self.log_path = url, log
        self._log = open(log, "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def ready(self, path: str = "/v2/health/ready", timeout: float = 240) -> Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.proc.args[:4]} exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"not ready in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, grace: float = 30) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    """A registry (v1 production, v2 better, v3 worse) and one running server per version."""
    if not os.path.exists(interpreter(SERVING)):
        pytest.skip("the serving environment is missing (make setup)")
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import build_tiny_model, register

    tmp = tmp_path_factory.mktemp("rollout")
    root = tmp / "artifacts"
    features = [{"name": n, "dtype": "float"} for n in ("hour", "distance", "temp", "seats")] + [
        {"name": n, "dtype": "string"} for n in ("carrier", "origin", "dest", "month")
    ]
    for version, bias in BIASES.items():
        register(root, "flights", build_tiny_model(str(tmp / f"v{version}"), bias=bias), features=features)
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    servers = {}
    for version in BIASES:
        port = free_port()
        argv = [interpreter(SERVING), "-m", "serving", "--config", str(FLIGHTS_CONFIG), "--model", f"flights@{version}"]
        argv += ["--http_port", str(port), "--grpc_port", str(free_port())]
        for key, value in {
            "artifact_root": str(root),
            "serving.feature_lookup": False,
            "serving.reload_interval_s": 0,
            "serving.payload_log.path": str(tmp / "payload_logs"),
            "serving.payload_log.flush_seconds": 0.2,
        }.items():
            argv += ["--set", f"{key}={json.dumps(value)}"]
        servers[version] = Process(argv, tmp / f"server{version}.log", f"http://127.0.0.1:{port}")
    try:
        for server in servers.values():
            server.ready()
        yield {"tmp": tmp, "root": root, "servers": servers}
    finally:
        for server in servers.values():
            server.stop()


def splitter(rollout, name: str, challenger: int, *args: str) -> Process:
    port = free_port()
    log = rollout["tmp"] / f"{name}.traffic.jsonl"
    argv = [interpreter(SERVING), "-m", "serving.splitter", "--port", str(port), "--traffic-log", str(log)]
    argv += ["--champion", rollout["servers"][1].url, "--challenger", rollout["servers"][challenger].url, *args]
    proc = Process(argv, rollout["tmp"] / f"{name}.log", f"http://127.0.0.1:{port}").ready("/v2/health/live", 60)
    proc.traffic_log = log
    return proc


def synthetic(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = {
        "hour": rng.uniform(0, 23, n),
        "distance": rng.uniform(100, 2500, n),
        "temp": rng.uniform(20, 90, n),
        "seats": rng.uniform(50, 300, n),
        "carrier": rng.choice(["UA", "DL", "AA", "B6"], n),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n),
        "dest": rng.choice(["ATL", "LAX", "BOS"], n),
        "month": rng.choice([str(m) for m in range(1, 13)], n),
    }
    z = 0.1 * rows["hour"] - 0.0002 * rows["distance"] + 0.01 * rows["temp"]
    z += 0.3 * (rows["carrier"] == "UA") + 0.2 * (rows["origin"] == "EWR")
    labels = (z > 1.5).astype(int) ^ (rng.random(n) < 0.1)
    requests = []
    for i in range(n):
        inputs = [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v[i], str) else "FP32", "data": [v[i].item()]}
            for k, v in rows.items()
        ]
        requests.append({"id": f"s{seed}-{i}", "inputs": inputs})
    return requests, labels.astype(int)


def send(url: str, requests: list[dict], headers=None) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30) as client:

        def post(body):
            return client.post("/v2/models/flights/infer", json=body, headers=headers(body) if headers else None)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, requests))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    return answers


def wait_for_payload_rows(rollout, request_ids: set[str], versions: set[str], timeout: float = 20) -> None:
    from serving.payload_log import read_payload_logs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_payload_logs(str(rollout["tmp"] / "payload_logs"), "flights")
        seen = {(r, v) for r, v in zip(rows["request_id"], rows["version"].astype(str)) if r in request_ids}
        if {r for r, _ in seen} >= request_ids and {v for _, v in seen} >= versions:
            return
        time.sleep(0.2)
    pytest.fail("payload logs did not show every request in time")


def evaluate(rollout, challenger: int, labels_path: Path, traffic_log: Path) -> tuple[int, dict]:
    from cli.main import cli as mlops

    result = CliRunner().invoke(
        mlops,
        ["deploy", "evaluate", "flights", "--challenger", str(challenger), "--labels", str(labels_path)]
        + ["--traffic-log", str(traffic_log), "--payload-logs", str(rollout["tmp"] / "payload_logs")]
        + ["--metric", "error_rate", "--latency-slack-ms", "200", "--run-id", f"rollout-{challenger}"]
        + ["--set", f"artifact_root={json.dumps(str(rollout['root']))}"],
    )
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.stdout)


def write_labels(path: Path, requests, labels) -> Path:
    path.write_text(
        "".join(json.dumps({"request_id": r["id"], "label": int(y)}) + "\n" for r, y in zip(requests, labels))
    )
    return path


def test_canary_split_then_a_better_model_is_promoted(rollout):
    from mlops.metadata.store import open_store
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import FLIGHTS_CONFIG as CONFIG

    proc = splitter(rollout, "canary", 2, "--mode", "canary", "--percent", "40", "--seed", "7")
    try:
        requests, labels = synthetic(N_REQUESTS, seed=1)
        answers = send(proc.url, requests)
    finally:
        proc.stop()
    versions = [a.json()["model_version"] for a in answers]
    assert [a.headers["x-mlops-model-version"] for a in answers] == versions  # each answer names its version
    share = versions.count("2") / len(versions)
    assert abs(share - 0.40) < 0.08, share  # 4+ standard deviations at n=400
    assert set(versions) == {"1", "2"}
    wait_for_payload_rows(rollout, {r["id"] for r in requests}, {"1", "2"})

    code, result = evaluate(
        rollout, 2, write_labels(rollout["tmp"] / "labels1.jsonl", requests, labels), proc.traffic_log
    )
    assert (code, result["action"]) == (0, "promote"), result
    assert result["difference"] > 0 and result["ci_low"] > 0 and not result["paired"]
    assert result["champion"]["latency_p99_ms"] > 0 and result["challenger"]["labelled_rows"] >= 100
    assert ModelRegistry(str(rollout["root"])).aliases("flights")["production"] == 2
    from mlops.config import load_config

    store = open_store(load_config(CONFIG, overrides={"artifact_root": str(rollout["root"])}))
    (execution,) = [e for e in store.list_executions("rollout-2") if e.component == "online_comparison"]
    assert execution.properties["action"] == "promote"
    evaluation = store.find_artifact("ModelEvaluation", uri=result["evidence_uri"])
    assert json.loads(evaluation.properties["metrics"])["difference"] == pytest.approx(result["difference"])


def test_ab_routing_is_sticky_by_the_request_key(rollout):
    proc = splitter(rollout, "ab", 3, "--mode", "ab", "--percent", "50", "--ab-key", "x-user")
    try:
        requests, _ = synthetic(120, seed=2)
        users = {r["id"]: f"user-{i % 30}" for i, r in enumerate(requests)}
        answers = send(proc.url, requests, headers=lambda body: {"x-user": users[body["id"]]})
        arms: dict[str, set[str]] = {}
        for request, answer in zip(requests, answers):
            arms.setdefault(users[request["id"]], set()).add(answer.json()["model_version"])
        assert all(len(v) == 1 for v in arms.values()), arms  # one user, one version
        assert {next(iter(v)) for v in arms.values()} == {"1", "3"}  # and both arms get users
        missing = httpx.post(f"{proc.url}/v2/models/flights/infer", json=requests[0], timeout=10)
        assert missing.status_code == 400 and "x-user" in missing.json()["error"]
    finally:
        proc.stop()


def test_shadow_answers_from_the_champion_and_a_worse_model_is_rolled_back(rollout):
    from mlops.registry.store import ModelRegistry

    registry = ModelRegistry(str(rollout["root"]))
    registry.promote("flights", 1, "production", reason="test: champion again")
    # a hung challenger: accepts connections, never answers; the mirror must not slow the answer
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        port = free_port()
        argv = [interpreter(SERVING), "-m", "serving.splitter", "--port", str(port), "--mode", "shadow"]
        argv += ["--champion", rollout["servers"][1].url, "--challenger", f"http://127.0.0.1:{hung.getsockname()[1]}"]
        argv += ["--mirror-timeout", "30"]
        stuck = Process(argv, rollout["tmp"] / "hung.log", f"http://127.0.0.1:{port}").ready("/v2/health/live", 60)
        try:
            requests, _ = synthetic(20, seed=3)
            started = time.monotonic()
            answers = send(stuck.url, requests)
            assert time.monotonic() - started < 10
            assert {a.json()["model_version"] for a in answers} == {"1"}
        finally:
            # its graceful shutdown would wait out the hung mirrors (--mirror-timeout 30): nothing
            # below depends on it, so it gets a second
            stuck.stop(grace=1)

    proc = splitter(rollout, "shadow", 3, "--mode", "shadow")
    try:
        requests, labels = synthetic(250, seed=4)
        answers = send(proc.url, requests)
        time.sleep(0.5)  # the last mirrors finish
    finally:
        proc.stop()
    assert {a.json()["model_version"] for a in answers} == {"1"}
    assert {a.headers["x-mlops-arm"] for a in answers} == {"champion"}
    wait_for_payload_rows(rollout, {r["id"] for r in requests}, {"1", "3"})
    code, result = evaluate(
        rollout, 3, write_labels(rollout["tmp"] / "labels4.jsonl", requests, labels), proc.traffic_log
    )
    assert (code, result["action"]) == (3, "rollback"), result
    assert result["paired"] and result["ci_high"] < 0
    aliases = registry.aliases("flights")
    assert aliases["production"] == 1 and aliases["staging"] == 2  # staging went back from 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
