"""KServe's ModelServer, bound where configured, ready only when the model is, and faster on v2 REST.

What KServe 0.21 already provides and is used as is: the v1 and v2 REST routes and the v2 gRPC
service (kserve.protocol), the DataPlane that calls Model.preprocess/predict/postprocess with its
per-stage histograms, the error mapping (InvalidInput -> 400 / INVALID_ARGUMENT, ModelNotFound ->
404 / NOT_FOUND, ModelNotReady -> 503 / UNAVAILABLE), /metrics, SIGTERM handling.

What this subclass changes, and why:

* host: KServe binds 0.0.0.0 (REST) and [::] (gRPC); here both bind `host` (127.0.0.1 locally).
* readiness: KServe's server-level ready is true as soon as the process is up; here
  /v2/health/ready (and gRPC ServerReady) is true only when every registered model is loaded. The
  model loads in the background so liveness answers meanwhile. With
  serving.feature_store.on_failure `fail`, readiness also says no while the feature store's
  circuit breaker is open (serving.enrichment.GuardedOnlineReads); inference is still answered.
* a platform error that says when to retry (the feature store unavailable) carries `Retry-After`
  (REST header, gRPC trailing metadata `retry-after`).
* v2 REST infer: the same DataPlane call, but the body is parsed with orjson by a plain route in
  front of KServe's FastAPI one (skipping pydantic in and out, jsonable_encoder and ~40 route
  matches): measured, it is most of KServe's REST overhead. Binary-extension requests and every
  other route go to KServe's code.
* per-request logging off by default (KServe's timing middleware, latency and access log lines:
  three log records per request); `--enable_latency_logging true` brings the timing back.
* request counts, errors and latencies by endpoint (serving.metrics); a 413 naming the limit
  for an oversized body, chunked or not; gRPC messages capped at the same size.
* a malformed protobuf gets INVALID_ARGUMENT naming the message (gRPC's own answer is INTERNAL),
  an unknown datatype gets a message naming the input.
* the heap is frozen once loaded (serving.model.freeze_heap), which removes the GC pauses that
  otherwise dominate p99.
* ports: both are bound before the model loads; a busy one is one error line naming it (exit 75),
  not uvicorn's and gRPC's tracebacks. gRPC's SO_REUSEPORT is off: a second server on the same port
  is refused instead of silently taking half the traffic.
* graceful shutdown (KServe stops gRPC and unloads the model at once: requests in flight get
  NOT_FOUND or INTERNAL). On SIGTERM, within `serving.shutdown_grace_s`:
    1. drain: readiness answers 503 (REST probes, gRPC ServerReady/ModelReady false) while requests
       are still served, until no inference request came for QUIET_S (the load balancer has taken
       the pod out) or half the grace period has passed;
    2. both listeners close: new REST connections are refused, new gRPC calls get UNAVAILABLE
       (retryable); accepted requests and calls finish within the rest of the grace period;
    3. the model is unloaded (payload log flushed) once nothing is in flight; exit 0.
  SIGINT (Ctrl-C) skips the drain; a second signal stops without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from concurrent import futures

import grpc
import orjson
from fastapi import FastAPI
from kserve import InferInput, InferRequest
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.model_server import ModelServer as KServeModelServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.server import RESTServer
from starlette.requests import Request
from starlette.responses import Response

from mlops.errors import MlopsError, Unavailable, status_of
from serving import metrics
from serving.metrics import RequestMetricsMiddleware, RequestTooLarge, record_request
from serving.protocol import DATATYPES, parse_v2_binary, parse_v2_json

log = logging.getLogger("mlops.serving")

QUIET_S = 1.0  # drain: no inference request for this long = the load balancer no longer sends any
GRPC_QUIET_S = 0.05  # closing: no gRPC call for this long = a moment when gRPC can stop without cancelling one


class PortInUse(Unavailable):
    """The REST or gRPC port is taken by another process."""


class ServingDataPlane(DataPlane):
    draining = False  # set on SIGTERM: readiness says no while accepted requests are still served

    async def ready(self) -> bool:
        """Ready = every registered model loaded (plus KServe's predictor check in a transformer),
        and not shutting down."""
        if self.draining:
            return False
        models = self.model_registry.get_models()
        if not models:
            return False
        for model in models.values():
            if not await model.healthy() or getattr(model, "store_outage", False):
                return False
        return await super().ready()

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        """KServe's inference routes ask with disable_predictor_health_check=True: a request is still
        served while draining or while the feature store's breaker is open (it gets the policy's
        answer); its readiness routes (REST and gRPC) ask without it: not ready then."""
        ready = await super().model_ready(model_name, disable_predictor_health_check)
        if disable_predictor_health_check:
            return ready
        # probes: not ready while draining, or while a `fail` policy's breaker is open
        return (
            ready and not self.draining and not getattr(self.get_model_from_registry(model_name), "store_outage", False)
        )

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        handle = getattr(model, "handle", None)
        if handle is not None:  # the version served and how (KServe leaves both empty)
            metadata["versions"] = [handle.current.version]
            metadata["platform"] = f"mlops-{handle.current.predictor.runtime}"
        return metadata


# ---- REST ------------------------------------------------------------------------------------------
def v2_infer_request(body: bytes, model_name: str, json_length: str | None = None) -> InferRequest:
    """A v2 JSON body (or, with `json_length`, a binary-extension body) as KServe's InferRequest,
    checked by serving.protocol instead of pydantic and KServe's decoder (whose errors on a bad
    binary body are 500s that close the connection)."""
    parsed = parse_v2_json(body) if json_length is None else parse_v2_binary(body, json_length)
    inputs = []
    for t in parsed.tensors:
        inputs.append(InferInput(t.name, t.shape, t.datatype, t.data))
        inputs[-1]._raw_data = t.raw  # the binary extension's contents, decoded by the model's preprocess
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in parsed.outputs] if parsed.outputs else None
    return InferRequest(model_name, inputs, request_id=parsed.id, parameters=parsed.parameters, request_outputs=outputs)


def v2_infer_route(dataplane: DataPlane):
    async def v2_infer(request: Request) -> Response:
        model_name = request.path_params["model_name"]
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        body = await request.body()
        headers = dict(request.headers)
        infer_request = v2_infer_request(body, model_name, headers.get(INFERENCE_CONTENT_LENGTH_HEADER))
        response, response_headers = await dataplane.infer(model_name, infer_request, headers)
        response, encode_headers = dataplane.encode(model_name, response, headers, {})
        response_headers.update(encode_headers)
        if isinstance(response, bytes):
            return Response(response, headers=response_headers, media_type="application/octet-stream")
        response_headers.pop("content-type", None)
        return Response(orjson.dumps(response), headers=response_headers, media_type="application/json")

    return v2_infer


def v2_metadata_route(dataplane: DataPlane):
    """KServe's route passes the metadata through a pydantic model that drops each input's
    `parameters` (which say whether it is optional and may hold missing values)."""

    async def v2_metadata(request: Request) -> Response:
        metadata = await dataplane.model_metadata(request.path_params["model_name"])
        return Response(orjson.dumps(metadata), media_type="application/json")

    return v2_metadata


async def mlops_error_handler(_, exc: MlopsError) -> Response:
    """The platform's own errors: the status their kind says (mlops.errors.status_of)."""
    status = status_of(exc).http
    # a dependency's outage is logged by who saw it (one line per breaker change), not per request
    level = logging.INFO if status < 500 else logging.DEBUG if status == 503 else logging.ERROR
    log.log(level, "%s: %s", status, exc)
    return Response(
        orjson.dumps({"error": str(exc)}), status_code=status, media_type="application/json", headers=_retry_after(exc)
    )


def _retry_after(exc: BaseException) -> dict[str, str] | None:
    """Retry-After (whole seconds, at least 1) of an error that says when to retry."""
    seconds = getattr(exc, "retry_after_s", None)
    return None if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def quiet_handler(status: int, level: int):
    """KServe logs a full traceback at ERROR for each of these: a client's bad request, a readiness
    probe before the model is loaded. One log line (same status and body as KServe's) is enough."""

    async def handle(_, exc: Exception) -> Response:
        log.log(level, "%s: %s", status, exc)
        return Response(orjson.dumps({"error": str(exc)}), status_code=status, media_type="application/json")

    return handle


class _RESTServer(RESTServer):
    def __init__(self, *args, host: str, max_request_bytes: int, per_request_logs: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.max_request_bytes = max_request_bytes
        self.per_request_logs = per_request_logs
        # Signals are the ModelServer's (drain first, then stop both transports): uvicorn's own
        # handler would close the REST listener at once.
        self._server.capture_signals = contextlib.nullcontext
        self.socket: socket.socket | None = None
        if not per_request_logs:  # what uvicorn's access_log=False does, after KServe configured logging
            logging.getLogger("uvicorn.access").handlers = []
            logging.getLogger("uvicorn.access").propagate = False

    def _add_middlewares(self, app: FastAPI):
        if self.per_request_logs:
            super()._add_middlewares(app)
        app.add_middleware(RequestMetricsMiddleware, max_body_bytes=self.max_request_bytes)

    def _register_endpoints(self, app: FastAPI):
        # Added first, so it is matched before KServe's route for the same path.
        app.add_route("/v2/models/{model_name}/infer", v2_infer_route(self.dataplane), methods=["POST"])
        app.add_route("/v2/models/{model_name}", v2_metadata_route(self.dataplane), methods=["GET"])
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI):
        super()._add_exception_handlers(app)
        app.add_exception_handler(InvalidInput, quiet_handler(400, logging.INFO))
        app.add_exception_handler(MlopsError, mlops_error_handler)
        app.add_exception_handler(RequestTooLarge, quiet_handler(413, logging.INFO))
        app.add_exception_handler(ModelNotFound, quiet_handler(404, logging.INFO))
        app.add_exception_handler(ModelNotReady, quiet_handler(503, logging.DEBUG))
        app.add_exception_handler(ServerNotReady, quiet_handler(503, logging.DEBUG))

    def bind(self) -> str:
        """Binds the port now (listening starts with start()); PortInUse if it is taken."""
        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP, as getaddrinfo gives uvicorn: asyncio sets TCP_NODELAY on accepted
        # connections only for sockets that say they are TCP. With proto 0, Nagle + delayed ACKs
        # held every response ~40 ms (headers and body are two writes).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise PortInUse(
                f"{_address(host, port)}: cannot listen for REST ({e.strerror}): choose another "
                "port with --http_port or serving.http_port"
            ) from None
        self.socket = sock
        return _address(host, sock.getsockname()[1])

    async def start(self):
        # create_application() ran in ModelServer.start, before the heap was frozen
        await self._server.serve(sockets=[self.socket])

    def stop(self, grace_s: float) -> None:
        """Closes the listener; connections with a request in progress get `grace_s` to answer."""
        self._server.config.timeout_graceful_shutdown = grace_s
        self._server.should_exit = True


# ---- gRPC ------------------------------------------------------------------------------------------
class _Malformed:
    def __init__(self, error: Exception):
        self.error = error


def _lenient(deserializer):
    """A request that does not parse reaches the handler as _Malformed (gRPC's own answer would be
    INTERNAL, a server error, for the client's bad bytes)."""

    def parse(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
            return _Malformed(e)

    return parse


def _guarded(behavior, method: str):
    async def call(request, context):
        if isinstance(request, _Malformed):
            raise InvalidInput(f"malformed protobuf for {method}: {request.error}")
        return await behavior(request, context)

    return call


class ServerShuttingDown(Unavailable):
    """A call that arrived after the listeners started closing."""


class _StatusAndMetricsInterceptor(ExceptionToStatusInterceptor):
    """KServe's exception -> gRPC status mapping, the count and latency of each call by method and
    status (one interceptor layer instead of two: each costs a coroutine per call), and the
    shutdown's refusal of new calls."""

    def __init__(self):
        super().__init__()
        self.refusing = False  # set when the listeners close: new calls get UNAVAILABLE
        self.in_flight = 0  # calls admitted and not answered yet
        self.last_call_at = 0.0  # time.monotonic() of the last call's arrival

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, MlopsError):  # the platform's errors: the status their kind says
            retry_after = _retry_after(ex)
            if retry_after:  # as trailing metadata "retry-after"
                context.set_trailing_metadata(tuple((k.lower(), v) for k, v in retry_after.items()))
            await context.abort(grpc.StatusCode[status_of(ex).grpc], str(ex))
        await super().handle_exception(ex, request_or_iterator, context, method_name)

    async def intercept(self, method, request_or_iterator, context, method_name):
        start = time.perf_counter()
        code = "OK"
        self.last_call_at = time.monotonic()
        try:
            if self.refusing:
                await self.handle_exception(
                    ServerShuttingDown("the server is shutting down: retry (on another replica)"),
                    request_or_iterator,
                    context,
                    method_name,
                )
            self.in_flight += 1
            try:
                return await super().intercept(method, request_or_iterator, context, method_name)
            finally:
                self.in_flight -= 1
        except BaseException:
            status = context.code()  # set by the abort in super().handle_exception
            code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            record_request("grpc", method_name.rsplit("/", 1)[-1], code, code == "OK", time.perf_counter() - start)


class _Servicer(InferenceServicer):
    @classmethod
    def validate_grpc_request(cls, request: pb.ModelInferRequest):
        for tensor in request.inputs:  # KServe's own message here is "invalid content type"
            if tensor.datatype.upper() not in DATATYPES:
                raise InvalidInput(
                    f"input {tensor.name!r}: datatype {tensor.datatype!r} is not one of {list(DATATYPES)}"
                )
        super().validate_grpc_request(request)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        """KServe's answer lacks the versions; the proto has no parameters field, so which inputs
        are optional comes as response metadata (the REST answer has it in each input's parameters)."""
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        optional = [i["name"] for i in metadata["inputs"] if i.get("parameters", {}).get("optional")]
        context.set_trailing_metadata((("optional-inputs", ",".join(optional)),))
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions", []),
            platform=metadata["platform"],
            inputs=[{k: i[k] for k in ("name", "datatype", "shape")} for i in metadata["inputs"]],
            outputs=[{k: o[k] for k in ("name", "datatype", "shape")} for o in metadata["outputs"]],
        )


def add_servicer(servicer, server) -> None:
    """KServe's generated registration, with lenient deserializers and guarded handlers."""

    class Recorder:
        def add_generic_rpc_handlers(self, handlers):
            pass

        def add_registered_method_handlers(self, service, handlers):
            self.service, self.handlers = service, handlers

    recorder = Recorder()
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, recorder)
    handlers = {
        name: h._replace(
            request_deserializer=_lenient(h.request_deserializer), unary_unary=_guarded(h.unary_unary, name)
        )
        for name, h in recorder.handlers.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(recorder.service, handlers),))
    server.add_registered_method_handlers(recorder.service, handlers)


class _GRPCServer(GRPCServer):
    def __init__(self, *args, host: str, max_message_bytes: int, per_request_logs: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.host, self.max_message_bytes, self.per_request_logs = host, max_message_bytes, per_request_logs
        self.started = asyncio.Event()

    def bind(self, max_workers: int) -> str:
        """Builds the server and binds its port (in the event loop; serving starts with start());
        PortInUse if it is taken."""
        from grpc import aio

        _check_free(self.host, self._port, "gRPC", "--grpc_port or serving.grpc_port")  # gRPC's own error
        self.interceptor = _StatusAndMetricsInterceptor()  # is 3 lines of C++ log and a vague exception
        interceptors = [self.interceptor]
        if self.per_request_logs:
            interceptors.insert(0, LoggingInterceptor())
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicer(_Servicer(self._data_plane, self._model_repository_extension), self._server)
        address = _address(self.host, self._port)
        try:
            self._port = self._server.add_insecure_port(address)
        except RuntimeError:  # taken between the check and here
            raise PortInUse(
                f"{address}: cannot listen for gRPC: choose another port with --grpc_port or serving.grpc_port"
            ) from None
        return _address(self.host, self._port)

    async def start(self):
        await self._server.start()
        self.started.set()
        await self._server.wait_for_termination()

    async def stop(self, grace_s: float) -> None:
        """New calls get UNAVAILABLE from now on; calls in progress get `grace_s` to finish.

        gRPC's own stop cancels (CANCELLED, not retryable) the calls that arrive while it stops
        (gRPC core kills the calls its server loop has not picked up yet). So new calls are refused
        by the interceptor first, and the server stops once the admitted ones are done and no call
        came for GRPC_QUIET_S (clients back off after UNAVAILABLE), or at the deadline.
        (Waits until the server has started: stopping it while it starts crashes gRPC's core.)"""
        await self.started.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        interceptor = self.interceptor
        interceptor.refusing = True
        while loop.time() < deadline and (
            interceptor.in_flight or time.monotonic() - interceptor.last_call_at < GRPC_QUIET_S
        ):
            await asyncio.sleep(0.005)
        await self._server.stop(grace=max(0.0, deadline - loop.time()))


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_free(host: str, port: int, what: str, setting: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise PortInUse(
                f"{_address(host, port)}: cannot listen for {what} ({e.strerror}): choose another port with {setting}"
            ) from None


# ---- the server --------------------------------------------------------------------------------------
class ModelServer(KServeModelServer):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        max_request_bytes: int = 8 * 1024 * 1024,
        per_request_logs: bool = False,
        shutdown_grace_s: float = 20.0,
        kserve_args: dict | None = None,
        **kwargs,
    ):
        """`kserve_args`: KServe's parsed flags (gRPC send limit); default: what kserve.model_server
        parsed from sys.argv when imported. `shutdown_grace_s`: see the module docstring."""
        kwargs.setdefault("enable_latency_logging", per_request_logs)
        super().__init__(**kwargs)
        if kserve_args is None:
            from kserve.model_server import args

            kserve_args = vars(args)
        self.kserve_args = kserve_args
        if self.workers > 1:
            raise ValueError("--workers > 1 is not supported: run more replicas (each loads the model once)")
        self.host = host
        self.max_request_bytes = max_request_bytes
        self.per_request_logs = per_request_logs
        self.shutdown_grace_s = shutdown_grace_s
        self.dataplane = ServingDataPlane(model_registry=self.registered_models)
        self.exit_code = 0
        self._stopping: int | None = None  # the signal that started the shutdown
        self._shutdown_task: asyncio.Task | None = None

    def fail(self, reason: BaseException) -> None:
        """From any thread: stop serving and exit non-zero (a model that cannot load)."""
        log.error("stopping the server: %s", reason)
        self.exit_code = 1
        os.kill(os.getpid(), signal.SIGTERM)

    def start(self, models) -> None:
        """Registers the models whether loaded or not (readiness tells), binds both ports, starts
        loading the models that can load in the background, serves until SIGTERM, then unloads
        them; exits 1 if a model fails to load. PortInUse (before anything loads) for a busy port."""
        from serving.model import freeze_heap

        for model in models:
            model.enable_latency_logging = self.enable_latency_logging
            self.register_model(model)
        common = dict(host=self.host, per_request_logs=self.per_request_logs)
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.shutdown_grace_s,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            max_request_bytes=self.max_request_bytes,
            **common,
        )
        self._rest_server.create_application()
        if self.enable_grpc:
            self._grpc_server = _GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=self.kserve_args,
                grace_period=self.shutdown_grace_s,
                max_message_bytes=self.max_request_bytes,
                **common,
            )
        self.register_signal_handler()  # until the event loop takes over: a signal during start-up
        freeze_heap()  # the app and routes are built; the model freezes its own objects once loaded
        try:
            # KServe's --event-loop (auto: uvloop when installed), which uvicorn applies only when it
            # runs the loop itself: both transports run in this one.
            with asyncio.Runner(loop_factory=self._rest_server.config.get_loop_factory()) as runner:
                runner.run(self._serve(models))
        finally:
            for model_name in list(self.registered_models.get_models()):  # last: nothing is in flight
                self.registered_models.unload(model_name)
        log.info("model server stopped")
        if self.exit_code:
            raise SystemExit(self.exit_code)

    async def _serve(self, models):
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._custom_exception_handler or self.default_exception_handler)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.stop, sig)
        listening = [f"REST on {self._rest_server.bind()}"]
        if self._grpc_server is not None:
            listening.append(f"gRPC on {self._grpc_server.bind(self.max_threads)}")
        log.info("listening: %s (not ready until the model is loaded)", ", ".join(listening))
        servers = [self._rest_server.start()]
        if self._grpc_server is not None:
            servers.append(self._grpc_server.start())
        if self._stopping is not None:  # a signal arrived before the event loop ran
            self.stop(self._stopping)
        else:
            for model in models:
                if not model.ready and hasattr(model, "start_loading"):
                    model.start_loading(on_error=self.fail)
                else:
                    model.start()  # KServe's hook
        await asyncio.gather(*servers)
        if self._shutdown_task is not None:
            with contextlib.suppress(asyncio.CancelledError):  # cancelled by a second signal
                await self._shutdown_task
        from kserve.utils.inference_client_factory import InferenceClientFactory

        await InferenceClientFactory().close()  # a transformer's clients to its predictor, once unused

    def stop(self, sig: int):
        """SIGTERM, SIGINT, SIGQUIT (and fail()): the shutdown in the module docstring. A second
        signal stops at once (accepted requests are cut off)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the event loop runs: _serve stops at its start
            self._stopping = sig
            return
        if self._stopping is not None and self._shutdown_task is not None:
            log.warning("%s again: stopping without waiting for requests in progress", signal.Signals(sig).name)
            self._shutdown_task.cancel()
            self._rest_server._server.force_exit = True
            loop.create_task(self._close_listeners(0.0))
            return
        self._stopping = sig
        self.dataplane.draining = True
        drain = sig == signal.SIGTERM and self.exit_code == 0 and self.shutdown_grace_s > 0
        self._shutdown_task = loop.create_task(self._shutdown(drain))

    async def _shutdown(self, drain: bool):
        loop = asyncio.get_running_loop()
        grace = self.shutdown_grace_s
        deadline = loop.time() + grace
        if drain:
            log.info(
                "SIGTERM: not ready; serving until no request came for %.1f s (at most %.1f s), then "
                "finishing accepted requests within %.1f s in all",
                QUIET_S,
                grace / 2,
                grace,
            )
            drain_end = loop.time() + grace / 2
            while loop.time() < drain_end and time.monotonic() - metrics.last_inference_at() < QUIET_S:
                await asyncio.sleep(0.05)
        remaining = max(0.0, deadline - loop.time())
        log.info("stopping: listeners closed, %.1f s for the requests in progress", remaining)
        await self._close_listeners(remaining)

    async def _close_listeners(self, grace_s: float):
        self._rest_server.stop(grace_s)
        if self._grpc_server is not None and self._grpc_server._server is not None:
            await self._grpc_server.stop(grace_s)
