"""Prometheus metrics of the model server, beside the ones KServe and prometheus_client have.

Already there (not duplicated): KServe's per-stage histograms `request_preprocess_seconds`,
`request_predict_seconds`, `request_postprocess_seconds` {model_name} (kserve.metrics; our
preprocess stage includes the Feast online read), and prometheus_client's default collectors:
`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...,
`python_gc_*`. All of it is served at GET /metrics by KServe's REST server.

Added here:

    mlops_requests_total{protocol, endpoint, code}        every REST request / gRPC call
    mlops_request_errors_total{protocol, endpoint, code}  the ones that did not succeed (a readiness
                                                          probe's 503 is an answer, not an error)
    mlops_request_seconds{protocol, endpoint}             end to end in the server, sub-ms buckets
    mlops_predicted_rows_total{model, version}
    mlops_rows_without_features_total{model}              the store knew nothing: defaults used
    mlops_model_info{model, version, runtime}             1 for the version being served
    mlops_model_ready{model}
    mlops_model_reloads_total{model, result}              hot reloads: swapped | failed
    mlops_payload_log_rows{model, state}                  PayloadLogger.stats() at scrape time
    mlops_feature_store_failures_total{model, reason}     online reads that failed or were not tried:
                                                          timeout | unavailable | error | breaker_open
                                                          (each one request answered with defaults
                                                          and a degraded mark, or a 503)
    mlops_feature_store_breaker_state{model}              0 closed, 1 half-open, 2 open

Labels stay bounded: `endpoint` is a route kind (v2_infer, v1_predict, ...) or a gRPC method
name, never a raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mlops.errors import InvalidInput

# Sub-millisecond resolution where the server spends its time (KServe's histograms start at 5 ms).
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

REQUESTS = Counter("mlops_requests", "Requests by protocol, endpoint and status code", ["protocol", "endpoint", "code"])
REQUEST_ERRORS = Counter(
    "mlops_request_errors",
    "Requests that did not succeed (4xx/5xx, gRPC status not OK)",
    ["protocol", "endpoint", "code"],
)
REQUEST_SECONDS = Histogram(
    "mlops_request_seconds", "Time in the server per request", ["protocol", "endpoint"], buckets=LATENCY_BUCKETS
)
PREDICTED_ROWS = Counter("mlops_predicted_rows", "Rows predicted", ["model", "version"])
MODEL_INFO = Gauge("mlops_model_info", "1 for the model version being served", ["model", "version", "runtime"])
MODEL_READY = Gauge("mlops_model_ready", "1 once the model is loaded and warmed up", ["model"])
FEATURE_STORE_FAILURES = Counter(
    "mlops_feature_store_failures",
    "Online reads that failed or were not tried (breaker open), by reason",
    ["model", "reason"],
)
FEATURE_STORE_BREAKER_STATE = Gauge(
    "mlops_feature_store_breaker_state", "Feature store circuit breaker: 0 closed, 1 half-open, 2 open", ["model"]
)


def rest_endpoint(path: str) -> str:
    """The route kind of a REST path (a bounded label value)."""
    if path.startswith("/v2/"):
        if path.endswith("/infer"):
            return "v2_infer"
        if path.startswith("/v2/health/"):
            return "v2_" + path[len("/v2/health/") :] if path in ("/v2/health/live", "/v2/health/ready") else "other"
        if path.startswith("/v2/models/"):
            return "v2_model_ready" if path.endswith("/ready") else "v2_model_metadata"
        return "v2_other"
    if path.startswith("/v1/models/"):
        if path.endswith(":predict"):
            return "v1_predict"
        return "v1_explain" if path.endswith(":explain") else "v1_model_ready"
    return {"/metrics": "metrics", "/": "live"}.get(path, "other")


# What a request to these asks for is the model; the others are probes, metadata, scrapes.
INFERENCE_ENDPOINTS = frozenset({"v2_infer", "v1_predict", "v1_explain", "ModelInfer"})
# A probe's 503 is its answer (not ready: loading or shutting down), not a failed request.
PROBE_ENDPOINTS = frozenset({"v2_ready", "v2_model_ready", "v1_model_ready"})
_last_inference_at = 0.0


def last_inference_at() -> float:
    """time.monotonic() when the last inference request ended (the shutdown drain watches it)."""
    return _last_inference_at


def record_request(protocol: str, endpoint: str, code: str, ok: bool, seconds: float) -> None:
    global _last_inference_at
    if endpoint in INFERENCE_ENDPOINTS:
        _last_inference_at = time.monotonic()
    elif not ok and code == "503" and endpoint in PROBE_ENDPOINTS:
        ok = True
    REQUESTS.labels(protocol, endpoint, code).inc()
    if not ok:
        REQUEST_ERRORS.labels(protocol, endpoint, code).inc()
    REQUEST_SECONDS.labels(protocol, endpoint).observe(seconds)


class RequestTooLarge(InvalidInput):
    """A request body beyond the limit: the middleware answers 413 with this message (more precise
    than the 400 of its kind)."""


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware): counts and times every
    REST request, and caps the request body: a Content-Length beyond the limit is refused with 413
    before the body is read; a chunked body raises RequestTooLarge (-> 413) once it has grown past
    the limit, so it is never held in memory whole."""

    def __init__(self, app, max_body_bytes: int | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        endpoint = rest_endpoint(scope["path"])
        status = 500  # if the app dies before starting a response

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            size = self._content_length(scope)
            if size is not None and size > self.max_body_bytes:
                # Read (and drop) the body first: a client that sends it whole before reading the
                # answer (most do) would otherwise meet a reset instead of the 413.
                await _drain(receive, DRAIN_LIMIT_BYTES)
                await _send_json(send_and_watch, 413, self._message(f"request body of {size} bytes"))
            elif size is None and self.max_body_bytes is not None:
                await self.app(scope, self._capped(receive), send_and_watch)
            else:
                await self.app(scope, receive, send_and_watch)
        finally:
            record_request("rest", endpoint, str(status), status < 400, time.perf_counter() - start)

    def _message(self, what: str) -> str:
        return f"{what} exceeds the limit of {self.max_body_bytes} bytes (serving.max_request_bytes)"

    def _content_length(self, scope) -> int | None:
        if self.max_body_bytes is None:
            return None
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return None  # the HTTP parser has refused it already
        return None

    def _capped(self, receive):
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if message.get("more_body"):
                        await _drain(receive, DRAIN_LIMIT_BYTES)  # as above: answer, don't reset
                    raise RequestTooLarge(self._message(f"a chunked request body of more than {received} bytes"))
            return message

        return capped_receive


# How much of an oversized body is read and dropped before the 413 (beyond it the connection is
# closed mid-upload: a client sending more than this gets a reset, as from any proxy).
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


async def _drain(receive, limit: int) -> None:
    drained = 0
    while drained < limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        drained += len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def _send_json(send, status: int, error: str) -> None:
    import orjson

    body = orjson.dumps({"error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServedModelCollector:
    """Counters the served model keeps itself, read at scrape time: rows the feature store knew
    nothing about (the enricher's count), hot reloads (the handle's failures), PayloadLogger.stats().
    One collector per process; models come and go (tests start several)."""

    def __init__(self):
        # model -> {"rows_without_features": n, "reloads": {"swapped": n, "failed": n}, "payload_log": {...}}
        self.sources: dict[str, Callable[[], dict]] = {}

    def collect(self):
        rows = CounterMetricFamily(
            "mlops_rows_without_features",
            "Rows for which the feature store had no values (documented defaults used)",
            labels=["model"],
        )
        reloads = CounterMetricFamily("mlops_model_reloads", "Hot reloads of a moved alias", labels=["model", "result"])
        log = GaugeMetricFamily(
            "mlops_payload_log_rows",
            "Payload log rows by state (queued, logged, written, dropped, lost) and write errors",
            labels=["model", "state"],
        )
        for model, stats in list(self.sources.items()):
            values = stats()
            rows.add_metric([model], values["rows_without_features"])
            for result, n in values["reloads"].items():
                reloads.add_metric([model, result], n)
            for key, value in (values.get("payload_log") or {}).items():
                log.add_metric([model, key.removesuffix("_rows")], value)
        yield rows
        yield reloads
        yield log


SERVED_MODELS = ServedModelCollector()
REGISTRY.register(SERVED_MODELS)
