"""The real server (`python -m serving`, KServe ModelServer + serving.model) in a subprocess on
127.0.0.1 with free ports, on the tiny registry: v1/v2 REST and gRPC predictions, metadata,
health, bad input, fuzzing, hot reload under load, metrics, payload log, transformer mode; and
one integration test with the real model, Feast enrichment and `mlops serve`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO

pytestmark = pytest.mark.serving_env

ROWS = {
    "hour": [7.0, 22.0, 5.0],
    "distance": [500.0, 2000.0, 100.0],
    "temp": [None, 50.0, 30.0],
    "seats": [100.0, 180.0, 50.0],
    "carrier": ["UA", "DL", "UA"],
    "origin": ["EWR", "JFK", "LGA"],
    "dest": ["ATL", "LAX", "BOS"],
    "month": ["1", "7", "12"],
}
NUMERIC = {"hour", "distance", "temp", "seats"}
MAX_REQUEST_BYTES = 200_000
MAX_BATCH_ROWS = 500


# ---- the server process ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess; `ready()` waits for /v2/health/ready, `stop()` sends SIGTERM."""

    def __init__(self, argv: list[str], log_path: Path, http_port: int, grpc_port: int):
        self.http_port, self.grpc_port, self.log_path = http_port, grpc_port, log_path
        self.url = f"http://127.0.0.1:{http_port}"
        self._log = open(log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.ready_statuses: list[int] = []  # what /v2/health/ready answered until it said 200

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def ready(self, timeout: float = 180) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code
                self.ready_statuses.append(status)
                if status == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server was not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def serve(
    tmp: Path,
    root: Path,
    *args: str,
    sets: dict | None = None,
    name: str = "server",
    http_port: int | None = None,
    grpc_port: int | None = None,
) -> ServerProcess:
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    overrides = {
        "artifact_root": str(root),
        "serving.feature_lookup": False,
        "serving.max_request_bytes": MAX_REQUEST_BYTES,
        "serving.max_batch_rows": MAX_BATCH_ROWS,
        "serving.payload_log.path": str(tmp / "payload_logs"),
        "serving.payload_log.flush_seconds": 0.2,
        **(sets or {}),
    }
    argv = [
        sys.executable,
        "-m",
        "serving",
        "--config",
        str(FLIGHTS_CONFIG),
        "--model",
        "flights@production",
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        *args,
    ]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return ServerProcess(argv, tmp / f"{name}.log", http_port, grpc_port)


def make_registry(root: Path, tiny_model_dirs) -> Path:
    """flights v1 (bias 0) = production, v2 (bias 1) = staging."""
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import register

    register(root, "flights", tiny_model_dirs[1])
    register(root, "flights", tiny_model_dirs[2])
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dirs):
    tmp = tmp_path_factory.mktemp("server")
    proc = serve(tmp, make_registry(tmp / "artifacts", tiny_model_dirs)).ready()
    proc.tmp = tmp
    yield proc
    code = proc.stop()
    assert code == 0, f"the server did not stop cleanly ({code}):\n{proc.log()}"


@pytest.fixture(scope="module")
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as client:  # keep-alive
        yield client


@pytest.fixture(scope="module")
def stub(server):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield pbg.GRPCInferenceServiceStub(channel)


# ---- requests ------------------------------------------------------------------------------------------
def expected(rows: dict = ROWS, bias: float = 0.0) -> np.ndarray:
    from tests.support.serving_models import tiny_probability

    cols = {
        k: (np.array([np.nan if v is None else v for v in vs], float) if k in NUMERIC else np.array(vs, object))
        for k, vs in rows.items()
    }
    return tiny_probability(cols, bias)


def v2_body(rows: dict = ROWS, request_id: str | None = "req-1", shape_n1: bool = False) -> dict:
    inputs = [
        {
            "name": k,
            "datatype": "FP32" if k in NUMERIC else "BYTES",
            "shape": [len(v), 1] if shape_n1 else [len(v)],
            "data": list(v),
        }
        for k, v in rows.items()
    ]
    return {"inputs": inputs} if request_id is None else {"id": request_id, "inputs": inputs}


def grpc_request(rows: dict = ROWS, request_id: str = "g-1", raw: bool = False):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensors, raws = [], []
    for k, vs in rows.items():  # strings as BYTES, the rest as FP32 (None -> NaN)
        if not any(isinstance(v, str) for v in vs):
            values = np.array([np.nan if v is None else v for v in vs], np.float32)
            contents = None if raw else pb.InferTensorContents(fp32_contents=values.tolist())
            raws.append(values.tobytes())
            datatype = "FP32"
        else:
            encoded = [v.encode() for v in vs]
            contents = None if raw else pb.InferTensorContents(bytes_contents=encoded)
            raws.append(b"".join(len(v).to_bytes(4, "little") + v for v in encoded))
            datatype = "BYTES"
        tensors.append(
            pb.ModelInferRequest.InferInputTensor(name=k, datatype=datatype, shape=[len(vs)], contents=contents)
        )
    return pb.ModelInferRequest(
        model_name="flights", id=request_id, inputs=tensors, raw_input_contents=raws if raw else None
    )


def probabilities(response: dict) -> np.ndarray:
    (output,) = response["outputs"]
    assert (output["name"], output["datatype"]) == ("probability", "FP32")
    return np.array(output["data"])


# ---- predictions -----------------------------------------------------------------------------------------
def test_v2_rest_v1_and_grpc_predict_what_the_model_does(server, http, stub):
    r = http.post("/v2/models/flights/infer", json=v2_body())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("req-1", "flights", "1")
    assert body["outputs"][0]["shape"] == [3]
    np.testing.assert_allclose(probabilities(body), expected(), rtol=1e-6)

    # no id: one is generated (kserve 0.21 would fail its response model with id None); [n, 1] shapes
    r = http.post("/v2/models/flights/infer", json=v2_body(request_id=None, shape_n1=True))
    assert r.status_code == 200, r.text
    assert len(r.json()["id"]) == 32
    np.testing.assert_allclose(probabilities(r.json()), expected(), rtol=1e-6)

    instances = [{k: v[i] for k, v in ROWS.items()} for i in range(3)]
    instances[0]["month"] = 1  # a number for a categorical is its text, as in training
    r = http.post("/v1/models/flights:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected(), rtol=1e-6)
    # v1 JSON without a JSON content type (curl -d) still works
    r = http.post(
        "/v1/models/flights:predict",
        content=json.dumps({"instances": instances}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text

    typed = stub.ModelInfer(grpc_request(request_id="g-1"))
    assert (typed.id, typed.model_name, typed.model_version) == ("g-1", "flights", "1")
    np.testing.assert_allclose(typed.outputs[0].contents.fp32_contents, expected(), rtol=1e-6)
    raw = stub.ModelInfer(grpc_request(request_id="g-2", raw=True))  # raw in -> raw out
    np.testing.assert_allclose(np.frombuffer(raw.raw_output_contents[0], np.float32), expected(), rtol=1e-6)


def test_metadata_lists_the_request_schema(http, stub):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    r = http.get("/v2/models/flights")
    assert r.status_code == 200
    meta = r.json()
    # the optional inputs: what identifies the row (entity keys and event time), for the payload log
    want = {**{k: "FP32" if k in NUMERIC else "BYTES" for k in ROWS}, "tailnum": "BYTES", "time_hour": "BYTES"}
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == want
    assert all(i["shape"] == [-1] for i in meta["inputs"])
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]
    assert meta["versions"] == ["1"] and meta["platform"] == "mlops-savedmodel"
    # no feature lookup here: every model input is required; only the store's features may be missing
    assert {i["name"]: i["parameters"] for i in meta["inputs"]} == {
        **{k: {"optional": False, "nullable": k in ("temp", "seats")} for k in ROWS},
        "tailnum": {"optional": True, "nullable": True},
        "time_hour": {"optional": True, "nullable": True},
    }
    g, call = stub.ModelMetadata.with_call(pb.ModelMetadataRequest(name="flights"))
    assert {i.name: i.datatype for i in g.inputs} == want and list(g.outputs[0].shape) == [-1]
    assert list(g.versions) == ["1"] and g.platform == "mlops-savedmodel"
    assert dict(call.trailing_metadata())["optional-inputs"] == "tailnum,time_hour"


def test_keep_alive_answers_are_not_held_by_nagle(server, http):
    """Each answer goes out at once on a keep-alive connection: without TCP_NODELAY on accepted
    connections (a listening socket bound with proto 0), Nagle + delayed ACKs held every response
    ~40 ms (measured 48 ms p50 for /v2/health/ready, 0.9 ms with the fix)."""
    import statistics
    import time

    body = json.dumps(v2_body(ROWS)).encode()
    http.post("/v2/models/flights/infer", content=body, headers={"content-type": "application/json"})
    seconds = []
    for _ in range(30):
        t0 = time.perf_counter()
        r = http.post("/v2/models/flights/infer", content=body, headers={"content-type": "application/json"})
        seconds.append(time.perf_counter() - t0)
        assert r.status_code == 200
    assert statistics.median(seconds) < 0.025, f"median {statistics.median(seconds) * 1000:.1f} ms"


def test_health_and_readiness(server, http, stub):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    # /v2/health/ready was never 200 before the model was loaded (503 or not listening yet)
    assert set(server.ready_statuses[:-1]) <= {503} and server.ready_statuses[-1] == 200
    for path in ("/", "/v2/health/live", "/v2/health/ready", "/v2/models/flights/ready", "/v1/models/flights"):
        assert http.get(path).status_code == 200, path
    assert http.get("/v2/models/nope/ready").status_code == 404
    assert stub.ServerLive(pb.ServerLiveRequest()).live and stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="flights")).ready
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(grpc_request().__class__(model_name="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def _reachable_addresses() -> list[tuple[int, str]]:
    """Local addresses other than 127.0.0.1 that a socket can listen on here."""
    candidates = {(socket.AF_INET, a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    candidates |= {(socket.AF_INET, "127.0.0.2"), (socket.AF_INET6, "::1")}
    usable = []
    for family, address in sorted(candidates - {(socket.AF_INET, "127.0.0.1")}):
        try:
            with socket.socket(family) as s:
                s.bind((address, 0))
            usable.append((family, address))
        except OSError:
            pass
    return usable


def test_binds_only_the_configured_host(server):
    # bound to 127.0.0.1 (KServe alone binds 0.0.0.0 and [::]): other local addresses refuse
    addresses = _reachable_addresses()
    assert addresses, "no local address besides 127.0.0.1 to check against"
    for family, address in addresses:
        for port in (server.http_port, server.grpc_port):
            with socket.socket(family) as s:
                s.settimeout(1)
                assert s.connect_ex((address, port)) != 0, f"{address} port {port} accepts connections"


# ---- bad input ---------------------------------------------------------------------------------------------
def _without(rows: dict, key: str) -> dict:
    return {k: v for k, v in rows.items() if k != key}


BAD_V2 = [
    ("unknown name", v2_body({**ROWS, "colour": ["a", "b", "c"]}), "unknown input(s) ['colour']"),
    ("missing input", v2_body(_without(ROWS, "temp")), "missing input(s) ['temp']"),
    ("wrong type", v2_body({**ROWS, "hour": ["seven", 1.0, 2.0]}), "input 'hour': expected numbers, got 'seven'"),
    ("object as value", v2_body({**ROWS, "carrier": [{"a": 1}, "UA", "UA"]}), "input 'carrier': data[0] is a dict"),
    ("rows differ", v2_body({**ROWS, "carrier": ["UA"]}), "but 'carrier' has 1"),
    (
        "shape vs data",
        {"inputs": [{"name": "hour", "datatype": "FP32", "shape": [2], "data": [1.0]}]},
        "input 'hour': shape [2] says 2 rows, data has 1 values",
    ),
    (
        "2-D shape",
        {"inputs": [{"name": "hour", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
        "input 'hour': shape [1, 2]: expected [n] or [n, 1]",
    ),
    ("empty batch", v2_body({k: [] for k in ROWS}), "empty batch"),
    (
        "too many rows",
        v2_body({k: [v[0]] * (MAX_BATCH_ROWS + 1) for k, v in ROWS.items()}),
        f"exceeds the limit of {MAX_BATCH_ROWS}",
    ),
    (
        "bad datatype",
        {"inputs": [{"name": "hour", "datatype": "BOOL", "shape": [1], "data": [True]}]},
        "input 'hour': datatype 'BOOL' is not one of",
    ),
    (
        "duplicate",
        {"inputs": [{"name": "hour", "datatype": "FP32", "shape": [1], "data": [1]}] * 2},
        "input 'hour' is given more than once",
    ),
    ("no inputs list", {"instances": [{"hour": 1}]}, "'inputs' must be a list of tensors"),
    ("id not a string", {**v2_body(), "id": 7}, "'id' must be a string"),
    ("unknown output", {**v2_body(), "outputs": [{"name": "logits"}]}, "unknown output(s) ['logits']"),
]


@pytest.mark.parametrize("case, body, message", BAD_V2, ids=[c[0] for c in BAD_V2])
def test_bad_v2_body_is_400_naming_the_problem(http, case, body, message):
    r = http.post("/v2/models/flights/infer", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"inputs": [', "malformed JSON body"),
        (b"\x00\xff garbage", "malformed JSON body"),
        (b"[1, 2]", "the body must be a JSON object"),
    ],
)
def test_malformed_json_is_400(http, content, message):
    for path in ("/v2/models/flights/infer", "/v1/models/flights:predict"):
        r = http.post(path, content=content, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, r.text)
    r = http.post("/v2/models/flights/infer", content=content, headers={"content-type": "application/json"})
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": "x"}, "'instances' must be a list of objects"),
        ({"instances": []}, "empty batch"),
        ({"instances": [7]}, "instances[0] must be an object"),
        ({"instances": [{**{k: v[0] for k, v in ROWS.items()}, "hour": "late"}]}, "input 'hour': expected numbers"),
    ],
)
def test_bad_v1_body_is_400(http, body, message):
    r = http.post("/v1/models/flights:predict", json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_oversized_payloads_are_refused(server, http, stub):
    import grpc

    big = json.dumps(v2_body({**ROWS, "carrier": ["x" * (MAX_REQUEST_BYTES // 2)] * 3})).encode()
    r = http.post("/v2/models/flights/infer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"exceeds the limit of {MAX_REQUEST_BYTES} bytes" in r.json()["error"]
    r = http.post(
        "/v2/models/flights/infer",
        content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
        headers={"content-type": "application/json"},
    )  # chunked: no Content-Length
    assert r.status_code == 413 and "a chunked request body of more than" in r.json()["error"]
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(grpc_request({**ROWS, "carrier": ["x" * (MAX_REQUEST_BYTES // 2)] * 3}))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert http.get("/v2/health/ready").status_code == 200


def test_bad_grpc_requests_are_invalid_argument(server, stub):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    T = pb.ModelInferRequest.InferInputTensor
    cases = [
        (grpc_request({**ROWS, "hour": ["seven", "1", "2"]}), "input 'hour': expected numbers, got b'seven'"),
        (
            pb.ModelInferRequest(model_name="flights", inputs=[T(name="hour", datatype="FOO", shape=[1])]),
            "input 'hour': datatype 'FOO' is not one of",
        ),
        (
            pb.ModelInferRequest(
                model_name="flights",
                inputs=[T(name="hour", datatype="FP32", shape=[2], contents=pb.InferTensorContents(fp32_contents=[1]))],
            ),
            "input 'hour': shape [2] says 2 rows, data has 1 values",
        ),
        (
            pb.ModelInferRequest(
                model_name="flights",
                inputs=[T(name="hour", datatype="FP32", shape=[1])],
                raw_input_contents=[b"\x00\x01\x02"],
            ),
            "3 raw bytes are not a whole number of FP32",
        ),
        (grpc_request(_without(ROWS, "temp")), "missing input(s) ['temp']"),
    ]
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details(), e.value.details()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        raw = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\xff\xff\xff not a protobuf")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed protobuf for ModelInfer" in e.value.details()
    assert stub.ModelInfer(grpc_request()).outputs  # still serving


# ---- fuzzing --------------------------------------------------------------------------------------------------
def _v2_bodies():
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6))
    names = st.one_of(st.sampled_from([*ROWS, "colour", "time_hour", ""]), st.text(max_size=4))
    datatypes = st.one_of(
        st.sampled_from(["FP32", "FP64", "INT32", "INT64", "UINT8", "FP16", "BYTES", "BOOL", "fp32", "FOO", ""]),
        st.text(max_size=4),
        st.integers(),
    )
    data = st.one_of(
        st.lists(
            st.one_of(scalar, st.lists(scalar, max_size=2), st.dictionaries(st.text(max_size=2), scalar, max_size=1)),
            max_size=4,
        ),
        scalar,
    )
    shape = st.one_of(st.lists(st.one_of(st.integers(-2, 4), st.text(max_size=1), st.floats()), max_size=3), scalar)
    tensor = st.fixed_dictionaries(
        {"name": names, "datatype": datatypes, "shape": shape, "data": data},
        optional={"parameters": st.one_of(scalar, st.dictionaries(st.text(max_size=3), scalar, max_size=2))},
    )
    random_body = st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(tensor, max_size=9), scalar)},
        optional={
            "id": st.one_of(st.text(max_size=8), st.integers()),
            "outputs": st.one_of(
                st.lists(st.fixed_dictionaries({"name": st.one_of(st.text(max_size=12), st.integers())}), max_size=2),
                scalar,
            ),
            "parameters": st.one_of(scalar, st.dictionaries(st.text(max_size=3), scalar, max_size=2)),
        },
    )

    @st.composite
    def near_valid(draw):  # a valid request with one to three tensors altered: reaches the deep checks
        body = v2_body({k: [draw(st.one_of(scalar, st.just(v[0])))] for k, v in ROWS.items()})
        for _ in range(draw(st.integers(1, 3))):
            t = draw(st.sampled_from(body["inputs"]))
            key = draw(st.sampled_from(["name", "datatype", "shape", "data"]))
            t[key] = draw({"name": names, "datatype": datatypes, "shape": shape, "data": data}[key])
        return body

    encoded = st.one_of(random_body, near_valid()).map(lambda b: json.dumps(b).encode())  # NaN -> invalid JSON
    return st.one_of(encoded, st.binary(max_size=64))


def test_fuzzed_v2_bodies_never_get_a_5xx(http):
    from hypothesis import HealthCheck, given, settings

    statuses = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(_v2_bodies())
    def post(body):
        r = http.post("/v2/models/flights/infer", content=body, headers={"content-type": "application/json"})
        assert r.status_code < 500, (body, r.status_code, r.text)
        assert r.status_code == 200 or "error" in r.json()
        statuses.append(r.status_code)

    post()
    assert 400 in statuses
    r = http.post("/v2/models/flights/infer", json=v2_body())  # alive and still right
    np.testing.assert_allclose(probabilities(r.json()), expected(), rtol=1e-6)


def test_fuzzed_grpc_requests_are_ok_or_invalid_argument(stub):
    import grpc
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    contents = st.one_of(
        st.builds(lambda v: pb.InferTensorContents(fp32_contents=v), st.lists(st.floats(width=32), max_size=3)),
        st.builds(
            lambda v: pb.InferTensorContents(int64_contents=v), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
        ),
        st.builds(lambda v: pb.InferTensorContents(bytes_contents=v), st.lists(st.binary(max_size=4), max_size=3)),
        st.builds(lambda v: pb.InferTensorContents(bool_contents=v), st.lists(st.booleans(), max_size=3)),
    )
    tensor = st.builds(
        lambda name, datatype, shape, c: pb.ModelInferRequest.InferInputTensor(
            name=name, datatype=datatype, shape=shape, contents=c
        ),
        st.one_of(st.sampled_from(list(ROWS)), st.text(max_size=3)),
        st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "XX", ""]),
        st.lists(st.integers(-1, 4), max_size=3),
        contents,
    )
    requests = st.builds(
        lambda ts, raw: pb.ModelInferRequest(
            model_name="flights", inputs=ts, raw_input_contents=raw[: len(ts)] if raw else None
        ),
        st.lists(tensor, max_size=9),
        st.one_of(st.none(), st.lists(st.binary(max_size=9), max_size=9)),
    )

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(requests)
    def call(request):
        try:
            stub.ModelInfer(request)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, e.code(), e.details())

    call()
    assert stub.ModelInfer(grpc_request()).outputs


# ---- metrics and payload log --------------------------------------------------------------------------------
def scrape(http) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(values: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and want <= set(ls))


def test_metrics_count_requests_stages_errors_and_process(http, stub):
    before = scrape(http)
    for _ in range(5):
        assert http.post("/v2/models/flights/infer", json=v2_body()).status_code == 200
    assert http.post("/v2/models/flights/infer", json={"inputs": 3}).status_code == 400
    for _ in range(3):
        stub.ModelInfer(grpc_request())
    after = scrape(http)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("mlops_requests_total", protocol="rest", endpoint="v2_infer", code="200") == 5
    assert delta("mlops_request_errors_total", protocol="rest", endpoint="v2_infer", code="400") == 1
    assert delta("mlops_requests_total", protocol="grpc", endpoint="ModelInfer", code="OK") == 3
    assert delta("mlops_request_seconds_count", protocol="rest", endpoint="v2_infer") == 6
    assert delta("mlops_request_seconds_bucket", protocol="grpc", endpoint="ModelInfer", le="+Inf") == 3
    for stage in ("preprocess", "predict", "postprocess"):  # KServe's per-stage histograms
        assert delta(f"request_{stage}_seconds_count", model_name="flights") == 8  # the 400 stops before
    assert delta("mlops_predicted_rows_total", model="flights", version="1") == 8 * 3
    assert metric(after, "mlops_model_info", model="flights", version="1", runtime="savedmodel") == 1
    assert metric(after, "mlops_model_ready", model="flights") == 1
    assert metric(after, "process_resident_memory_bytes") > 0 and metric(after, "process_cpu_seconds_total") > 0
    assert metric(after, "mlops_payload_log_rows", model="flights", state="logged") > 0


def test_payload_log_has_every_prediction_with_its_request_id(server, http):
    from serving.payload_log import read_payload_logs

    ids = [f"plog-{i}" for i in range(4)]
    for request_id in ids:
        assert http.post("/v2/models/flights/infer", json=v2_body(request_id=request_id)).status_code == 200
    deadline = time.monotonic() + 20
    while True:
        logged = read_payload_logs(str(server.tmp / "payload_logs"), "flights")
        mine = logged[logged["request_id"].str.startswith("plog-")] if len(logged) else logged
        if len(mine) == 12 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(mine["request_id"]) == sorted(f"{i}-{j}" for i in ids for j in range(3))
    first = mine[mine["request_id"].str.startswith("plog-0-")].sort_values("request_id")
    np.testing.assert_allclose(first["prediction"], expected(), rtol=1e-6)
    assert set(mine["version"]) == {"1"} and list(first["carrier"]) == ROWS["carrier"]


def _logged_rows(server, prefix: str, n: int) -> pd.DataFrame:  # noqa: F821
    from serving.payload_log import read_payload_logs

    deadline = time.monotonic() + 20
    while True:
        logged = read_payload_logs(str(server.tmp / "payload_logs"), "flights")
        mine = logged[logged["request_id"].str.startswith(prefix)] if len(logged) else logged
        if len(mine) >= n or time.monotonic() > deadline:
            return mine.sort_values("request_id").reset_index(drop=True)
        time.sleep(0.2)


def test_payload_log_carries_the_requests_entity_keys_and_event_time(server, http, stub):
    """REST v2, REST v1 and gRPC: each logged row has its request's tailnum and time_hour (not
    model inputs: logged beside them, the time as a UTC timestamp whatever form was sent), and
    origin/dest/carrier (model inputs) once, under their own names."""
    import pandas as pd

    tailnums = ["N14228", "N24211", "N619AA"]
    sent_times = ["2013-02-01T05:00:00Z", "2013-02-01 06:00:00", "2013-02-01T07:00:00-05:00"]
    want_times = pd.to_datetime(["2013-02-01T05:00:00Z", "2013-02-01T06:00:00Z", "2013-02-01T12:00:00Z"], utc=True)
    keyed = {**ROWS, "tailnum": tailnums, "time_hour": sent_times}
    assert http.post("/v2/models/flights/infer", json=v2_body(keyed, request_id="keys-v2")).status_code == 200
    stub.ModelInfer(grpc_request(keyed, request_id="keys-grpc"))
    epochs = [int(t.timestamp()) for t in want_times]  # v1: the event time as epoch seconds
    instances = [
        {**{k: v[i] for k, v in ROWS.items()}, "tailnum": tailnums[i], "time_hour": epochs[i]} for i in range(3)
    ]
    v1 = http.post("/v1/models/flights:predict", json={"instances": instances}, headers={"x-request-id": "keys-v1"})
    assert v1.status_code == 200
    without = http.post("/v2/models/flights/infer", json=v2_body(request_id="keys-none"))  # keys are optional
    assert without.status_code == 200

    logged = _logged_rows(server, "keys-", 12)
    assert len(logged) == 12
    for prefix in ("keys-v2", "keys-v1", "keys-grpc"):
        rows = logged[logged["request_id"].str.startswith(prefix + "-")]
        assert list(rows["tailnum"]) == tailnums, prefix
        assert list(rows["time_hour"]) == list(want_times), prefix
        assert list(rows["origin"]) == ROWS["origin"] and list(rows["carrier"]) == ROWS["carrier"], prefix
        np.testing.assert_allclose(rows["prediction"], expected(), rtol=1e-6)
    assert isinstance(logged["time_hour"].dtype, pd.DatetimeTZDtype) and str(logged["time_hour"].dt.tz) == "UTC"
    assert set(logged.columns) == {  # each key once: origin, dest, carrier are model inputs
        *("request_id", "model", "version", "source", "timestamp", "prediction"),
        *ROWS,
        *("tailnum", "time_hour"),
    }
    bare = logged[logged["request_id"].str.startswith("keys-none-")]
    assert bare["tailnum"].isna().all() and bare["time_hour"].isna().all()


# ---- hot reload --------------------------------------------------------------------------------------------------
def test_hot_reload_under_load_drops_nothing(tmp_path, tiny_model_dirs):
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

    from mlops.registry.store import ModelRegistry

    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    server = serve(tmp_path, root, sets={"serving.reload_interval_s": 0.2}, name="reload").ready()
    bias = {"1": 0.0, "2": 1.0}
    stop = threading.Event()
    seen: dict[str, list[str]] = {"rest": [], "grpc": []}
    failures: list[str] = []

    def rest_loop():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v2/models/flights/infer", json=v2_body())
                    body = r.json()
                    if r.status_code != 200:
                        failures.append(f"rest {r.status_code} {r.text}")
                        continue
                    np.testing.assert_allclose(
                        probabilities(body), expected(bias=bias[body["model_version"]]), rtol=1e-6
                    )
                    seen["rest"].append(body["model_version"])
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(f"rest {e!r}")

    def grpc_loop():
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            grpc_stub = pbg.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    r = grpc_stub.ModelInfer(grpc_request())
                    np.testing.assert_allclose(
                        r.outputs[0].contents.fp32_contents, expected(bias=bias[r.model_version]), rtol=1e-6
                    )
                    seen["grpc"].append(r.model_version)
                except Exception as e:  # noqa: BLE001
                    failures.append(f"grpc {e!r}")

    threads = [threading.Thread(target=rest_loop), threading.Thread(target=grpc_loop)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        ModelRegistry(str(root)).promote("flights", 2, "production", reason="test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(s and s[-1] == "2" for s in seen.values()):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        with httpx.Client(base_url=server.url) as client:
            values = scrape(client)
        assert server.stop() == 0, server.log()
    assert not failures, failures[:5]
    for protocol, versions in seen.items():
        switch = versions.index("2")  # the switch happened, once: no "1" after the first "2"
        assert switch > 0 and set(versions[switch:]) == {"2"}, (protocol, versions[switch - 3 : switch + 3])
    assert metric(values, "mlops_model_reloads_total", model="flights", result="swapped") == 1
    assert metric(values, "mlops_model_reloads_total", model="flights", result="failed") == 0
    assert metric(values, "mlops_model_info", model="flights", version="2") == 1
    assert metric(values, "mlops_model_info", model="flights", version="1") == 0  # the old one is gone


def test_reload_of_a_broken_registry_logs_one_line_per_attempt_and_keeps_serving(tmp_path, tiny_model_dirs):
    import httpx

    from mlops.registry.store import ModelRegistry

    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    server = serve(tmp_path, root, sets={"serving.reload_interval_s": 0.2}, name="broken-reload").ready()
    aliases = next(root.rglob("aliases.json"))
    good = aliases.read_bytes()
    failed_before = 0.0
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for broken in (good[: len(good) // 2], b"[]", b""):  # truncated, a list, empty
                aliases.write_bytes(broken)
                deadline = time.monotonic() + 30
                while (
                    failed := metric(scrape(client), "mlops_model_reloads_total", result="failed")
                ) < failed_before + 2:
                    assert time.monotonic() < deadline, server.log()
                    time.sleep(0.1)
                failed_before = failed
                r = client.post("/v2/models/flights/infer", json=v2_body())
                assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
            aliases.write_bytes(good)
            # a promoted version whose directory is gone
            ModelRegistry(str(root)).promote("flights", 2, "production", reason="test")
            shutil.rmtree(ModelRegistry(str(root)).resolve("flights@2").uri.removeprefix("file://"))
            deadline = time.monotonic() + 30
            while metric(scrape(client), "mlops_model_reloads_total", result="failed") < failed_before + 2:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
            r = client.post("/v2/models/flights/infer", json=v2_body())
            assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
            failed = metric(scrape(client), "mlops_model_reloads_total", result="failed")
    finally:
        assert server.stop() == 0, server.log()
    text = server.log_path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if "reload of flights@production failed" in line]
    assert "Traceback" not in text, text[-3000:]
    # one line per attempt: the n-th says "(n so far)", and the metric counted every one it had seen
    assert [f"({n} so far)" in line for n, line in enumerate(lines, 1)] == [True] * len(lines), lines[-3:]
    assert len(lines) >= failed >= 8, (failed, lines[-3:])
    assert all("still serving flights@1" in line for line in lines), lines[-3:]


def test_sigterm_drains_then_finishes_accepted_requests_and_exits_zero(tmp_path, tiny_model_dirs):
    """Closed-loop REST and gRPC load, SIGTERM in the middle: readiness goes 503 first while
    requests are still served; then the listeners close (new calls: UNAVAILABLE / refused), a
    request still uploading its body is answered, the process exits 0 within the grace period.
    Never NOT_FOUND, INTERNAL or a 500 (KServe unloads the model while requests use it)."""
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pbg

    grace = 8.0
    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    server = serve(tmp_path, root, sets={"serving.shutdown_grace_s": grace}, name="drain").ready()
    stop = threading.Event()
    outcomes: list[tuple[str, float, str]] = []  # (protocol, start time, outcome)
    readiness: list[tuple[float, str]] = []  # (time, REST ready status | gRPC ServerReady)

    def rest_loop():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    r = client.post("/v2/models/flights/infer", json=v2_body())
                    outcome = str(r.status_code)
                    if r.status_code == 200:
                        np.testing.assert_allclose(probabilities(r.json()), expected(), rtol=1e-6)
                except httpx.TransportError as e:
                    outcome = f"transport {type(e).__name__}"
                    time.sleep(0.01)
                outcomes.append(("rest", started, outcome))

    def grpc_loop():
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            grpc_stub = pbg.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    np.testing.assert_allclose(
                        grpc_stub.ModelInfer(grpc_request(), timeout=30).outputs[0].contents.fp32_contents,
                        expected(),
                        rtol=1e-6,
                    )
                    outcome = "OK"
                except grpc.RpcError as e:
                    outcome = f"{e.code().name} {e.details()}"
                    time.sleep(0.1)  # a retry policy's back-off
                outcomes.append(("grpc", started, outcome))

    def probe_loop():
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            grpc_stub = pbg.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    status = str(httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code)
                    model = str(httpx.get(f"{server.url}/v2/models/flights/ready", timeout=2).status_code)
                    ready = grpc_stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready
                    model_ready = grpc_stub.ModelReady(pb.ModelReadyRequest(name="flights"), timeout=2).ready
                    readiness.append((time.monotonic(), f"{status} {model} {ready} {model_ready}"))
                except (httpx.TransportError, grpc.RpcError):
                    readiness.append((time.monotonic(), "down"))
                    time.sleep(0.1)
                time.sleep(0.02)

    slow: dict = {}

    def slow_upload():  # a request still sending its body when the listeners close
        body = json.dumps(v2_body(request_id="slow")).encode()

        def chunks():
            for i in range(0, len(body), 64):
                yield body[i : i + 64]
                time.sleep(grace * 0.75 / (len(body) / 64))

        try:
            slow["response"] = httpx.post(
                f"{server.url}/v2/models/flights/infer",
                content=chunks(),
                headers={"content-type": "application/json"},
                timeout=30,
            )
        except httpx.TransportError as e:
            slow["error"] = repr(e)

    threads = [threading.Thread(target=f) for f in (rest_loop, rest_loop, grpc_loop, grpc_loop, probe_loop)]
    slow_thread = threading.Thread(target=slow_upload)
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        slow_thread.start()
        time.sleep(0.3)
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(grace + 10)
        exited_at = time.monotonic()
    finally:
        stop.set()
        for t in [*threads, slow_thread]:
            t.join(30)
        server.stop()
    log = server.log()
    assert code == 0, log
    assert exited_at - sigterm_at < grace + 2, (exited_at - sigterm_at, log)
    # not ready (REST and gRPC, server and model) while still listening, before the exit
    after = [state for t, state in readiness if t > sigterm_at + 0.2]
    assert "503 503 False False" in after, (after[:5], log)
    assert "200 200 True True" not in after, after
    assert slow.get("response") is not None and slow["response"].status_code == 200, (slow, log)
    for protocol in ("rest", "grpc"):
        mine = [(started, outcome) for p, started, outcome in outcomes if p == protocol]
        before = [outcome for started, outcome in mine if started < sigterm_at]
        later = [outcome for started, outcome in mine if started >= sigterm_at]
        assert before and set(before) == {"200" if protocol == "rest" else "OK"}, (protocol, set(before))
        # the drain served requests after SIGTERM; then only retryable refusals
        assert later.count("200" if protocol == "rest" else "OK") > 0, (protocol, later[:5], log)
        allowed = ("200", "503", "transport ") if protocol == "rest" else ("OK", "UNAVAILABLE")
        assert all(outcome.startswith(allowed) for outcome in later), (protocol, set(later))
    assert log.index("listeners closed") < log.index("model server stopped"), log


def test_a_busy_port_is_one_line_naming_it(tmp_path, tiny_model_dirs):
    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    for which in ("http", "grpc"):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = serve(tmp_path, root, name=f"busy-{which}", **{f"{which}_port": port})
            assert server.proc.wait(120) == 75, server.log()  # Unavailable: EX_TEMPFAIL
            log = server.log()
            server.stop()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and f"--{which}_port" in errors[0], log
        assert "Traceback" not in log and "add_port" not in log, log
        assert "loading" not in log.lower(), log  # refused before loading anything


def test_start_up_says_what_it_does_and_probes_before_ready_are_not_errors(server, http):
    log = server.log_path.read_text(errors="replace")
    for phase in (
        "listening: REST on 127.0.0.1:",
        "resolving flights@production",
        "importing TensorFlow",
        "loading flights@1",
        "model flights ready",
    ):
        assert phase in log, (phase, log[-3000:])
    assert 503 in server.ready_statuses, "the fixture never saw the server loading"
    values = scrape(http)
    assert metric(values, "mlops_requests_total", endpoint="v2_ready", code="503") >= 1
    assert metric(values, "mlops_request_errors_total", endpoint="v2_ready") == 0


# ---- failure to load, transformer ----------------------------------------------------------------------------
def test_a_model_that_cannot_load_exits_non_zero(tmp_path):
    server = serve(tmp_path, tmp_path / "empty-root", "--model_dir", str(tmp_path / "no-such-model"), name="broken")
    assert server.proc.wait(180) == 1, server.log()
    assert "no-such-model" in server.log() and "does not exist" in server.log()
    server.stop()


def test_transformer_forwards_complete_inputs_to_a_predictor(tmp_path, tiny_model_dirs):
    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    predictor = serve(tmp_path, root, sets={"serving.payload_log.enabled": False}, name="predictor")
    transformer = None
    try:
        predictor.ready()
        transformer = serve(
            tmp_path,
            root,
            "--predictor_host",
            f"127.0.0.1:{predictor.http_port}",
            "--predictor_protocol",
            "v2",
            name="transformer",
        ).ready()
        import httpx

        r = httpx.post(f"{transformer.url}/v2/models/flights/infer", json=v2_body(request_id="t-1"), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "t-1" and r.json()["model_version"] == "1"
        np.testing.assert_allclose(probabilities(r.json()), expected(), rtol=1e-6)
        served_by_predictor = httpx.get(f"{predictor.url}/metrics").text
        assert 'mlops_predicted_rows_total{model="flights",version="1"} 3.0' in served_by_predictor
    finally:
        if transformer is not None:
            assert transformer.stop() == 0, transformer.log()
        assert predictor.stop() == 0, predictor.log()


# ---- integration: the real model, Feast enrichment, `mlops serve` --------------------------------------------
@pytest.mark.integration
def test_mlops_serve_real_model_with_feast_enrichment(tmp_path, feast_online_root, real_model_dir):
    import httpx
    import pandas as pd

    from mlops.config import load_config
    from mlops.datasets.repository import DatasetRepository
    from mlops.features.store import read_sources
    from serving.enrichment import FeatureEnricher
    from serving.predictor import load_predictor
    from tests.support.serving_models import register

    seeded, project = feast_online_root
    root = tmp_path / "artifacts"
    shutil.copytree(seeded, root, symlinks=True)
    # sources.json holds absolute paths into the seeded root, which stays in place: the copy
    # shares its Feast registry, online store and parquet sources.
    from mlops.registry.store import ModelRegistry

    version = register(root, "flights", real_model_dir)
    ModelRegistry(str(root)).promote("flights", version.version, "production", reason="test")
    http_port, grpc_port = free_port(), free_port()
    sets = {
        "artifact_root": str(root),
        "features.project": project,
        "features.online_store": "sqlite",
        "serving.payload_log.enabled": False,
    }
    argv = [
        sys.executable,
        "-m",
        "cli",
        "serve",
        "--config",
        str(FLIGHTS_CONFIG),
        "--model",
        "flights@production",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    server = ServerProcess(argv, tmp_path / "mlops-serve.log", http_port, grpc_port)
    try:
        server.ready()
        config = load_config(FLIGHTS_CONFIG, overrides=sets)
        repo = DatasetRepository(config.artifact_root)
        flights = repo.load(repo.resolve(config.dataset.name, "latest"))
        planes = pd.read_parquet(read_sources(config)["planes"]["path"]).set_index("tailnum")
        f = flights[
            (flights["time_hour"] >= pd.Timestamp("2013-02-10", tz="UTC")) & flights["tailnum"].isin(planes.index)
        ].iloc[0]
        # what a client knows at request time: entity keys, request-time fields, the departure time
        request = {
            "origin": [f.origin] * 2,
            "dest": [f.dest] * 2,
            "carrier": [f.carrier] * 2,
            "tailnum": [f.tailnum, "N0NE-UNKNOWN"],
            "hour": [float(f.hour)] * 2,
            "month": [str(f.month)] * 2,
            "distance": [float(f.distance)] * 2,
            "time_hour": [f.time_hour.isoformat()] * 2,
        }
        meta = httpx.get(f"{server.url}/v2/models/flights").json()
        names = {i["name"] for i in meta["inputs"]}
        assert set(request) <= names and {"temp", "seats"} <= names  # store features: optional overrides
        body = {
            "id": "feast-1",
            "inputs": [
                {"name": k, "datatype": "FP32" if k in ("hour", "distance") else "BYTES", "shape": [2], "data": v}
                for k, v in request.items()
            ],
        }
        r = httpx.post(f"{server.url}/v2/models/flights/infer", json=body, timeout=60)
        assert r.status_code == 200, r.text
        served = probabilities(r.json())
        assert served.shape == (2,) and np.all((served > 0) & (served < 1))  # the unknown tailnum answers too

        # the same as the model on the same Feast lookup in process
        enricher = FeatureEnricher(config, (predictor := load_predictor(real_model_dir)).inputs)
        cols, _ = enricher.complete(request)
        assert cols["seats"][0] == planes.loc[f.tailnum, "seats"] and np.isnan(cols["seats"][1])
        np.testing.assert_allclose(served, predictor.predict(cols), rtol=1e-5)
        values = scrape(httpx.Client(base_url=server.url))
        assert metric(values, "mlops_rows_without_features_total", model="flights") >= 1
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.integration
def test_online_predictions_of_real_flights_join_their_labels_by_entity_keys_and_event_time(
    tmp_path, feast_online_root, real_model_dir
):
    """A few hundred real February 2013 flights predicted by the real model through the server
    (Feast enrichment, payload log on), then `mlops monitor evaluate --labels flights@2013-02`
    (pipeline env) joins them with the ingested span by origin, dest, carrier, tailnum, time_hour:
    every keyed prediction labelled, the keyless ones counted unmatched, and the live AUC is the
    Evaluator's binary_metrics on the matched rows."""
    import httpx
    import pandas as pd

    from components.evaluator.executor import binary_metrics
    from mlops.datasets.repository import DatasetRepository
    from mlops.registry.store import ModelRegistry
    from serving.payload_log import read_payload_logs
    from tests.support.fixtures import PIPELINE_PY
    from tests.support.serving_models import register

    seeded, project = feast_online_root
    root = tmp_path / "artifacts"
    shutil.copytree(seeded, root, symlinks=True)
    version = register(root, "flights", real_model_dir)
    ModelRegistry(str(root)).promote("flights", version.version, "production", reason="test")
    sets = {
        "artifact_root": str(root),
        "features.project": project,
        "features.online_store": "sqlite",
        "serving.payload_log.flush_seconds": 0.2,
    }
    repo = DatasetRepository(str(root))
    span = repo.load(repo.resolve("flights", "2013-02")[0])
    flights = span.sample(300, random_state=7).reset_index(drop=True)
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "serving", "--config", str(FLIGHTS_CONFIG), "--model", "flights@production"]
    argv += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    server = ServerProcess(argv, tmp_path / "serve.log", http_port, grpc_port)
    started = pd.Timestamp.now(tz="UTC").floor("s")
    try:
        server.ready()
        meta = httpx.get(f"{server.url}/v2/models/flights").json()
        required = [i["name"] for i in meta["inputs"] if not i["parameters"]["optional"]]
        numeric = {i["name"] for i in meta["inputs"] if i["datatype"] == "FP32"}

        def instance(f, keyed: bool) -> dict:
            row = {k: float(f[k]) if k in numeric else str(f[k]) for k in required}
            return {**row, "time_hour": f["time_hour"].isoformat()} if keyed else row

        with httpx.Client(base_url=server.url, timeout=60) as http:
            for lo in range(0, len(flights), 100):
                part = flights.iloc[lo : lo + 100]
                body = {"instances": [instance(f, keyed=True) for _, f in part.iterrows()]}
                r = http.post("/v1/models/flights:predict", json=body, headers={"x-request-id": f"feb-{lo}"})
                assert r.status_code == 200, r.text
            # the same flights sent without their event time: predictions no label can be joined to
            body = {"instances": [instance(f, keyed=False) for _, f in flights.iloc[:10].iterrows()]}
            assert http.post("/v1/models/flights:predict", json=body).status_code == 200
    finally:
        assert server.stop() == 0, server.log()  # SIGTERM: the payload log is flushed
    window = f"{started.isoformat()}:{(pd.Timestamp.now(tz='UTC') + pd.Timedelta(minutes=1)).isoformat()}"
    cli = [str(PIPELINE_PY), "-m", "cli", "monitor", "evaluate", "--config", str(FLIGHTS_CONFIG)]
    cli += ["--model", "flights@production", "--labels", "flights@2013-02", "--window", window]
    for key, value in sets.items():
        cli += ["--set", f"{key}={json.dumps(value)}"]
    proc = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    live = json.loads(Path(json.loads(proc.stdout[proc.stdout.index("{") :])["result"]).read_text())

    assert live["labels"]["join_keys"] == ["origin", "dest", "carrier", "tailnum", "time_hour"]
    counts = live["counts"]
    assert counts["predictions"] == 310 and counts["matched"] == 300 and counts["unmatched_predictions"] == 10
    assert counts["labels"] == len(span) and counts["unmatched_labels"] == len(span) - 300
    assert counts["duplicate_labels"] == 0 and counts["duplicate_prediction_keys"] == 0
    # the live AUC is the Evaluator's on the matched rows (joined here independently)
    keys = ["origin", "dest", "carrier", "tailnum", "time_hour"]
    logged = read_payload_logs(str(root / "payload_logs"), "flights").dropna(subset=["time_hour"])
    labels = span[[*keys, "is_delayed"]].astype({"time_hour": logged["time_hour"].dtype})
    matched = logged.merge(labels, on=keys, validate="one_to_one")
    assert len(matched) == 300
    expected_metrics = binary_metrics(matched["is_delayed"].to_numpy(), matched["prediction"].to_numpy(np.float64))
    assert live["metrics"]["auc"] == pytest.approx(expected_metrics["auc"], abs=1e-9)


# ---- values the datatype or the schema does not allow (issue 8) ------------------------------------------
BAD_VALUES = [
    (
        "inf as text in FP32",
        {"hour": ["inf", 1.0, 2.0]},
        "input 'hour': expected numbers, got 'inf' at data[0]: a FP32 tensor holds numbers",
    ),
    ("numeric text in FP32", {"hour": ["7", 1.0, 2.0]}, "input 'hour': expected numbers, got '7' at data[0]"),
    ("FP32 overflow", {"hour": [1e39, 1.0, 2.0]}, "input 'hour': data[0] = 1e+39 is outside what FP32 holds"),
    ("null where no gap is allowed", {"hour": [None, 1.0, 2.0]}, "input 'hour': missing value (null or NaN) at row 0"),
    ("number in BYTES", {"month": [7, "1", "2"]}, "input 'month': data[0] is 7: a BYTES tensor holds strings"),
    ("null category", {"carrier": ["UA", None, "DL"]}, "input 'carrier': missing value"),
]


@pytest.mark.parametrize("case, change, message", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_values_the_input_cannot_take_are_400(http, case, change, message):
    r = http.post("/v2/models/flights/infer", json=v2_body({**ROWS, **change}))
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_gaps_in_store_features_and_unknown_input_message(http):
    r = http.post("/v2/models/flights/infer", json=v2_body({**ROWS, "temp": [None] * 3, "seats": [None] * 3}))
    assert r.status_code == 200, r.text  # the store's features may be missing: the model imputes them
    r = http.post(
        "/v1/models/flights:predict", json={"instances": [{**{k: v[0] for k, v in ROWS.items()}, "hour": 1e39}]}
    )
    assert r.status_code == 400 and "input 'hour': 1e+39 at row 0 is not a finite number FP32 holds" in r.text


def test_non_finite_numbers_over_grpc_are_invalid_argument(stub):
    import grpc

    for hour in (float("inf"), float("nan")):
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(grpc_request({**ROWS, "hour": [hour, 1.0, 2.0]}))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'hour'" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(grpc_request({**ROWS, "hour": ["7", "1", "2"]}))  # a BYTES tensor for a number
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "send this input as FP32" in e.value.details()


def _binary_request(rows: dict, raw_name: str, raw: bytes, size=None) -> tuple[bytes, dict]:
    """A v2 binary-extension body: `raw_name` in binary (binary_data_size = `size`, default len(raw))."""
    inputs = [
        {"name": k, "datatype": "FP32" if k in NUMERIC else "BYTES", "shape": [len(v)], "data": list(v)}
        for k, v in rows.items()
        if k != raw_name
    ]
    inputs.append(
        {
            "name": raw_name,
            "datatype": "BYTES",
            "shape": [1],
            "parameters": {"binary_data_size": len(raw) if size is None else size},
        }
    )
    header = json.dumps({"id": "bin", "inputs": inputs}).encode()
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def test_bad_binary_tensors_are_400_and_keep_the_connection(server):
    import http.client

    one = {k: v[:1] for k, v in ROWS.items()}
    good_raw = len(b"EWR").to_bytes(4, "little") + b"EWR"
    bad = [
        (b"\xff\xff\xff\x7f" + b"JFK", None, "input 'origin': raw BYTES element of 2147483647 bytes overruns"),
        (good_raw + b"xx", len(good_raw), "2 trailing bytes after input 'origin'"),
        (good_raw, len(good_raw) + 5, "input 'origin': binary_data_size 12 overruns the body"),
        (good_raw, "7", "input 'origin': has no 'data', and 'parameters.binary_data_size' is '7'"),
    ]
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)  # ONE keep-alive connection
    try:
        for raw, size, message in bad:
            body, headers = _binary_request(one, "origin", raw, size)
            conn.request("POST", "/v2/models/flights/infer", body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            assert response.status == 400 and message in json.loads(text)["error"], text
            assert "TypeError" not in text
            body, headers = _binary_request(one, "origin", good_raw)  # the next request, same connection
            conn.request("POST", "/v2/models/flights/infer", body=body, headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200, answer
            np.testing.assert_allclose(probabilities(answer), expected(one), rtol=1e-6)
    finally:
        conn.close()
