"""Benchmark: online, batch and streaming prediction, side by side in one run, as JSON.

    .venv/serving/bin/python bench/serving.py [--model-dir DIR] [--work DIR] [--duration 5]
        [--rounds 3] [--concurrency 8] [--online-store sqlite|redis] [--only raw,online,batch,stream]
        [--out bench/results/serving.json]

Set-up (reused when --work already holds it): a real flights model (tests.support.serving_models.build_real_model,
~1 min, or --model-dir), January-February 2013 in a dataset repository and February materialized
into a Feast online store (tests.support.serving_models.seed_datasets / materialize_online, as the tests'
feast_online_root), the model registered as flights@production. Requests are 256 February
flights, in two forms with the same predictions: "feast" = what a client knows (entity keys,
request-time features, the departure hour: the server looks the rest up in ONE online read) and
"full" = every model input (no lookup).

Measured, all on 127.0.0.1 in this one run (these machines are noisy: compare ratios, not runs):
  raw      in-process: the serving signature (SavedModel), TFLite and the server's runtime (auto:
           TFLite up to 256 rows), 1 row and 256 rows (the limit); the Feast online read alone;
           "model + direct online-store read" = the enricher's validation + one online read + the
           model in the server's runtime (what a request must cost at least)
  online   two subprocesses up together: `python -m serving` (KServe ModelServer + serving.model:
           v2 REST and gRPC, 1 row, feast and full) and the peer, bench/peer_fastapi.py (a plain
           FastAPI/uvicorn endpoint around the same predictor and runtime, full rows); predictions checked
           against the in-process ones first; then --rounds rounds, each measuring every endpoint
           in turn with 1 closed-loop worker (latency) and --concurrency workers (throughput);
           medians and min/median/max ("spread") over the rounds. --server-runtimes
           auto,savedmodel adds a server per runtime
  batch    serving.batch.run_batch on a parquet file of every model input (February's flights
           repeated to --batch-rows), against the raw batched loop doing the same parquet read,
           predict and parquet write
  stream   serving.stream.benchmark_throughput: events/s through Redis Streams end to end
  coldstart  --rounds fresh processes each: `python -m serving` (with the Feast lookup) from process
           start to /v2/health/ready 200, and SIGTERM to exit with no traffic; against a bare process
           doing `import tensorflow` + loading the model in the server's runtime (the floor).
           Target: ready <= that floor + 3 s
  outage   per serving.feature_store.on_failure policy (defaults, fail): the server on its own
           redis-server, 1-row "feast" requests from --concurrency REST workers for --duration s
           each while the store is healthy, hung (SIGSTOP), down (killed) and restarted empty:
           p50/p99/max, throughput, status codes, degraded answers. Targets (issue 11): during an
           outage p99 <= deadline + healthy p99, and with `defaults` throughput >= 80% of healthy
A piece that is not there (a module not written yet) is reported "not available"; a failure is
reported with its error and the rest still runs. Targets (pass/fail) are at the end of the JSON: a
target passes only if it passes in every round, each round judged on numbers measured in that round
(`per_round`, `rounds_passed`; `verdict` lists what passed, failed and was not measured).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder is first on sys.path and its name would shadow the `serving`
# package: the repository root takes its place.
sys.path[0] = str(REPO)

import numpy as np  # noqa: E402

from bench import loadgen  # noqa: E402

MODEL = "flights"
REQUEST_ROWS = 256
BATCH_ROWS = 256
PARITY = 1e-5
SECTIONS = ("raw", "online", "batch", "stream", "coldstart", "outage")


class NotAvailable(Exception):
    """A piece of the platform this benchmark measures is not there (yet)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "platform": platform.platform(),
    }


# ---- set-up -------------------------------------------------------------------------------------
def setup(work: Path, model_dir: str | None, online_store: str) -> dict:
    from mlops.config import load_config
    from mlops.registry.store import ModelRegistry
    from tests.support.serving_models import (
        FLIGHTS_CONFIG,
        build_real_model,
        materialize_online,
        register,
        seed_datasets,
    )

    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "setup.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    t0 = time.perf_counter()
    if model_dir is None:
        model_dir = state.get("model_dir")
        if not model_dir or not os.path.isdir(model_dir):
            log("training a real model in the pipeline env (~1 min)")
            model_dir = build_real_model(str(work / "real"), rows=3000)
    root = work / "artifacts"
    if not (root / "datasets").is_dir():
        log("seeding 2013-01 and 2013-02 into the dataset repository")
        seed_datasets(str(root))
    project = state.get(f"project_{online_store}")
    if not project:
        project = f"bench{os.getpid()}{online_store[0]}"
        log(f"materializing February 2013 into the {online_store} online store (project {project})")
        materialize_online(str(root), project, online_store=online_store)
    registry = ModelRegistry(str(root))
    if state.get("model_dir") != model_dir or MODEL not in registry.list_models():
        version = register(root, MODEL, model_dir)
        registry.promote(MODEL, version.version, "production", reason="serving benchmark")
    state.update({"model_dir": model_dir, f"project_{online_store}": project})
    state_path.write_text(json.dumps(state, indent=2))
    overrides = {
        "artifact_root": str(root),
        "features.project": project,
        "features.online_store": online_store,
        "serving.reload_interval_s": 0,
    }
    config = load_config(FLIGHTS_CONFIG, overrides=overrides)
    return {
        "config": config,
        "overrides": overrides,
        "model_dir": model_dir,
        "root": root,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def february_flights(config, n: int, seed: int = 0):
    from mlops.datasets.repository import DatasetRepository

    repo = DatasetRepository(config.artifact_root)
    df = repo.load(repo.resolve(config.dataset.name, "2013-02"))
    return df if n is None else df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)


def request_sets(served, flights) -> dict:
    """The 'feast' and 'full' request columns for `flights`, and the expected predictions."""
    enricher = served.enricher
    names = [s.name for s in enricher.schema.required] + ([enricher.time_column] if enricher.time_column else [])
    feast = {}
    for name in names:
        col = flights[name]
        if name == enricher.time_column:
            feast[name] = np.array([t.isoformat() for t in col], dtype=object)
        else:
            feast[name] = col.to_numpy()
    full, n = enricher.complete(feast)
    expected = served.predictor.predict(full)
    # The server's "full" request: every model input plus the entity keys its schema requires
    # (tailnum): with every store feature given, it does not look anything up. "model" (every model
    # input, nothing else) is what the peer and the batch file get.
    full_request = {**{s.name: feast[s.name] for s in enricher.schema.required}, **full}
    return {
        "feast": feast,
        "full": full_request,
        "model": full,
        "expected": expected,
        "rows": n,
        "dtypes": {s.name: s.dtype for s in enricher.schema.all} | {s.name: s.dtype for s in served.predictor.inputs},
    }


def _cell(v, numeric: bool):
    """A JSON-able value: None for a missing number, "" for missing text (pandas gives NaN)."""
    missing = v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))
    if numeric:
        return None if missing else float(v)
    return "" if missing else str(v)


def rest_bodies(columns: dict, dtypes: dict, n: int) -> list[bytes]:
    """One v2 JSON body per row (null = a missing number)."""
    out = []
    for i in range(n):
        inputs = [
            {
                "name": k,
                "shape": [1],
                "datatype": "FP32" if dtypes[k] == "float32" else "BYTES",
                "data": [_cell(v[i], dtypes[k] == "float32")],
            }
            for k, v in columns.items()
        ]
        out.append(json.dumps({"id": f"bench-{i}", "inputs": inputs}).encode())
    return out


def grpc_requests(columns: dict, dtypes: dict, n: int, model: str) -> list:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    out = []
    for i in range(n):
        req = pb.ModelInferRequest(model_name=model, id=f"bench-{i}")
        for k, v in columns.items():
            t = req.inputs.add(name=k, shape=[1])
            value = _cell(v[i], dtypes[k] == "float32")
            if dtypes[k] == "float32":
                t.datatype = "FP32"
                t.contents.fp32_contents.append(float("nan") if value is None else value)
            else:
                t.datatype = "BYTES"
                t.contents.bytes_contents.append(value.encode())
        out.append(req)
    return out


# ---- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A server subprocess on loopback, ready when `ready_url` answers 200; stopped by its pid."""

    def __init__(self, name: str, argv: list[str], ready_url: str, work: Path, timeout_s: float = 180):
        self.name, self.argv, self.ready_url, self.timeout_s = name, argv, ready_url, timeout_s
        self.log_path = work / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Child:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, cwd=str(REPO), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise RuntimeError(f"{self.name} not ready after {self.timeout_s:.0f} s: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def post_json(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def check_rest(url: str, bodies: list[bytes], expected: np.ndarray, k: int = 8) -> float:
    """Max |server - in-process| over the first k rows (raises past PARITY: wrong numbers are not timed)."""
    got = np.array([post_json(url, b)["outputs"][0]["data"][0] for b in bodies[:k]], dtype=np.float64)
    diff = float(np.max(np.abs(got - expected[:k])))
    if diff > PARITY:
        raise RuntimeError(f"{url}: predictions differ from the in-process model by {diff:.3g}")
    return diff


def check_grpc(target: str, requests: list, expected: np.ndarray, k: int = 8) -> float:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        got = []
        for req in requests[:k]:
            out = stub.ModelInfer(req, timeout=30)
            if out.raw_output_contents:
                got.append(float(np.frombuffer(out.raw_output_contents[0], dtype=np.float32)[0]))
            else:
                got.append(float(out.outputs[0].contents.fp32_contents[0]))
    diff = float(np.max(np.abs(np.array(got) - expected[:k])))
    if diff > PARITY:
        raise RuntimeError(f"gRPC {target}: predictions differ from the in-process model by {diff:.3g}")
    return diff


# ---- sections -----------------------------------------------------------------------------------
def bench_raw(ctx: dict, duration: float) -> dict:
    from mlops.features.store import online_features
    from serving.predictor import load_predictor

    req, served = ctx["requests"], ctx["served"]
    feast, n = req["feast"], req["rows"]
    one = [{k: v[i : i + 1] for k, v in req["model"].items()} for i in range(n)]
    out = {}
    runtimes = ["savedmodel", "tflite"] + [r for r in [served.predictor.runtime] if r not in ("savedmodel", "tflite")]
    for runtime in runtimes:  # + the server's runtime ("auto": TFLite for small batches)
        predictor = (
            served.predictor if runtime == served.predictor.runtime else load_predictor(ctx["model_dir"], runtime)
        )
        i = itertools.count()
        out[f"{runtime}_1row"] = loadgen.measure_calls(
            lambda: predictor.predict(one[next(i) % n]),  # noqa: B023  (measured before the loop moves on)
            duration_s=duration,
        )
        batch = {k: v[:BATCH_ROWS] for k, v in req["model"].items()}
        out[f"{runtime}_{BATCH_ROWS}rows"] = loadgen.measure_calls(
            lambda: predictor.predict(batch),  # noqa: B023  (measured before the loop moves on)
            duration_s=duration,
            rows_per_call=BATCH_ROWS,
        )
        log(
            f"raw {runtime}: 1 row p50 {out[f'{runtime}_1row']['p50_ms']} ms, {BATCH_ROWS} rows "
            f"{out[f'{runtime}_{BATCH_ROWS}rows']['rows_per_s']} rows/s"
        )
    enricher, config = served.enricher, ctx["config"]
    store = enricher.store()
    keys = [k for k in config.dataset.entity_keys if k != enricher.time_column]
    entity_rows = [
        {**{k: feast[k][i] for k in keys}, enricher.time_column: feast[enricher.time_column][i]} for i in range(n)
    ]
    i = itertools.count()
    out["online_read_1row"] = loadgen.measure_calls(
        lambda: online_features(config, [entity_rows[next(i) % n]], store=store), duration_s=duration
    )
    feast_one = [{k: v[j : j + 1] for k, v in feast.items()} for j in range(n)]
    i = itertools.count()

    def model_plus_read():
        cols, _ = enricher.complete(feast_one[next(i) % n])
        return served.predictor.predict(cols)

    out["model_plus_online_read_1row"] = loadgen.measure_calls(model_plus_read, duration_s=duration)
    log(
        f"raw online read p50 {out['online_read_1row']['p50_ms']} ms; model + read p50 "
        f"{out['model_plus_online_read_1row']['p50_ms']} ms"
    )
    return out


def spread(values) -> dict | None:
    """min / median / max over the rounds (missing values left out); None if none was measured."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(float(np.median(values)), 3), "max": round(max(values), 3)}


def _median_stats(rounds: list[dict]) -> dict:
    """Per statistic, the median over the rounds (a round disturbed by another job moves it less)."""
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "calls_per_s", "client_cpu_s")
    out = {k: round(float(np.median([r[k] for r in rounds if k in r])), 3) for k in keys if any(k in r for r in rounds)}
    out["errors"] = sum(r.get("errors", 0) for r in rounds)
    return out


def server_argv(ctx: dict, http_port: int, grpc_port: int) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "serving",
        "--model",
        f"{MODEL}@production",
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
    ]
    for k, v in ctx["overrides"].items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    return argv


def bench_online(
    ctx: dict, work: Path, *, concurrency: int, duration: float, warmup: float, rounds: int, runtimes: list[str]
) -> dict:
    """The peer and our server up together; every round measures each endpoint in turn (1 worker,
    then `concurrency` workers), so a burst of load from elsewhere hits all of them alike."""
    import contextlib
    import importlib.util

    req = ctx["requests"]
    endpoints: dict[str, tuple[str, callable]] = {}  # name -> (group, call(**load))
    out: dict = {"peer": {}}
    with contextlib.ExitStack() as stack:
        port = free_port()
        stack.enter_context(
            Child(
                "peer",
                [
                    sys.executable,
                    "-m",
                    "bench.peer_fastapi",
                    "--model-dir",
                    ctx["model_dir"],
                    "--port",
                    str(port),
                    "--runtime",
                    runtimes[0],
                ],
                f"http://127.0.0.1:{port}/v2/health/ready",
                work,
            )
        )
        url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
        bodies = rest_bodies(req["model"], req["dtypes"], req["rows"])
        out["peer"]["max_abs_diff"] = check_rest(url, bodies, req["expected"])
        endpoints["rest_full"] = ("peer", lambda url=url, b=bodies, **kw: loadgen.run_rest(url, b, **kw))

        servers = []
        if importlib.util.find_spec("serving.model") is None or importlib.util.find_spec("serving.__main__") is None:
            out["server"] = {
                "status": "not available",
                "reason": "serving/model.py + python -m serving are not there yet",
            }
            runtimes = []
        for runtime in runtimes:
            # The first runtime is "server" (the targets use it); the others "server_<runtime>".
            group = "server" if runtime == runtimes[0] else f"server_{runtime}"
            http_port, grpc_port = free_port(), free_port()
            argv = server_argv(ctx, http_port, grpc_port) + ["--runtime", runtime]
            out[group] = {"argv": argv[2:]}
            servers.append(
                stack.enter_context(Child(group, argv, f"http://127.0.0.1:{http_port}/v2/health/ready", work))
            )
            url = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/infer"
            target = f"127.0.0.1:{grpc_port}"
            for form in ("feast", "full"):
                bodies = rest_bodies(req[form], req["dtypes"], req["rows"])
                grpcs = grpc_requests(req[form], req["dtypes"], req["rows"], MODEL)
                out[group][f"{form}_max_abs_diff"] = max(
                    check_rest(url, bodies, req["expected"]), check_grpc(target, grpcs, req["expected"])
                )
                endpoints[f"{group} rest_{form}"] = (
                    group,
                    lambda url=url, b=bodies, **kw: loadgen.run_rest(url, b, **kw),
                )
                endpoints[f"{group} grpc_{form}"] = (
                    group,
                    lambda t=target, r=grpcs, **kw: loadgen.run_grpc(t, r, **kw),
                )

        loads = {"latency_1_worker": 1, f"throughput_{concurrency}_workers": concurrency}
        measured: dict = {}
        for r in range(rounds):
            for name, (group, call) in endpoints.items():
                for load, workers in loads.items():
                    stats = call(concurrency=workers, warmup_s=warmup, duration_s=duration)
                    measured.setdefault(name, {}).setdefault(load, []).append(stats)
                    log(
                        f"round {r + 1}/{rounds} {group} {name.split()[-1]} {workers} worker(s): p50 "
                        f"{stats.get('p50_ms')} p99 {stats.get('p99_ms')} ms, {stats.get('calls_per_s')} req/s"
                    )
        for name, (group, _) in endpoints.items():
            out[group][name.split()[-1]] = {
                load: {
                    **_median_stats(runs),
                    "spread": {k: spread([run.get(k) for run in runs]) for k in ("p50_ms", "p99_ms", "calls_per_s")},
                    "rounds": runs,
                }
                for load, runs in measured[name].items()
            }
        for server in servers:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} died during the run: {server.tail()}")
    return out


def _raw_batched(config, predictor, src: str, dst: str, chunk_rows: int) -> dict:
    """What batch inference costs without the framework: parquet read -> raw encoding -> predict
    -> parquet write, chunk by chunk, the same columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    f = pq.ParquetFile(src)
    writer, rows = None, 0
    for batch in f.iter_batches(batch_size=chunk_rows, columns=[s.name for s in predictor.inputs]):
        cols = {}
        for s in predictor.inputs:
            arr = batch.column(s.name)
            if s.dtype == "float32":
                cols[s.name] = arr.to_numpy(zero_copy_only=False).astype(np.float32)
            else:
                cols[s.name] = arr.fill_null("").to_numpy(zero_copy_only=False)
        p = predictor.predict(cols)
        out = pa.table({"row_id": pa.array(np.arange(rows, rows + len(p))), "prediction": pa.array(p)})
        if writer is None:
            writer = pq.ParquetWriter(dst, out.schema)
        writer.write_table(out)
        rows += len(p)
    writer.close()
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1)}


def bench_batch(ctx: dict, work: Path, rows: int) -> dict:
    try:
        from serving.batch import resolve_input, run_batch
    except ImportError as e:
        raise NotAvailable(f"serving.batch: {e}") from None
    import pyarrow as pa
    import pyarrow.parquet as pq

    config, served = ctx["config"], ctx["served"]
    src = work / f"batch-input-{rows}.parquet"
    if not src.exists():  # February's flights with every model input, repeated up to `rows`
        sets = request_sets(served, february_flights(config, None))
        month = pa.table({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in sets["model"].items()})
        table = pa.concat_tables([month] * -(-rows // month.num_rows)).slice(0, rows)
        pq.write_table(table, str(src))
    chunk = config.serving.batch.chunk_rows
    out = {"rows": rows, "chunk_rows": chunk}
    raw = [
        _raw_batched(config, served.predictor, str(src), str(work / "raw-batch-out.parquet"), chunk) for _ in range(2)
    ]
    out["raw_batched"] = max(raw, key=lambda r: r["rows_per_s"])  # best of 2: the first warms the file cache
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        result = run_batch(config, served, resolve_input(config, str(src)), str(work / "batch-out.parquet"))
        seconds = time.perf_counter() - t0
        runs.append(
            {
                "rows": result.rows,
                "seconds": round(seconds, 3),
                "rows_per_s": round(result.rows / seconds, 1),
                "stage_seconds": result.summary.get("stage_seconds"),
            }
        )
    out["run_batch"] = max(runs, key=lambda r: r["rows_per_s"])
    out["ratio"] = round(out["run_batch"]["rows_per_s"] / out["raw_batched"]["rows_per_s"], 3)
    log(f"batch: run_batch {out['run_batch']['rows_per_s']} rows/s vs raw {out['raw_batched']['rows_per_s']} rows/s")
    return out


def bench_stream(ctx: dict, events: int) -> dict:
    try:
        from serving.stream import benchmark_throughput
    except ImportError as e:
        raise NotAvailable(f"serving.stream: {e}") from None
    from serving.handle import ModelHandle

    req, config = ctx["requests"], ctx["config"]
    rows = [
        {k: _cell(v[i], req["dtypes"][k] == "float32") for k, v in req["feast"].items()} for i in range(req["rows"])
    ]
    handle = ModelHandle.from_config(config, f"{MODEL}@production")
    out = benchmark_throughput(config, handle, events=events, rows=rows)
    log(f"stream: {out.get('events_per_s')} events/s")
    return out


# ---- targets ------------------------------------------------------------------------------------
def _get(d: dict, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _per_round(node: dict | None, key: str) -> list | None:
    """`key` of each round of a measured endpoint and load (its "rounds"); None if not measured."""
    runs = (node or {}).get("rounds")
    return [run.get(key) for run in runs] if runs else None


def _coldstart_rounds(coldstart: dict | None) -> tuple[list | None, list | None]:
    """(ready_s, bare TF import + model load + 3 s) of each cold-start round, paired as measured."""
    rounds = (coldstart or {}).get("per_round") or {}
    bare, servers = rounds.get("bare"), rounds.get("server")
    if not bare or not servers:
        return None, None
    return [s.get("ready_s") for s in servers], [round(b["tf_import_s"] + b["model_load_s"] + 3, 2) for b in bare]


def verdict(name: str, values, limits, ok) -> dict:
    """A target over the rounds: `values` and `limits` are one number per round (measured in the same
    round: interleaved, so load from elsewhere hits both sides alike) or one number for every round
    (an in-process or one-off measurement). It passes only if it passes in every round; `value` and
    `limit` are the medians, `rounds_passed` says how many rounds held."""
    rows = None
    if values is not None and limits is not None:
        n = max(len(x) if isinstance(x, list) else 1 for x in (values, limits))
        values, limits = ([x] * n if not isinstance(x, list) else x for x in (values, limits))
        rows = [
            {"value": v, "limit": lim, "pass": None if v is None or lim is None else bool(ok(v, lim))}
            for v, lim in zip(values, limits, strict=True)
        ]
    if not rows or any(r["pass"] is None for r in rows):
        return {"target": name, "value": None, "limit": None, "pass": None, "per_round": rows}
    return {
        "target": name,
        "value": spread(r["value"] for r in rows)["median"],
        "limit": spread(r["limit"] for r in rows)["median"],
        "pass": all(r["pass"] for r in rows),
        "rounds_passed": f"{sum(r['pass'] for r in rows)}/{len(rows)}",
        "per_round": rows,
    }


def targets(result: dict, concurrency: int) -> list[dict]:
    """Each issue target, judged round by round (see `verdict`); pass None where a number is missing."""
    out = []
    thr = f"throughput_{concurrency}_workers"

    def add(name, values, limits, ok):
        out.append(verdict(name, values, limits, ok))

    raw, server, peer = (
        result.get("raw", {}),
        _get(result, "online", "server") or {},
        _get(result, "online", "peer") or {},
    )
    # The raw calls are measured once, in process: their limit applies to every round.
    read_p99 = _get(raw, "model_plus_online_read_1row", "p99_ms")  # with the server's runtime
    model_p99 = _get(raw, f"{result['settings']['server_runtimes'][0]}_1row", "p99_ms")
    for proto in ("rest", "grpc"):
        for form, base in (("feast", read_p99), ("full", model_p99)):
            add(
                f"{proto} {form} 1-row p99 <= 2 x raw p99 + 1 ms (ms)",
                _per_round(_get(server, f"{proto}_{form}", "latency_1_worker"), "p99_ms"),
                None if base is None else round(2 * base + 1, 3),
                lambda v, lim: v <= lim,
            )
    for proto in ("rest", "grpc"):
        add(
            f"{proto} full throughput >= peer (req/s, {concurrency} workers)",
            _per_round(_get(server, f"{proto}_full", thr), "calls_per_s"),
            _per_round(_get(peer, "rest_full", thr), "calls_per_s"),
            lambda v, lim: v >= lim,
        )
    for form in ("feast", "full"):
        add(
            f"gRPC {form} p99 < REST {form} p99 (ms, 1 worker)",
            _per_round(_get(server, f"grpc_{form}", "latency_1_worker"), "p99_ms"),
            _per_round(_get(server, f"rest_{form}", "latency_1_worker"), "p99_ms"),
            lambda v, lim: v < lim,
        )
    batch = result.get("batch", {})
    add(
        "batch rows/s >= 70% of raw batched (ratio)",
        batch.get("ratio"),
        0.7 if "ratio" in batch else None,
        lambda v, lim: v >= lim,
    )
    add(
        "streaming >= 1,000 events/s end to end",
        _get(result, "stream", "events_per_s"),
        1000 if "stream" in result else None,
        lambda v, lim: v >= lim,
    )
    add(
        "cold start: ready <= bare TF import + model load + 3 s (s)",
        *_coldstart_rounds(result.get("coldstart")),
        lambda v, lim: v <= lim,
    )
    return out


def verdict_summary(checks: list[dict]) -> dict:
    """How many targets passed in every round, failed in at least one, or were not measured."""
    return {
        "passed": [t["target"] for t in checks if t["pass"] is True],
        "failed": [f"{t['target']}: {t.get('rounds_passed')} rounds" for t in checks if t["pass"] is False],
        "not_measured": [t["target"] for t in checks if t["pass"] is None],
        "rule": "a target passes only if it passes in every round (each round compares values measured in that round)",
    }


def _ratios(result: dict, concurrency: int) -> dict:
    thr = f"throughput_{concurrency}_workers"
    raw, server, peer = (
        result.get("raw", {}),
        _get(result, "online", "server") or {},
        _get(result, "online", "peer") or {},
    )
    runtime = result["settings"]["server_runtimes"][0]
    pairs = {
        "rest_full_p50_over_raw_model_p50": (
            _get(server, "rest_full", "latency_1_worker", "p50_ms"),
            _get(raw, f"{runtime}_1row", "p50_ms"),
        ),
        "grpc_full_p50_over_raw_model_p50": (
            _get(server, "grpc_full", "latency_1_worker", "p50_ms"),
            _get(raw, f"{runtime}_1row", "p50_ms"),
        ),
        "rest_feast_p50_over_raw_model_plus_read_p50": (
            _get(server, "rest_feast", "latency_1_worker", "p50_ms"),
            _get(raw, "model_plus_online_read_1row", "p50_ms"),
        ),
        "peer_p50_over_raw_savedmodel_p50": (
            _get(peer, "rest_full", "latency_1_worker", "p50_ms"),
            _get(raw, "savedmodel_1row", "p50_ms"),
        ),
        "rest_full_throughput_over_peer": (
            _get(server, "rest_full", thr, "calls_per_s"),
            _get(peer, "rest_full", thr, "calls_per_s"),
        ),
        "tflite_1row_p50_over_savedmodel_1row_p50": (
            _get(raw, "tflite_1row", "p50_ms"),
            _get(raw, "savedmodel_1row", "p50_ms"),
        ),
    }
    return {k: round(a / b, 3) for k, (a, b) in pairs.items() if a is not None and b}


# ---- cold start ---------------------------------------------------------------------------------
BARE_LOAD = """
import json, sys, time
t0 = time.perf_counter()
import tensorflow
t1 = time.perf_counter()
from serving.predictor import load_predictor
load_predictor(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"tf_import_s": t1 - t0, "model_load_s": t2 - t1}))
"""


def bench_coldstart(ctx: dict, work: Path, rounds: int) -> dict:
    """Medians over `rounds`, each a fresh bare process then a fresh server (alternating, so load
    from elsewhere hits both alike). Phase times are the server's own log lines."""
    import re

    runtime = ctx["config"].serving.runtime
    model_dir = ctx["served"].model_dir
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    bare, servers = [], []
    for i in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", BARE_LOAD, model_dir, runtime],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        bare.append(json.loads(out.stdout.strip().splitlines()[-1]))
        http_port, grpc_port = free_port(), free_port()
        log_path = work / f"coldstart-{i}.log"
        with open(log_path, "wb") as log_file:
            started = time.monotonic()
            proc = subprocess.Popen(
                server_argv(ctx, http_port, grpc_port),
                cwd=str(REPO),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                listening = ready = None
                while ready is None and time.monotonic() - started < 300:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"the server exited with {proc.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
                        )
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1) as r:
                            ready = time.monotonic() - started if r.status == 200 else None
                    except urllib.error.HTTPError:  # 503: listening, loading
                        listening = listening or time.monotonic() - started
                    except OSError:
                        pass
                    time.sleep(0.05)
                if ready is None:
                    raise RuntimeError(f"the server was not ready within 300 s: {log_path}")
                stop_started = time.monotonic()
                proc.send_signal(15)
                proc.wait(60)
                stopped = time.monotonic() - stop_started
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = log_path.read_text(errors="replace")
        phases = {
            key: float(m.group(1))
            for key, pattern in (
                ("tf_import_s", r"imported TensorFlow in ([0-9.]+) s"),
                ("model_load_s", r"loaded \S+ in ([0-9.]+) s"),
                ("feast_store_s", r"built the Feast FeatureStore in ([0-9.]+) s"),
                ("feast_read_warmup_s", r"warmed up the Feast online read in ([0-9.]+) s"),
            )
            if (m := re.search(pattern, text))
        }
        servers.append(
            {
                "listening_s": listening,
                "ready_s": ready,
                "sigterm_to_exit_s": stopped,
                "exit_code": proc.returncode,
                **{f"log_{k}": v for k, v in phases.items()},
            }
        )
        log(
            f"cold start {i + 1}/{rounds}: ready in {ready:.1f} s (bare TF import + load "
            f"{bare[-1]['tf_import_s'] + bare[-1]['model_load_s']:.1f} s)"
        )

    def median(rows: list[dict], key: str):
        values = sorted(r[key] for r in rows if r.get(key) is not None)
        return round(values[len(values) // 2], 2) if values else None

    floor = median([{"s": b["tf_import_s"] + b["model_load_s"]} for b in bare], "s")
    return {
        "runtime": runtime,
        "rounds": rounds,
        "bare": {k: median(bare, k) for k in ("tf_import_s", "model_load_s")},
        "bare_tf_import_plus_load_s": floor,
        "server": {k: median(servers, k) for k in servers[0]},
        "target_ready_s": round(floor + 3, 2),
        "per_round": {"bare": bare, "server": servers},
    }


# ---- main ---------------------------------------------------------------------------------------
# ---- outage (issue 11) ----------------------------------------------------------------------------
OUTAGE_DEADLINE_MS = 150.0
OUTAGE_COOLDOWN_S = 1.0


def _closed_loop_rest(url: str, bodies: list[bytes], *, workers: int, duration_s: float) -> dict:
    """`workers` threads POSTing in a closed loop for `duration_s`; every answer counts (a 503 is
    an answer here): p50/p99 over all, throughput, status codes, degraded answers."""
    import threading

    import httpx

    latencies, statuses, degraded = [], {}, [0]
    end = time.monotonic() + duration_s
    lock = threading.Lock()

    def worker(offset: int):
        turn = itertools.cycle(bodies[offset:] + bodies[:offset])
        with httpx.Client(timeout=30, headers={"Content-Type": "application/json"}) as client:
            while time.monotonic() < end:
                started = time.perf_counter()
                r = client.post(url, content=next(turn))
                seconds = time.perf_counter() - started
                marked = r.status_code == 200 and b'"degraded"' in r.content
                with lock:
                    latencies.append(seconds)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    degraded[0] += marked

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ms = np.asarray(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "max_ms": round(float(ms.max()), 2) if len(ms) else None,
        "calls_per_s": round(len(ms) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "degraded": degraded[0],
    }


def bench_outage(ctx: dict, work: Path, *, duration: float, concurrency: int) -> dict:
    """Per policy (serving.feature_store.on_failure defaults | fail): a server on its own
    redis-server (a free port; the store materialized again for each policy), 1-row "feast"
    requests (one online read each) from `concurrency` closed-loop REST workers: healthy, then the
    Redis paused (SIGSTOP: hung), resumed, killed (down), restarted. Targets (issue 11): during an
    outage p99 <= deadline + the healthy p99; with `defaults` throughput >= 80% of healthy."""
    import shutil
    import signal

    from tests.support.serving_models import materialize_online

    if shutil.which("redis-server") is None:
        raise NotAvailable("redis-server is not installed")
    req = ctx["requests"]
    bodies = rest_bodies(req["feast"], req["dtypes"], req["rows"])
    port = free_port()
    redis_dir = work / "outage-redis"
    redis_dir.mkdir(exist_ok=True)

    def start_redis() -> subprocess.Popen:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [*argv, "--daemonize", "no", "--dir", str(redis_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    out: dict = {"deadline_ms": OUTAGE_DEADLINE_MS, "workers": concurrency, "phase_s": duration, "targets": []}
    redis = start_redis()
    try:
        for policy in ("defaults", "fail"):
            if redis.poll() is not None:
                redis = start_redis()
            project = f"benchout{os.getpid()}{policy[0]}"
            log(f"outage ({policy}): materializing February 2013 into redis-server :{port}")
            materialize_online(
                str(ctx["root"]), project, online_store="redis", overrides={"features.redis_url": f"127.0.0.1:{port}"}
            )
            overrides = {
                **ctx["overrides"],
                "features.project": project,
                "features.online_store": "redis",
                "features.redis_url": f"127.0.0.1:{port}",
                "serving.payload_log.enabled": False,
                "serving.feature_store.timeout_ms": OUTAGE_DEADLINE_MS,
                "serving.feature_store.on_failure": policy,
                "serving.feature_store.breaker_cooldown_s": OUTAGE_COOLDOWN_S,
            }
            http_port, grpc_port = free_port(), free_port()
            argv = server_argv({**ctx, "overrides": overrides}, http_port, grpc_port)
            url = f"http://127.0.0.1:{http_port}/v2/models/{MODEL}/infer"
            phases: dict = {}
            with Child(f"outage-{policy}", argv, f"http://127.0.0.1:{http_port}/v2/health/ready", work):
                _closed_loop_rest(url, bodies, workers=concurrency, duration_s=1.0)  # warm-up
                phases["healthy"] = _closed_loop_rest(url, bodies, workers=concurrency, duration_s=duration)
                redis.send_signal(signal.SIGSTOP)
                phases["hung"] = _closed_loop_rest(url, bodies, workers=concurrency, duration_s=duration)
                redis.send_signal(signal.SIGCONT)
                time.sleep(OUTAGE_COOLDOWN_S + 0.5)  # the breaker's probe closes it
                redis.kill()
                redis.wait()
                phases["down"] = _closed_loop_rest(url, bodies, workers=concurrency, duration_s=duration)
                redis = start_redis()
                time.sleep(OUTAGE_COOLDOWN_S + 0.5)
                phases["restarted_empty"] = _closed_loop_rest(url, bodies, workers=concurrency, duration_s=duration)
            out[policy] = phases
            healthy = phases["healthy"]
            for outage in ("hung", "down"):
                limit = OUTAGE_DEADLINE_MS + healthy["p99_ms"]
                p99 = phases[outage]["p99_ms"]
                out["targets"].append(
                    {
                        "name": f"{policy} {outage}: p99 <= deadline + healthy p99",
                        "value": p99,
                        "limit": limit,
                        "pass": p99 is not None and p99 <= limit,
                    }
                )
                no_5xx_but_503 = all(code in ("200", "503") for code in phases[outage]["statuses"])
                out["targets"].append({"name": f"{policy} {outage}: only 200 / 503 answers", "pass": no_5xx_but_503})
                if policy == "defaults":
                    limit = round(0.8 * healthy["calls_per_s"], 1)
                    rate = phases[outage]["calls_per_s"]
                    out["targets"].append(
                        {
                            "name": f"defaults {outage}: throughput >= 80% of healthy",
                            "value": rate,
                            "limit": limit,
                            "pass": rate >= limit,
                        }
                    )
    finally:
        if redis.poll() is None:
            redis.send_signal(signal.SIGCONT)
            redis.kill()
            redis.wait()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="a Trainer output (default: train one, ~1 min)")
    ap.add_argument("--work", help="work directory; reused by a later run (default: a new temporary one)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per load measurement")
    ap.add_argument("--rounds", type=int, default=3, help="online measurements are repeated, interleaved; medians")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--raw-duration", type=float, default=3.0, help="seconds per in-process measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop workers for the throughput runs")
    ap.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument(
        "--server-runtimes",
        type=lambda v: v.split(","),
        help="model runtimes of the server, e.g. auto,savedmodel,tflite; the first (default: the "
        "config's serving.runtime) is the one the raw calls and the targets use",
    )
    ap.add_argument("--batch-rows", type=int, default=500_000, help="rows of the batch input (February, repeated)")
    ap.add_argument("--stream-events", type=int, default=10_000)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    # kserve.model_server parses sys.argv when imported (abbreviations included: --work would be
    # its --workers); our flags are parsed already.
    sys.argv = sys.argv[:1]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-serving-"))

    from serving.handle import ModelHandle

    result: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "work": str(work),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "raw_duration_s": args.raw_duration,
            "online_store": args.online_store,
            "rounds": args.rounds,
            "request_rows": REQUEST_ROWS,
        },
    }
    s = setup(work, args.model_dir, args.online_store)
    args.server_runtimes = args.server_runtimes or [s["config"].serving.runtime]
    result["settings"]["server_runtimes"] = args.server_runtimes
    served = ModelHandle.from_config(s["config"], f"{MODEL}@production", runtime=args.server_runtimes[0]).current
    requests = request_sets(served, february_flights(s["config"], REQUEST_ROWS))
    ctx = {**s, "served": served, "requests": requests}
    result["setup"] = {
        "model_dir": s["model_dir"],
        "seconds": s["seconds"],
        "model": served.label,
        "store_rows_without_features": served.enricher.rows_without_features,
        "request_fields": {"feast": sorted(requests["feast"]), "full": sorted(requests["full"])},
    }
    sections = {
        "raw": lambda: bench_raw(ctx, args.raw_duration),
        "online": lambda: bench_online(
            ctx,
            work,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            rounds=args.rounds,
            runtimes=args.server_runtimes,
        ),
        "batch": lambda: bench_batch(ctx, work, args.batch_rows),
        "stream": lambda: bench_stream(ctx, args.stream_events),
        "coldstart": lambda: bench_coldstart(ctx, work, args.rounds),
        "outage": lambda: bench_outage(ctx, work, duration=args.duration, concurrency=args.concurrency),
    }
    try:
        run_sections(result, sections, only)
    finally:
        if args.online_store == "redis" and not args.work:  # nobody will reuse this project's keys
            from mlops.features.store import teardown

            teardown(s["config"])
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["ratios"] = _ratios(result, args.concurrency)
    result["targets"] = targets(result, args.concurrency)
    result["verdict"] = verdict_summary(result["targets"])
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return result


def run_sections(result: dict, sections: dict, only: list[str]) -> None:
    for name in only:
        load_before = [round(x, 2) for x in os.getloadavg()]
        log(f"section {name} (load average {load_before})")
        try:
            result[name] = sections[name]()
        except NotAvailable as e:
            result[name] = {"status": "not available", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - one broken piece must not hide the other numbers
            result[name] = {
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc()[-3000:],
            }
            log(f"section {name} failed: {e}")
        result[name]["loadavg_before"] = load_before


if __name__ == "__main__":
    main()
