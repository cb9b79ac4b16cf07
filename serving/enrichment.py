"""Request rows -> the model's raw features, with the rest fetched from the Feast online store.

A request carries what the caller knows at request time: the entity keys (origin, dest, carrier,
tailnum for flights), the request-time features (month, hour, distance...) and optionally the
event time (the dataset's event timestamp column, e.g. `time_hour`, ISO-8601 text or epoch
seconds; default: now). The features the feature store provides (weather, plane, rolling delay
statistics) are looked up in ONE online read per request, as a KServe transformer would.

Documented defaults when the store has nothing for an entity (unknown tailnum, a day not
materialized): numeric features are missing (NaN), which the model's TFT graph replaces with the
training mean while setting the feature's missing indicator; categorical features are "" (the
missing token). A request never fails because an entity is unknown; such rows are counted.

A caller may also send a feature-store feature itself: its value wins over the lookup (useful
for replaying logged requests and for a store outage).

The entity keys and the event time identify the request's row; those that are not model inputs
(`logged_keys`, flights: tailnum, time_hour) are taken (optional without a lookup) and checked
even when nothing is looked up, and handed to the payload log beside the model inputs
(`Enriched.keys`), so a prediction can be joined with its label later by what identifies the row.

In the model server the read goes through GuardedOnlineReads (serving.feature_store): a deadline,
a failure policy (defaults + a degraded mark, or 503) and a circuit breaker, so a hung or dead
store costs a request at most the deadline and usually nothing. Batch prediction calls
FeatureEnricher.complete, which reads without a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops.errors import Unavailable
from serving.predictor import CATEGORICAL, NUMERIC, InputSpec, PredictionInputError, as_numeric, as_text


@dataclass
class RequestSchema:
    """What a client sends: `required` inputs and `optional` ones (the time column, features the
    store would provide). Reported by the model metadata endpoints."""

    required: list[InputSpec]
    optional: list[InputSpec] = field(default_factory=list)

    @property
    def all(self) -> list[InputSpec]:
        return self.required + self.optional


# The times the feature lookup can take (pandas' Timestamp range), as epoch seconds.
_EARLIEST, _LATEST = pd.Timestamp.min.ceil("s").timestamp(), pd.Timestamp.max.floor("s").timestamp()


def _time_error(name: str, value, row: int) -> PredictionInputError:
    return PredictionInputError(
        f"input {name!r}: {value!r} at row {row} is not a time: send ISO-8601 text or epoch "
        f"seconds, between {pd.Timestamp.min.year + 1} and {pd.Timestamp.max.year - 1}"
    )


def _epoch_seconds_to_iso(name: str, values: np.ndarray) -> np.ndarray:
    """Epoch seconds -> ISO-8601 UTC text; NaN (missing) -> "" (the lookup then uses the current time)."""
    bad = ~np.isnan(values) & ~((values >= _EARLIEST) & (values <= _LATEST))  # inf, or beyond the range
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _time_error(name, values[i].item(), i)
    return np.array(
        [dt.datetime.fromtimestamp(float(v), dt.UTC).isoformat() if v == v else "" for v in values], dtype=object
    )


def request_times(name: str, values) -> np.ndarray:
    """The event time column as ISO-8601 UTC text per row ("" = missing: the current time), from
    epoch seconds or text; what the lookup cannot take is refused here, naming the column."""
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise PredictionInputError(f"input {name!r}: expected shape [n] or [n, 1], got {list(arr.shape)}")
    if arr.dtype.kind in "iuf":
        return _epoch_seconds_to_iso(name, arr.astype(np.float64))
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise PredictionInputError(f"input {name!r}: row {i} is not valid UTF-8") from None
        if v is None or v == "" or (isinstance(v, float) and v != v):
            out[i] = ""
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            if not _EARLIEST <= v <= _LATEST:  # also inf; NaN was taken as missing above
                raise _time_error(name, v, i)
            out[i] = dt.datetime.fromtimestamp(float(v), dt.UTC).isoformat()
        elif isinstance(v, str):
            try:
                ts = pd.Timestamp(v)
            except (ValueError, OverflowError):
                raise _time_error(name, v, i) from None
            if ts is pd.NaT:
                raise _time_error(name, v, i)
            out[i] = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()
        else:
            raise _time_error(name, v, i)
    return out


log = logging.getLogger("mlops.serving")


class FeatureEnricher:
    """Completes request rows for a predictor. Without a feature store (config.features unset,
    or serving.feature_lookup false) it only checks that every model input is present."""

    def __init__(self, config, model_inputs: list[InputSpec], *, store=None):
        from mlops.datasets.ingest import provided_by_feature_store

        self.config = config
        self.model_inputs = list(model_inputs)
        use_store = config.features is not None and config.serving.feature_lookup
        provided = provided_by_feature_store(config) if use_store else set()
        self.store_features = [s for s in self.model_inputs if s.name in provided]
        self.lookup = bool(self.store_features)
        self.time_column = config.dataset.event_timestamp if self.lookup else None
        model_names = {s.name for s in self.model_inputs}
        event_time = config.dataset.event_timestamp or None
        # The request's entity keys and event time beyond the model inputs: logged beside them.
        self.logged_keys = [
            k for k in dict.fromkeys([*config.dataset.entity_keys, event_time]) if k and k not in model_names
        ]
        # The event time column a request may send, parsed as a time (ISO-8601 text out).
        self.time_key = self.time_column or (event_time if event_time in self.logged_keys else None)
        # the keys of the online read (the time column only selects the day, see online_features)
        self.lookup_keys = [k for k in config.dataset.entity_keys if k != self.time_column] if self.lookup else []
        self._store = store
        # Missing values (null, NaN, "") are allowed only in what the feature store provides: the
        # store may know nothing of an entity, so the model was trained with those gaps and imputes
        # them. The request's own fields (entity keys, request-time features) always had a value
        # in training (presence 1.0 in the dataset's schema): a gap there is a client bug.
        may_be_missing = provided_by_feature_store(config)
        specs = [InputSpec(s.name, s.dtype, nullable=s.name in may_be_missing) for s in self.model_inputs]
        required = [s for s in specs if s.name not in provided]
        if self.lookup:
            required += [InputSpec(k, CATEGORICAL, nullable=False) for k in self.lookup_keys if k not in model_names]
        required_names = {s.name for s in required}
        optional = [InputSpec(k, CATEGORICAL) for k in self.logged_keys if k not in required_names]
        optional += [s for s in specs if s.name in provided]
        self.schema = RequestSchema(sorted(required, key=lambda s: s.name), optional)
        self.rows_without_features = 0  # rows the store knew nothing about (defaults used)

    def store(self):
        if self._store is None and self.lookup:
            from mlops.features.store import feature_store

            self._store = feature_store(self.config)
        return self._store

    def check(
        self, rows: Mapping[str, object], *, max_rows: int | None = None, datatypes: Mapping[str, str] | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        """The request columns checked against the schema: (encoded columns, the time column as
        ISO-8601 text when given, row count). `datatypes`: the v2 tensors' declared datatypes.
        PredictionInputError names what is wrong."""
        from serving.predictor import validate_rows

        given_optional = [s for s in self.schema.optional if s.name in rows and s.name != self.time_key]
        checked, n = validate_rows(
            self.schema.required + given_optional,
            rows,
            max_rows=max_rows,
            allow_extra=[s.name for s in self.schema.optional],
            datatypes=datatypes,
        )
        if self.time_key is not None and self.time_key in rows:
            times = request_times(self.time_key, rows[self.time_key])
            if len(times) != n:
                raise PredictionInputError(f"input {self.time_key!r}: {len(times)} rows, expected {n}")
            checked[self.time_key] = times
        return checked, n

    def complete(
        self, rows: Mapping[str, object], *, max_rows: int | None = None, datatypes: Mapping[str, str] | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        """Validated request columns -> (every model input as a raw column, row count). The online
        read has no deadline here (batch prediction); the server reads through GuardedOnlineReads."""
        enriched = self.enrich(rows, max_rows=max_rows, datatypes=datatypes)
        return enriched.columns, enriched.n

    def enrich(
        self, rows: Mapping[str, object], *, max_rows: int | None = None, datatypes: Mapping[str, str] | None = None
    ) -> Enriched:
        """complete(), with the request's logged keys (entity keys and event time) beside the inputs."""
        checked, n = self.check(rows, max_rows=max_rows, datatypes=datatypes)
        missing_store = self.missing_store_features(checked)
        if missing_store:
            fetched = self.fetch(checked, n, checked.get(self.time_column) if self.time_column else None)
            for spec in missing_store:
                checked[spec.name] = fetched[spec.name]
        return Enriched(self.model_columns(checked), n, keys=self.key_columns(checked))

    def missing_store_features(self, checked: Mapping[str, np.ndarray]) -> list[InputSpec]:
        """The store features the request did not send (what the online read must provide)."""
        return [s for s in self.store_features if s.name not in checked]

    def model_columns(self, checked: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s.name: checked[s.name] for s in self.model_inputs}

    def key_columns(self, checked: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The logged keys the request sent (text; the event time as ISO-8601 UTC text)."""
        return {k: checked[k] for k in self.logged_keys if k in checked}

    def fetch(self, cols: Mapping[str, np.ndarray], n: int, times: np.ndarray | None) -> dict[str, np.ndarray]:
        """One online read for all n rows; defaults where the store has no value."""
        return self.store_columns(self.read(self.entity_rows(cols, n, times)), n)

    def entity_rows(self, cols: Mapping[str, np.ndarray], n: int, times: np.ndarray | None) -> list[dict]:
        keys = self.lookup_keys
        entity_rows = []
        for i in range(n):
            r = {k: cols[k][i] for k in keys}
            if times is not None and times[i]:
                r[self.time_column] = times[i]
            entity_rows.append(r)
        return entity_rows

    def read(self, entity_rows: list[dict]) -> list[dict]:
        """The online read itself (blocking; what GuardedOnlineReads runs in its threads)."""
        from mlops.features.store import online_features

        try:
            return online_features(self.config, entity_rows, store=self.store())
        except ValueError as e:  # a time that does not parse, a missing join key
            raise PredictionInputError(f"feature lookup: {e}") from None

    def store_columns(self, result: list[dict], n: int) -> dict[str, np.ndarray]:
        """The read's values as columns; rows the store knew nothing about are counted."""
        out = {}
        empty = np.zeros(n, dtype=bool)
        for spec in self.store_features:
            values = [r.get(spec.name) for r in result]
            empty |= np.array([v is None for v in values], dtype=bool)
            out[spec.name] = as_numeric(spec.name, values) if spec.dtype == NUMERIC else as_text(spec.name, values)
        self.rows_without_features += int(empty.sum())
        return out

    def default_columns(self, specs: list[InputSpec], n: int) -> dict[str, np.ndarray]:
        """The documented defaults (NaN, "") for `specs`: what a request gets when the read failed."""
        return {
            s.name: np.full(n, np.nan, np.float32) if s.dtype == NUMERIC else np.full(n, "", dtype=object)
            for s in specs
        }


# ---- the server's online reads: deadline, failure policy, circuit breaker ----------------------------
FAILURE_REASONS = ("timeout", "unavailable", "error", "breaker_open")


class FeatureStoreUnavailable(Unavailable):
    """The online read failed or was not tried (breaker open) under serving.feature_store.on_failure:
    fail. The message is the server's own (never the driver's text); `retry_after_s` -> Retry-After."""

    def __init__(self, message: str, *, reason: str, retry_after_s: float):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


def failure_reason(error: BaseException) -> str:
    """timeout | unavailable | error, by the kind of what the read raised (the drivers' classes
    are matched by name: redis and sqlite3 are not imported for this)."""
    names = {c.__name__ for c in type(error).__mro__}
    if isinstance(error, TimeoutError) or "TimeoutError" in names or "database is locked" in str(error):
        return "timeout"
    if isinstance(error, OSError) or names & {"ConnectionError", "BusyLoadingError", "OperationalError"}:
        return "unavailable"
    return "error"


@dataclass
class Enriched:
    columns: dict[str, np.ndarray]
    n: int
    degraded: str | None = None  # "feature_store_<reason>" when the defaults replaced the read
    keys: dict[str, np.ndarray] = field(default_factory=dict)  # FeatureEnricher.key_columns: for the payload log


class GuardedOnlineReads:
    """The model server's online reads (serving.feature_store):

    * deadline: each read runs in one of `read_threads` dedicated threads and the request waits for
      it at most `timeout_ms` (from submission), without blocking the event loop. At most twice
      `read_threads` reads are admitted (running or queued); beyond that a request fails at once
      (reason timeout) instead of queueing behind a hung store. A read abandoned at its deadline
      still holds its thread until the client gives up (mlops.features.store.bound_online_reads
      sets the client's own timeouts to the same value): a hung store never piles up threads.
    * failure policy: `defaults` completes the request with the documented defaults and marks it
      degraded ("feature_store_<reason>"); `fail` raises FeatureStoreUnavailable (503 / UNAVAILABLE
      with Retry-After). Either way the failure is counted by reason: timeout, unavailable (the
      store refused or dropped the connection), error (anything else the read raised),
      breaker_open (not tried).
    * circuit breaker (serving.breaker): after `breaker_failures` consecutive failures, no read for
      `breaker_cooldown_s`, then one probe.

    Requests that carry every store feature never get here. Called from the event loop only."""

    def __init__(self, spec, *, on_failure=None, on_state=None, clock=time.monotonic):
        from serving.breaker import CircuitBreaker

        self.timeout_s = spec.timeout_ms / 1000
        self.policy = spec.on_failure
        self.breaker = CircuitBreaker(
            "feature store",
            failures=spec.breaker_failures,
            cooldown_s=spec.breaker_cooldown_s,
            clock=clock,
            on_change=on_state,
        )
        self.on_failure = on_failure  # called with the reason of each failed (or skipped) read
        self.failures = dict.fromkeys(FAILURE_REASONS, 0)
        self._executor = ThreadPoolExecutor(max_workers=spec.read_threads, thread_name_prefix="feast-read")
        self._admission = threading.BoundedSemaphore(2 * spec.read_threads)  # released by the read's thread

    @property
    def refusing(self) -> bool:
        """Readiness: with `fail`, the server is not ready while the breaker is open."""
        from serving.breaker import State

        return self.policy == "fail" and self.breaker.state is State.OPEN

    async def complete(
        self,
        enricher: FeatureEnricher,
        rows: Mapping[str, object],
        *,
        max_rows: int | None = None,
        datatypes: Mapping[str, str] | None = None,
    ) -> Enriched:
        checked, n = enricher.check(rows, max_rows=max_rows, datatypes=datatypes)
        missing = enricher.missing_store_features(checked)
        if not missing:
            return Enriched(enricher.model_columns(checked), n, keys=enricher.key_columns(checked))
        times = checked.get(enricher.time_column) if enricher.time_column else None
        entity_rows = enricher.entity_rows(checked, n, times)
        result, reason = await self._read(enricher, entity_rows)
        if reason is None:
            checked.update(enricher.store_columns(result, n))
            return Enriched(enricher.model_columns(checked), n, keys=enricher.key_columns(checked))
        self.failures[reason] += 1
        if self.on_failure is not None:
            self.on_failure(reason)
        if self.policy == "fail":
            raise self._unavailable(reason, missing)
        checked.update(enricher.default_columns(missing, n))
        return Enriched(
            enricher.model_columns(checked), n, degraded=f"feature_store_{reason}", keys=enricher.key_columns(checked)
        )

    async def _read(self, enricher: FeatureEnricher, entity_rows: list[dict]) -> tuple[list[dict] | None, str | None]:
        """(the read's rows, None) or (None, the failure reason)."""
        if not self.breaker.allow():
            return None, "breaker_open"
        if not self._admission.acquire(blocking=False):
            self.breaker.failure("timeout")
            return None, "timeout"
        try:
            future = self._executor.submit(enricher.read, entity_rows)
        except RuntimeError:  # the executor is shut down: the server is stopping
            self._admission.release()
            self.breaker.abandon()
            raise
        future.add_done_callback(lambda _: self._admission.release())
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            reason = "timeout"
        except PredictionInputError:
            self.breaker.abandon()  # the request's fault, not the store's
            raise
        except Exception as e:  # noqa: BLE001 - whatever the driver raised: classified, never shown
            reason = failure_reason(e)
            log.debug("online read failed (%s): %s: %s", reason, type(e).__name__, e)
        else:
            self.breaker.success()
            return result, None
        self.breaker.failure(reason)
        return None, reason

    def _unavailable(self, reason: str, missing: list[InputSpec]) -> FeatureStoreUnavailable:
        why = {
            "timeout": f"the online read did not answer within {self.timeout_s * 1000:g} ms",
            "unavailable": "the online store refused or dropped the connection",
            "error": "the online read failed",
            "breaker_open": f"{self.breaker.threshold} or more consecutive reads failed; reads resume in "
            f"{self.breaker.retry_after_s():.1f} s",
        }[reason]
        return FeatureStoreUnavailable(
            f"the feature store is unavailable ({why}): retry later, or send the store features "
            f"{[s.name for s in missing]} in the request",
            reason=reason,
            retry_after_s=max(1.0, self.breaker.retry_after_s()),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
