"""The KServe model: a registered model behind KServe's v1 / v2 REST and gRPC data plane.

    model = RegistryModel(config, "flights@production")     # or a model directory / storage URI
    model.start_loading()                                    # or model.load() (blocking)
    ModelServer(...).start([model])                          # serving.server

One request = KServe's three stages, each timed by KServe's histograms:

    preprocess   request body -> named columns (serving.protocol), then the enricher: validation
                 against the model's request schema + ONE Feast online read for the features the
                 store provides (defaults for unknown entities), as a KServe transformer would
    predict      the served version's predictor on those columns (in process; a batch of more
                 than SMALL_BATCH_ROWS rows in a worker thread while other requests are in the
                 server, a smaller one in the event loop), or, when KServe's
                 --predictor_host is set, the complete model inputs sent to that predictor
                 deployment (this model then IS the transformer; same code, separate pods)
    postprocess  the payload log (non-blocking) and the response: v2 `probability` FP32 [n] with
                 model_name, model_version and the request id; v1 {"predictions": [...]}

A request takes `handle.current` once, at its start, and finishes on that version even if a hot
reload swaps the model meanwhile (serving.handle). Client errors (PredictionInputError, an
mlops.errors.InvalidInput) are HTTP 400 / gRPC INVALID_ARGUMENT with the message naming the problem
(serving.server maps the platform's errors by mlops.errors.status_of).

Feature store outages (serving.enrichment.GuardedOnlineReads, serving.feature_store): each online
read has a deadline; a failed or skipped read (circuit breaker open) gives, by `on_failure`, the
documented defaults with the response marked degraded (v2 `parameters: {"degraded":
"feature_store_timeout"}`, v1 `"degraded": ...`) or a 503 / UNAVAILABLE with Retry-After.

Readiness: `ready` is False until the model is loaded and warmed up; KServe answers 503 for the
model (and our data plane for the server) until then. With on_failure `fail`, the readiness
probes also say not ready while the breaker is open (`store_outage`, serving.server).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.errors import ModelNotReady
from kserve.model import InferenceVerb

from serving import metrics
from serving.enrichment import FAILURE_REASONS, GuardedOnlineReads
from serving.handle import ModelHandle, ServedModel, _is_dir_source
from serving.predictor import NUMERIC, SMALL_BATCH_ROWS, PredictionInputError
from serving.protocol import Tensor, columns_from_tensors, columns_from_v1, new_request_id, row_ids

log = logging.getLogger("mlops.serving")

OUTPUT = "probability"
V1, V2 = "v1", "v2"


def endpoint_name(config, source: str, model_name: str | None = None) -> str:
    """The name in the URL (/v2/models/NAME): given, else the registry name of the selector, else
    the name in a model directory's manifest, else the directory's name."""
    if model_name:
        return model_name
    if not _is_dir_source(source):
        return source.split("@", 1)[0]
    from mlops import storage
    from mlops.config import join_uri
    from mlops.registry.store import MANIFEST

    try:
        manifest = storage.read_json(join_uri(source, MANIFEST))
        if manifest.get("name"):
            return str(manifest["name"])
    except Exception:  # noqa: BLE001 - no manifest (a plain directory): fall back to its name
        pass
    return source.rstrip("/").rsplit("/", 1)[-1] or "model"


def freeze_heap() -> None:
    """Moves every object alive now (the loaded model, TensorFlow, KServe, FastAPI) out of the
    garbage collector's reach. Without it, each full collection walks that heap and stalls the
    event loop for ~5-10 ms: measured here, it is the difference between a 1 ms and a 8 ms p99."""
    gc.collect()
    gc.freeze()


def collect_unfrozen_garbage() -> None:
    """After a hot reload: the old version's cycles were frozen with it, so thaw, collect, refreeze
    (one full collection per reload, off the request path but holding the GIL while it runs)."""
    gc.unfreeze()
    freeze_heap()


def _json_body(body: bytes | str):
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise PredictionInputError(f"malformed JSON body: {e}") from None


@dataclass
class Prepared:
    """What preprocess hands to predict and postprocess for one request."""

    served: ServedModel
    columns: dict[str, np.ndarray]
    n: int
    request_id: str
    protocol: str  # V1 | V2
    request: Any  # the InferRequest (v2) or None (v1)
    predictions: np.ndarray | None = None
    version: str = ""
    degraded: str | None = None  # "feature_store_<reason>": the store's features are the defaults
    keys: dict[str, np.ndarray] | None = None  # the request's entity keys / event time, for the payload log


class RegistryModel(Model):
    def __init__(
        self,
        config,
        source: str,
        *,
        name: str | None = None,
        runtime: str | None = None,
        watch: bool = True,
        payload_logger=None,
        threads: int | None = None,
    ):
        super().__init__(endpoint_name(config, source, name))
        self.config = config
        self.source = source
        self.runtime = runtime or config.serving.runtime
        self.watch = watch
        self.max_rows = config.serving.max_batch_rows
        self.handle: ModelHandle | None = None
        self.load_error: BaseException | None = None
        self._load_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._name_override = name
        if payload_logger is None:
            from serving.payload_log import PayloadLogger

            payload_logger = PayloadLogger.from_config(config)
        self.payload_logger = payload_logger
        # Model calls of more than SMALL_BATCH_ROWS rows run here, off the event loop, when other
        # requests are in the server: while the model computes (the SavedModel releases the GIL),
        # the loop keeps parsing and answering the others. A small request, or one alone, runs
        # inline: its model call is mostly Python holding the GIL, so the thread hop (0.1-0.3 ms)
        # bought nothing (measured, flights model, 1-row requests, 8 clients, A/B interleaved:
        # server CPU per request 0.99 -> 0.91 ms REST, 1.30 -> 1.11 ms gRPC, no fewer requests/s).
        # threads=0: always inline. (Feast reads have their own threads: GuardedOnlineReads.)
        threads = os.cpu_count() or 2 if threads is None else threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict") if threads > 0 else None
        self.in_flight = 0  # requests inside __call__ (touched by the event loop only)
        self._retired_rows_without_features = 0  # counted by the enrichers of versions swapped out
        self._swaps = 0
        # Online reads: deadline, failure policy, circuit breaker (one per server, across reloads).
        self.feature_reads = GuardedOnlineReads(
            config.serving.feature_store,
            on_failure=self._count_store_failure,
            on_state=lambda state: metrics.FEATURE_STORE_BREAKER_STATE.labels(self.name).set(int(state)),
        )
        metrics.FEATURE_STORE_BREAKER_STATE.labels(self.name).set(0)
        for reason in FAILURE_REASONS:  # shown at 0 from the start
            metrics.FEATURE_STORE_FAILURES.labels(self.name, reason)
        metrics.SERVED_MODELS.sources[self.name] = self._stats
        metrics.MODEL_READY.labels(self.name).set(0)

    # ---- lifecycle --------------------------------------------------------------------------------
    def load(self) -> bool:
        """Resolves, loads and warms up the model (blocking); starts watching the alias.

        KServe's data plane also calls this for a request that finds the model not ready: while a
        background load (start_loading) is running, or after it failed, that request is told the
        model is not ready (503 / UNAVAILABLE) instead of blocking the event loop on a second load."""
        if not self._load_lock.acquire(blocking=self._loader is None or self._loader is threading.current_thread()):
            raise ModelNotReady(self.name, "It is still loading.")
        try:
            if self.load_error is not None and self._loader is not threading.current_thread():
                raise ModelNotReady(self.name, f"Loading failed: {self.load_error}")
            if self.handle is None:
                started = time.perf_counter()
                self.handle = ModelHandle.from_config(
                    self.config, self.source, runtime=self.runtime, name=self._name_override, on_swap=self._on_swap
                )
                self._show_version(self.handle.current, None)
                if self.watch:
                    self.handle.start_watching()
                log.info(
                    "model %s ready: %s (runtime %s) in %.1f s",
                    self.name,
                    self.handle.current.label,
                    self.handle.current.predictor.runtime,
                    time.perf_counter() - started,
                )
                freeze_heap()
            self.ready = True
            metrics.MODEL_READY.labels(self.name).set(1)
            return True
        finally:
            self._load_lock.release()

    def start_loading(self, on_error: Callable[[BaseException], None] | None = None) -> threading.Thread:
        """Loads in a background thread, so the server answers liveness (and not-ready) meanwhile.
        `on_error` is called with the exception if the load fails (the server exits on it)."""

        def run():
            try:
                self.load()
            except BaseException as e:  # noqa: BLE001 - reported, and fatal for the server
                self.load_error = e
                log.exception("loading %s from %s failed", self.name, self.source)
                if on_error is not None:
                    on_error(e)

        self._loader = threading.Thread(target=run, name="model-load", daemon=True)
        self._loader.start()
        return self._loader

    def start(self):
        """KServe's ModelServer calls this at start; its default would mark the model ready before
        it is loaded. Readiness is load()'s business."""

    def stop(self):
        self.ready = False
        metrics.MODEL_READY.labels(self.name).set(0)
        if self.handle is not None:
            self.handle.stop()
        self.payload_logger.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False)
        self.feature_reads.close()
        metrics.SERVED_MODELS.sources.pop(self.name, None)

    def _count_store_failure(self, reason: str) -> None:
        metrics.FEATURE_STORE_FAILURES.labels(self.name, reason).inc()

    @property
    def store_outage(self) -> bool:
        """Not ready for new traffic: serving.feature_store.on_failure is `fail` and the breaker is
        open (every request would get 503 until the cool-down ends). serving.server's readiness."""
        return self.feature_reads.refusing

    def _stats(self) -> dict:
        rows = self._retired_rows_without_features
        if self.handle is not None:
            rows += self.handle.current.enricher.rows_without_features
        return {
            "rows_without_features": rows,
            "reloads": {"swapped": self._swaps, "failed": self.handle.reload_failures if self.handle else 0},
            "payload_log": self.payload_logger.stats() if self.payload_logger.enabled else None,
        }

    def _on_swap(self, new: ServedModel, old: ServedModel | None) -> None:
        self._swaps += 1
        if old is not None:
            self._retired_rows_without_features += old.enricher.rows_without_features
        self._show_version(new, old)
        # In-flight requests still hold the old version for a few ms; reclaim it after they finish.
        threading.Timer(2.0, collect_unfrozen_garbage).start()

    def _show_version(self, new: ServedModel, old: ServedModel | None) -> None:
        if old is not None:
            try:
                metrics.MODEL_INFO.remove(self.name, old.version, old.predictor.runtime)
            except KeyError:
                pass
        metrics.MODEL_INFO.labels(self.name, new.version, new.predictor.runtime).set(1)

    @property
    def remote_predictor(self) -> bool:
        config = self.predictor_config
        return bool(config is not None and config.predictor_host)

    # ---- metadata -------------------------------------------------------------------------------
    def _served(self) -> ServedModel:
        if self.handle is None:
            raise ModelNotReady(self.name, "It is still loading.")
        return self.handle.current

    def get_input_types(self) -> list[dict]:
        """The request schema (what a client sends: required inputs, then optional ones such as the
        event time or a store feature to override), one [-1] tensor per field. `parameters` says
        which are optional (Triton's word, from its model config) and which may hold missing values
        (null, or NaN in FP32)."""
        schema = self._served().enricher.schema
        optional = {s.name for s in schema.optional}
        return [
            {
                "name": s.name,
                "datatype": "FP32" if s.dtype == NUMERIC else "BYTES",
                "shape": [-1],
                "parameters": {"optional": s.name in optional, "nullable": s.nullable},
            }
            for s in schema.all
        ]

    def get_output_types(self) -> list[dict]:
        return [{"name": OUTPUT, "datatype": "FP32", "shape": [-1]}]

    # ---- the three stages -----------------------------------------------------------------------
    async def __call__(self, body, headers=None, verb=InferenceVerb.PREDICT):
        self.in_flight += 1
        try:
            # One turn of the event loop first: requests that arrived together start and count
            # themselves, so the first one sees it is not alone (a request runs to its first
            # await without yielding otherwise).
            await asyncio.sleep(0)
            if verb is not InferenceVerb.PREDICT or self.enable_latency_logging or self.required_response_headers:
                return await super().__call__(body, headers, verb)
            # KServe's Model.__call__ for this model's own three stages, same per-stage histograms,
            # without its per-request label lookups and coroutine checks (~3-4% of a request).
            # A stage that fails is timed too, as there.
            pre, pred, post = self._stage_histograms()
            clock = time.perf_counter
            started = clock()
            try:
                payload = await self.preprocess(body, headers)
            finally:
                pre.observe(clock() - started)
            started = clock()
            try:
                payload = await self.predict(payload, headers)
            finally:
                pred.observe(clock() - started)
            started = clock()
            try:
                return self.postprocess(payload, headers), {}
            finally:
                post.observe(clock() - started)
        finally:
            self.in_flight -= 1

    def _stage_histograms(self):
        """KServe's request_{preprocess,predict,postprocess}_seconds for this model's name."""
        cached = self.__dict__.get("_histograms")
        if cached is None or cached[0] != self.name:
            from kserve.metrics import POST_HIST_TIME, PRE_HIST_TIME, PREDICT_HIST_TIME, get_labels

            labels = get_labels(self.name)
            cached = (self.name, tuple(h.labels(**labels) for h in (PRE_HIST_TIME, PREDICT_HIST_TIME, POST_HIST_TIME)))
            self._histograms = cached
        return cached[1]

    def _offload(self, rows: int) -> bool:
        return self.pool is not None and self.in_flight > 1 and rows > SMALL_BATCH_ROWS

    def validate(self, payload):
        return payload  # checked in preprocess, with messages naming the field

    async def preprocess(self, payload, headers: dict[str, str] | None = None) -> Prepared:
        served = self._served()
        if isinstance(payload, InferRequest):
            protocol = V2
            if payload.request_outputs:
                unknown = sorted({o.name for o in payload.request_outputs} - {OUTPUT})
                if unknown:
                    raise PredictionInputError(f"unknown output(s) {unknown}; the model gives [{OUTPUT!r}]")
            datatypes: dict[str, str] | None = {}
            rows = columns_from_tensors(
                (Tensor(i.name, i.datatype, i.shape, i.data, i._raw_data) for i in payload.inputs),
                max_rows=self.max_rows,
                datatypes=datatypes,
            )
            # kserve 0.21: a response id of None fails its pydantic response model, so a
            # request without an id gets one here (and it keys the payload log).
            request_id = payload.id or new_request_id()
        else:
            if isinstance(payload, (bytes, str)):  # v1 JSON sent without a JSON content type
                payload = _json_body(payload)
            protocol, datatypes = V1, None
            rows = columns_from_v1(payload, max_rows=self.max_rows)
            request_id = (headers or {}).get("x-request-id") or new_request_id()
        enricher = served.enricher
        if enricher.lookup and any(s.name not in rows for s in enricher.store_features):
            # one Feast online read, always off the event loop, with a deadline (GuardedOnlineReads)
            enriched = await self.feature_reads.complete(enricher, rows, max_rows=self.max_rows, datatypes=datatypes)
        else:  # no lookup: checks only, tens of microseconds
            enriched = enricher.enrich(rows, max_rows=self.max_rows, datatypes=datatypes)
        return Prepared(
            served,
            enriched.columns,
            enriched.n,
            request_id,
            protocol,
            payload if protocol == V2 else None,
            version=served.version,
            degraded=enriched.degraded,
            keys=enriched.keys,
        )

    async def predict(
        self, payload: Prepared, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> Prepared:
        if self.remote_predictor:
            response = await super().predict(self._predictor_request(payload), headers)
            payload.predictions, payload.version = self._remote_predictions(response, payload)
        elif not self._offload(payload.n):
            payload.predictions = payload.served.predictor.predict(payload.columns)
        else:
            payload.predictions = await asyncio.get_running_loop().run_in_executor(
                self.pool, payload.served.predictor.predict, payload.columns
            )
        return payload

    def postprocess(
        self, result: Prepared, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ):
        p, n = result.predictions, result.n
        self.payload_logger.log(
            model=result.served.name,
            version=result.version,
            source="online",
            request_ids=row_ids(result.request_id, n),
            features=result.columns,
            predictions=p,
            keys=result.keys,
        )
        metrics.PREDICTED_ROWS.labels(self.name, result.version).inc(n)
        if result.protocol == V1:
            if result.degraded:
                return {"predictions": p.tolist(), "degraded": result.degraded}
            return {"predictions": p.tolist()}
        request: InferRequest = result.request
        # gRPC answers in typed contents unless the client sent raw contents (then raw, as it
        # evidently reads them); REST answers JSON unless binary outputs were asked for.
        if not request.from_grpc:
            output = InferOutput(OUTPUT, [n], "FP32", data=p)
        elif request.use_binary_outputs:
            output = InferOutput(OUTPUT, [n], "FP32")
            output.set_data_from_numpy(p, binary_data=True)  # (kserve's to_grpc fails on array data)
        else:
            output = InferOutput(OUTPUT, [n], "FP32", data=p.tolist())
        return InferResponse(
            result.request_id,
            self.name,
            [output],
            model_version=result.version,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
            parameters={"degraded": result.degraded} if result.degraded else None,
        )

    # ---- transformer mode (KServe --predictor_host) -----------------------------------------------
    def _predictor_request(self, prepared: Prepared) -> InferRequest:
        """The complete model inputs, for a predictor deployment of this server whose config has
        serving.feature_lookup: false."""
        inputs = []
        for spec in prepared.served.predictor.inputs:
            column = prepared.columns[spec.name]
            if spec.dtype == NUMERIC:
                inputs.append(InferInput(spec.name, [prepared.n], "FP32", data=column.tolist()))
            else:
                inputs.append(InferInput(spec.name, [prepared.n], "BYTES", data=list(column)))
        return InferRequest(self.name, inputs, request_id=prepared.request_id)

    def _remote_predictions(self, response, prepared: Prepared) -> tuple[np.ndarray, str]:
        if isinstance(response, InferResponse):
            output = response.get_output_by_name(OUTPUT) or response.outputs[0]
            values = np.asarray(output.as_numpy(), dtype=np.float32).reshape(-1)
            version = response.model_version or prepared.version
        else:  # v1 predictor protocol
            values = np.asarray(response["predictions"], dtype=np.float32).reshape(-1)
            version = prepared.version
        if len(values) != prepared.n:
            raise RuntimeError(f"the predictor answered {len(values)} predictions for {prepared.n} rows")
        return values, str(version)
