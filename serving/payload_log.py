"""Payload logging: every prediction (online, batch, stream) to a durable sink, off the request path.

    logger = PayloadLogger.from_config(config)      # a no-op logger if serving.payload_log.enabled is false
    logger.log(model="flights", version="3", source="online", request_ids=ids,
               features=model_input_columns, predictions=probabilities,
               keys=entity_key_and_event_time_columns)                    # -> bool, microseconds
    logger.stats()    # queued_rows, logged_rows, written_rows, dropped_rows, write_errors, lost_rows
    logger.flush(); logger.close()

The request thread only appends references to a bounded queue (counted in rows); a writer thread
converts and writes them. So a caller must not modify the arrays it passed to `log` afterwards
(the serving code hands over freshly built columns). When the queue holds `queue_size` rows not
yet written, `log` refuses the call at once: returns False and counts the rows as dropped; it never
waits. Counters: logged_rows = written_rows + queued_rows + lost_rows at any time, where lost rows
were accepted but could not be written (bad data, or a sink that failed every retry; each failed
attempt is a write error). `source` says which entry point predicted: "online", "batch", "stream".

`keys`: the request's entity keys and event time (the dataset's `entity_keys` and
`event_timestamp`) that are not model inputs, so a prediction can be joined with its label by
what identifies the row (flights: tailnum, time_hour; origin, dest, carrier are model inputs and
logged as such, once). Text, and the event time column (`event_time`, from the config) as ISO-8601
text, epoch seconds or datetimes; the writer converts it to a UTC timestamp. A key a call does not
have is simply absent (null when read beside rows that have it).

Sinks (serving.payload_log.sink):

* parquet (default): `<path or artifact_root/payload_logs>/<model>/date=YYYY-MM-DD/hour=HH/part-*.parquet`,
  Hive partitions by the UTC hour of each logged call, one file per (model, hour, feature set) per
  flush. Columns: request_id, model, version, source, timestamp (UTC, microseconds), prediction, then
  one column per feature with its raw type (float32 / string), then one per key (string; the event
  time as timestamp, UTC, microseconds; null when the request did not send it). A feature or key
  named like a fixed column
  or a partition key (flights has `hour`) is stored as `feature_<name>`, so Hive readers can
  tell it from the partition; `read_payload_logs` gives partition-named features their own name
  back. Files appear atomically (a `.tmp-` file renamed on a
  local disk, one PUT on an object store), and readers (pyarrow.dataset, pandas, `read_payload_logs`)
  skip dot-files, so a reader never sees a partial file, even after a SIGKILL mid-write.
* redis: one XADD per row to `redis_stream` (MAXLEN ~ redis_maxlen, pipelined), fields request_id,
  model, version, source, timestamp (epoch seconds), prediction, `features` (a JSON object; NaN
  -> null) and, when the call had keys, `keys` (a JSON object; the event time as ISO-8601 UTC text,
  null when missing). Needs redis-py: the serving environment.

A sink that is down (Redis refusing connections, or hung: every call has a socket timeout) costs
the request path nothing: the writer holds the rows it was writing and retries with a bounded,
jittered backoff (one log line when the sink goes, one when it is back), the queue fills up to
queue_size rows (bounded memory) and log() then drops new rows at once, counted in dropped_rows.
When the sink answers again the held and queued rows are written and logging goes on by itself.
Rows still held when the logger is closed with the sink down are counted as lost.

Writes happen every `flush_rows` queued rows or `flush_seconds` after the oldest queued row, on
flush() and on close(); loggers still open at interpreter exit are closed (flushed) by atexit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from serving.redis_conn import Backoff, Outage

log = logging.getLogger("mlops.serving.payload_log")

SINK_TIMEOUT_S = 2.0  # a Redis sink call silent this long: the sink is hung (a healthy XADD batch: ms)
FIXED_COLUMNS = ("request_id", "model", "version", "source", "timestamp", "prediction")
PARTITION_KEYS = ("date", "hour")
WRITE_ATTEMPTS = 3  # per file / pipeline before its rows count as lost


def payload_log_root(config) -> str:
    from mlops.config import join_uri

    return config.serving.payload_log.path or join_uri(config.artifact_root, "payload_logs")


def feature_column(name: str) -> str:
    """The stored column name of a feature or key: fixed columns and partition keys are not shadowed."""
    return f"feature_{name}" if name in FIXED_COLUMNS or name in PARTITION_KEYS else name


# An accepted log() call, exactly as the caller handed it over (conversion is the writer's job).
# (model, version, source, request_ids, features, predictions, epoch seconds, keys)
Entry = tuple


class NullPayloadLogger:
    """What from_config returns when payload logging is disabled: logs nothing, costs nothing."""

    enabled = False

    def log(self, **_: Any) -> bool:
        return False  # nothing was logged (and nothing is counted as dropped: logging is off)

    def stats(self) -> dict[str, int]:
        return dict.fromkeys(
            ("queued_rows", "logged_rows", "written_rows", "dropped_rows", "write_errors", "lost_rows"), 0
        )

    def flush(self, timeout: float = 10) -> None:
        pass

    def close(self) -> None:
        pass


class PayloadLogger:
    enabled = True

    def __init__(self, sink, *, queue_size: int = 100_000, flush_rows: int = 10_000, flush_seconds: float = 5.0):
        self.sink = sink
        self.queue_size, self.flush_rows, self.flush_seconds = queue_size, flush_rows, flush_seconds
        # One lock for the queue and the counters; the request thread holds it for a few
        # attribute updates, the writer only to take the whole queue at once.
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[Entry] = []
        self._pending_rows = 0
        self._oldest = 0.0  # monotonic time the oldest pending entry was queued
        self._queued = self._logged = self._written = self._dropped = self._lost = self._errors = 0
        self._flush_wanted = False
        self._closed = False
        self._outage = Outage(log, f"payload log sink {getattr(sink, 'name', type(sink).__name__)}")
        self._thread = threading.Thread(target=self._run, name="payload-log-writer", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    @classmethod
    def from_config(cls, config) -> PayloadLogger | NullPayloadLogger:
        spec = config.serving.payload_log
        if not spec.enabled:
            return NullPayloadLogger()
        event_time = config.dataset.event_timestamp or None
        if spec.sink == "redis":
            sink = RedisSink(spec.redis_url, spec.redis_stream, spec.redis_maxlen, event_time=event_time)
        else:
            sink = ParquetSink(payload_log_root(config), event_time=event_time)
        return cls(sink, queue_size=spec.queue_size, flush_rows=spec.flush_rows, flush_seconds=spec.flush_seconds)

    # ---- the request path --------------------------------------------------------------------
    def log(
        self,
        *,
        model: str,
        version: str,
        source: str,
        request_ids: Sequence[str],
        features: Mapping[str, np.ndarray],
        predictions: np.ndarray,
        timestamp: float | None = None,
        keys: Mapping[str, Sequence] | None = None,
    ) -> bool:
        """Queues one prediction call's rows; never blocks. False: not accepted (queue full or
        closed), the rows are counted in dropped_rows. Mismatched lengths are a caller bug: ValueError.
        `keys`: the request's entity keys and event time beside the model inputs (module doc)."""
        n = len(predictions)
        if len(request_ids) != n:
            raise ValueError(f"payload log: {len(request_ids)} request ids for {n} predictions")
        for name, column in features.items():
            if len(column) != n:
                raise ValueError(f"payload log: feature {name!r} has {len(column)} rows for {n} predictions")
        for name, column in (keys or {}).items():
            if len(column) != n:
                raise ValueError(f"payload log: key {name!r} has {len(column)} rows for {n} predictions")
        if n == 0:
            return True
        entry = (
            model,
            str(version),
            source,
            request_ids,
            dict(features),
            predictions,
            time.time() if timestamp is None else float(timestamp),
            dict(keys) if keys else {},
        )
        with self._cond:
            if self._closed or self._queued + n > self.queue_size:
                self._dropped += n
                return False
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append(entry)
            self._pending_rows += n
            self._queued += n
            self._logged += n
            if self._pending_rows >= self.flush_rows > self._pending_rows - n:
                self._cond.notify_all()  # the writer waits for this threshold (flush() waiters may share it)
        return True

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "queued_rows": self._queued,
                "logged_rows": self._logged,
                "written_rows": self._written,
                "dropped_rows": self._dropped,
                "write_errors": self._errors,
                "lost_rows": self._lost,
            }

    # ---- flushing and shutdown ----------------------------------------------------------------
    def flush(self, timeout: float = 10) -> None:
        """Writes everything logged before this call; waits up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._logged
            self._flush_wanted = True
            self._cond.notify_all()
            while self._written + self._lost < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    log.warning(
                        "payload log flush: %d rows still queued after %.1f s",
                        target - self._written - self._lost,
                        timeout,
                    )
                    return
                self._cond.wait(remaining)

    def close(self, timeout: float = 30) -> None:
        """Stops accepting rows, writes what is queued, stops the writer. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("payload log close: the writer did not finish within %.0f s", timeout)
            return
        self.sink.close()
        _OPEN.discard(self)

    # ---- the writer thread --------------------------------------------------------------------
    def _take(self) -> list[Entry] | None:
        """Waits until a write is due; the entries to write, or None when closed and drained."""
        with self._cond:
            while True:
                if self._pending and (self._closed or self._flush_wanted or self._pending_rows >= self.flush_rows):
                    break
                if self._closed:
                    return None
                if self._pending:
                    remaining = self._oldest + self.flush_seconds - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                else:
                    self._flush_wanted = False
                    # log() does not wake us for the first row (that would cost every call a
                    # notify); waking every flush_seconds bounds its wait to ~flush_seconds.
                    self._cond.wait(self.flush_seconds)
            batch, self._pending, self._pending_rows = self._pending, [], 0
            self._flush_wanted = False
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            for rows, build in self.sink.units(batch):
                written = self._write_unit(rows, build)
                with self._cond:
                    self._queued -= rows
                    if written:
                        self._written += rows
                    else:
                        self._lost += rows
                    self._cond.notify_all()

    def _write_unit(self, rows: int, build: Callable[[], Any]) -> bool:
        try:
            payload = build()
        except Exception:  # data that cannot be converted: retrying would not help
            log.exception("payload log: %d rows could not be converted; they are lost", rows)
            self._count_error()
            return False
        unavailable = getattr(self.sink, "unavailable", ())  # errors that mean "down now, try later"
        backoff = Backoff(first=0.1, cap=5.0)
        attempt = 0  # failed attempts that count towards WRITE_ATTEMPTS
        while True:
            try:
                self.sink.write(payload)
                self._outage.recovered()
                return True
            except unavailable as e:
                # The sink is down: hold these rows and retry until it is back (the queue behind
                # them is bounded, log() drops beyond it); only a closing logger gives up.
                self._count_error()
                self._outage.failed(e, "holding the rows being written; new rows are dropped once the queue is full")
                attempt += self._closed
                if attempt >= WRITE_ATTEMPTS:
                    log.error("payload log: the sink is down at shutdown; %d rows are lost", rows)
                    return False
                with self._cond:  # close() wakes us: shutdown is not held up by the backoff
                    self._cond.wait_for(lambda: self._closed, timeout=backoff.next_delay())
            except Exception as e:
                self._count_error()
                attempt += 1
                if attempt >= WRITE_ATTEMPTS:
                    log.error("payload log: writing %d rows failed %d times (%s); they are lost", rows, attempt, e)
                    return False
                log.warning("payload log: write failed (%s), retrying", e)
                if not self._closed:  # closing: retry at once rather than hold up shutdown
                    time.sleep(0.2 * attempt)

    def _count_error(self) -> None:
        with self._cond:
            self._errors += 1


# Loggers not closed by their owner are flushed at interpreter exit. atexit runs before daemon
# threads are stopped, so the writer is still there to drain the queue.
_OPEN: weakref.WeakSet[PayloadLogger] = weakref.WeakSet()


@atexit.register
def _close_open_loggers() -> None:
    for logger in list(_OPEN):
        logger.close(timeout=10)


# ---- sinks: units(entries) -> [(rows, build)], build() -> payload, write(payload) ---------------
def _column(values: Sequence) -> np.ndarray:
    arr = np.asarray(values)
    return arr.reshape(-1)


def _extra_keys(entry: Entry) -> dict[str, Sequence]:
    """The call's keys that are not among its features (a key that is a model input is stored once)."""
    features = entry[4]
    return {k: v for k, v in entry[7].items() if k not in features}


def _utc_times(values: np.ndarray):
    """Event times -> a pyarrow timestamp[us, UTC] array: ISO-8601 text (naive = UTC), epoch seconds
    or datetimes; missing ("" / None / NaN) and what does not parse -> null."""
    import pandas as pd
    import pyarrow as pa

    arr = _column(values)
    if arr.dtype.kind == "M":
        times = pd.Series(pd.to_datetime(arr, utc=True))
    elif arr.dtype.kind in "iuf":
        times = pd.Series(pd.to_datetime(arr.astype(np.float64), unit="s", utc=True, errors="coerce"))
    else:
        text = pd.Series(arr, dtype=object)
        text = text.where(text.notna() & (text != ""), None)
        # pandas 2 parses any ISO-8601 variant per value with format="ISO8601"; pandas 1.5 (the
        # pipeline environment) has no such format and parses ISO text per value by default.
        iso = {"format": "ISO8601"} if int(pd.__version__.split(".", 1)[0]) >= 2 else {}
        times = pd.Series(pd.to_datetime(text, utc=True, errors="coerce", **iso))
    return pa.Array.from_pandas(times.dt.round("us")).cast(pa.timestamp("us", tz="UTC"))


def _utc_times_of(calls: Sequence[Sequence]):
    """_utc_times of several calls' columns, one after the other, converted once per kind of values
    (text, numbers, datetimes) rather than once per call: a flush of 2,500 one-row calls took ~2 s
    of the writer's time (holding the GIL the request path needs) parsed call by call, ~10 ms at once."""
    import pyarrow as pa

    arrays = [_column(v) for v in calls]
    kinds = ["M" if a.dtype.kind == "M" else "n" if a.dtype.kind in "iuf" else "t" for a in arrays]
    if len(set(kinds)) <= 1:
        return _utc_times(np.concatenate(arrays) if arrays else np.array([], dtype=object))
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    parts, positions = [], []
    for kind in dict.fromkeys(kinds):
        chosen = [i for i, k in enumerate(kinds) if k == kind]
        parts.append(_utc_times(np.concatenate([arrays[i] for i in chosen])))
        positions.append(np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in chosen]))
    order = np.empty(offsets[-1], dtype=np.int64)
    order[np.concatenate(positions)] = np.arange(offsets[-1])
    return pa.concat_arrays(parts).take(pa.array(order))


def _key_texts(values: Sequence) -> list:
    """Entity key values as text; missing ("" / None / NaN) -> None."""
    return [
        None if v is None or v == "" or (isinstance(v, float) and v != v) else str(v) for v in _column(values).tolist()
    ]


class ParquetSink:
    def __init__(self, root: str, *, event_time: str | None = None):
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401

        from mlops import storage  # noqa: F401

        self.root = root.rstrip("/")
        self.event_time = event_time  # the key stored as a UTC timestamp
        self.name = f"parquet {self.root}"
        self._swept: set[str] = set()
        # Everything the writer needs is imported now: the atexit flush runs when imports are no
        # longer possible (pyarrow loads its pandas shim lazily, on the first object column).
        pa.array(np.array([""], dtype=object), from_pandas=True)

    def units(self, entries: list[Entry]) -> Iterator[tuple[int, Callable[[], tuple[str, bytes]]]]:
        groups: dict[tuple, list[Entry]] = {}
        for e in entries:
            groups.setdefault((e[0], int(e[6] // 3600), tuple(sorted(e[4])), tuple(sorted(_extra_keys(e)))), []).append(
                e
            )
        for (model, hour, *_), group in groups.items():
            yield sum(len(e[5]) for e in group), (lambda m=model, h=hour, g=group: self._build(m, h, g))

    def _build(self, model: str, hour: int, group: list[Entry]) -> tuple[str, bytes]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not model or "/" in model or model.startswith("."):
            raise ValueError(f"model name {model!r} cannot be a directory name")
        counts = [len(e[5]) for e in group]
        n = sum(counts)
        micros = (np.array([e[6] for e in group], dtype=np.float64) * 1e6).round().astype(np.int64)
        cols = {
            "request_id": pa.array([i if isinstance(i, str) else str(i) for e in group for i in e[3]], pa.string()),
            "model": pa.array([model] * n, pa.string()),
            "version": pa.array(np.repeat(np.array([e[1] for e in group], dtype=object), counts), pa.string()),
            "source": pa.array(np.repeat(np.array([e[2] for e in group], dtype=object), counts), pa.string()),
            "timestamp": pa.array(np.repeat(micros, counts), pa.timestamp("us", tz="UTC")),
            "prediction": pa.array(np.concatenate([_column(e[5]) for e in group])),
        }
        for name in group[0][4]:  # the first call's column order
            values = np.concatenate([_column(e[4][name]) for e in group])
            # Object columns: None/NaN are missing values; float columns keep NaN (the raw encoding).
            cols[feature_column(name)] = pa.array(values, from_pandas=values.dtype == object)
        for name in _extra_keys(group[0]):
            if name == self.event_time:  # per call: one call's times are text, another's epoch seconds
                cols[feature_column(name)] = _utc_times_of([e[7][name] for e in group])
            else:
                cols[feature_column(name)] = pa.array([v for e in group for v in _key_texts(e[7][name])], pa.string())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(cols), sink)
        start = dt.datetime.fromtimestamp(hour * 3600, dt.UTC)
        directory = f"{self.root}/{model}/date={start:%Y-%m-%d}/hour={start:%H}"
        return f"{directory}/part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet", sink.getvalue().to_pybytes()

    def write(self, payload: tuple[str, bytes]) -> None:
        from mlops import storage

        uri, data = payload
        directory = uri.rsplit("/", 1)[0]
        if directory not in self._swept:  # temp files of a writer killed mid-write (once per partition)
            storage.remove_stale_temps(directory)
            self._swept.add(directory)
        storage.write_bytes_atomic(uri, data)

    def close(self) -> None:
        pass


def _json_values(column: np.ndarray) -> list:
    values = column.tolist()
    if column.dtype.kind == "f" or column.dtype == object:
        return [None if isinstance(v, float) and v != v else v for v in values]
    return values


class RedisSink:
    CHUNK_ROWS = 1000  # XADDs per pipeline round trip

    def __init__(self, url: str, stream: str, maxlen: int, *, event_time: str | None = None):
        from serving.redis_conn import broker_errors, connect

        self.client = connect(url, purpose="serving.payload_log.redis_url", socket_timeout=SINK_TIMEOUT_S)
        self.stream, self.maxlen = stream, maxlen
        self.event_time = event_time  # the key sent as ISO-8601 UTC text
        self.name = f"redis {url} stream {stream}"
        self.unavailable = broker_errors()

    def units(self, entries: list[Entry]) -> Iterator[tuple[int, Callable[[], list[dict]]]]:
        chunk: list[Entry] = []
        rows = 0
        for e in entries:
            chunk.append(e)
            rows += len(e[5])
            if rows >= self.CHUNK_ROWS:
                yield rows, (lambda c=chunk: self._build(c))
                chunk, rows = [], 0
        if chunk:
            yield rows, (lambda c=chunk: self._build(c))

    def _event_times(self, chunk: list[Entry]) -> dict[int, list]:
        """The event time key of each call in `chunk` that has it, as ISO-8601 UTC text (None when
        missing), converted for the whole chunk at once (_utc_times_of)."""
        having = [i for i, e in enumerate(chunk) if self.event_time in _extra_keys(e)]
        if not having:
            return {}
        times = [
            None if t is None else t.isoformat()
            for t in _utc_times_of([chunk[i][7][self.event_time] for i in having]).to_pylist()
        ]
        out, start = {}, 0
        for i in having:
            n = len(_column(chunk[i][7][self.event_time]))
            out[i], start = times[start : start + n], start + n
        return out

    def _build(self, chunk: list[Entry]) -> list[dict]:
        messages = []
        event_times = self._event_times(chunk)
        for j, entry in enumerate(chunk):
            model, version, source, ids, features, predictions, ts, _ = entry
            names = list(features)
            columns = [_json_values(_column(features[k])) for k in names]
            keys = {k: event_times[j] if k == self.event_time else _key_texts(v) for k, v in _extra_keys(entry).items()}
            preds = _column(predictions).tolist()
            for i, rid in enumerate(ids):
                fields = {
                    "request_id": str(rid),
                    "model": model,
                    "version": version,
                    "source": source,
                    "timestamp": repr(ts),
                    "prediction": repr(float(preds[i])),
                    "features": json.dumps(
                        dict(zip(names, (c[i] for c in columns))),
                        separators=(",", ":"),
                        allow_nan=False,
                        default=str,
                    ),
                }
                if keys:
                    fields["keys"] = json.dumps({k: v[i] for k, v in keys.items()}, separators=(",", ":"))
                messages.append(fields)
        return messages

    def write(self, messages: list[dict]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for fields in messages:
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


# ---- reading (monitoring: serving statistics, training/serving skew) -----------------------------
def _utc(value) -> Any:
    import pandas as pd

    if value is None:
        return None
    if isinstance(value, (int, float)):
        return pd.Timestamp(value, unit="s", tz="UTC")
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _with_columns(table, fields: Mapping[str, Any]):
    """`table` with the columns it lacks added as typed nulls (older files: no key columns)."""
    import pyarrow as pa

    for name, type_ in fields.items():
        if name not in table.column_names:
            table = table.append_column(pa.field(name, type_), pa.nulls(table.num_rows, type_))
    return table


def payload_log_files(root: str, model: str, start=None, end=None) -> list[str]:
    """The parquet files of `model` in the hour partitions that overlap [start, end) (datetimes, ISO
    text or epoch seconds; naive = UTC), in path order; dot- and underscore-files (being written)
    are left out. `root` is payload_log_root(config)."""
    import pandas as pd

    from mlops import storage

    lo, hi = _utc(start), _utc(end)
    base = f"{root.rstrip('/')}/{model}"
    files = []
    for day in storage.listdir(base):
        if not day.startswith("date="):
            continue
        for hour in storage.listdir(f"{base}/{day}"):
            if not hour.startswith("hour="):
                continue
            h0 = pd.Timestamp(f"{day[5:]}T{hour[5:]}:00:00", tz="UTC")
            if (lo is not None and h0 + pd.Timedelta(hours=1) <= lo) or (hi is not None and h0 >= hi):
                continue
            directory = f"{base}/{day}/{hour}"
            files += [
                f"{directory}/{name}"
                for name in storage.listdir(directory)
                if name.endswith(".parquet") and not name.startswith((".", "_"))
            ]
    return files


@contextlib.contextmanager
def _open_parquet(uri: str):
    import pyarrow.parquet as pq

    from mlops import storage

    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as handle:
        yield pq.ParquetFile(handle)


def payload_log_fields(files: Sequence[str]) -> dict[str, Any]:
    """Every column of any of the files (from their footers only) with its first type, by the name
    read_payload_logs gives it (partition-named features get their own name back)."""
    fields: dict[str, Any] = {}
    for uri in files:
        with _open_parquet(uri) as f:
            for field in f.schema_arrow:
                fields.setdefault(_logical_name(field.name), field.type)
    return fields


def _logical_name(stored: str) -> str:
    return {feature_column(k): k for k in PARTITION_KEYS}.get(stored, stored)


def iter_payload_logs(
    files: Sequence[str], start=None, end=None, *, columns: Sequence[str] | None = None, batch_rows: int = 65_536
):
    """The logged rows of `files` (payload_log_files) with start <= timestamp < end, as pandas
    DataFrames of at most `batch_rows` rows each, file after file (not sorted by time): a reader's
    memory is one batch, whatever the window's size. Rows of consecutive small files (a logger
    flushes every few seconds, so an hour may hold thousands of files of a few rows) are joined into
    one batch, so a reader's per-batch work is paid per `batch_rows`, not per file. `columns`
    (read_payload_logs' names; default all): a column a file lacks is null in its rows, typed as in
    the files that have it."""
    import pyarrow as pa

    pending: list = []  # arrow tables of one schema, fewer than batch_rows rows together
    for table in _payload_log_tables(files, start, end, columns, batch_rows):
        if pending and (
            sum(t.num_rows for t in pending) + table.num_rows > batch_rows or not table.schema.equals(pending[0].schema)
        ):
            yield pa.concat_tables(pending).to_pandas()
            pending = []
        pending.append(table)
    if pending:
        yield pa.concat_tables(pending).to_pandas()


def _payload_log_tables(files: Sequence[str], start, end, columns: Sequence[str] | None, batch_rows: int):
    """iter_payload_logs' rows as arrow tables, one per parquet batch of each file (<= batch_rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lo, hi = _utc(start), _utc(end)
    fields = payload_log_fields(files)
    wanted = list(fields) if columns is None else [c for c in columns if c in fields]
    for uri in files:
        with _open_parquet(uri) as f:
            stored = {_logical_name(n): n for n in f.schema_arrow.names}
            read = [stored[c] for c in {*wanted, "timestamp"} if c in stored]
            for batch in f.iter_batches(batch_size=batch_rows, columns=read):
                table = pa.Table.from_batches([batch]).rename_columns([_logical_name(n) for n in batch.schema.names])
                keep = None
                for bound, compare in ((lo, pc.greater_equal), (hi, pc.less)):
                    if bound is not None:
                        mask = compare(table["timestamp"], pa.scalar(bound.to_pydatetime(), table["timestamp"].type))
                        keep = mask if keep is None else pc.and_(keep, mask)
                if keep is not None:
                    table = table.filter(keep)
                if table.num_rows:
                    table = _with_columns(table, {c: fields[c] for c in wanted})
                    yield table.select(wanted)


def read_payload_logs(root: str, model: str, start=None, end=None):
    """The logged rows of `model` with start <= timestamp < end (datetimes, ISO text or epoch
    seconds; naive = UTC), sorted by time, as one pandas DataFrame. Only the hour partitions that
    overlap the range are opened. `root` is payload_log_root(config). A column some files lack
    (keys logged since a given day, features of another schema) is null in their rows, typed as in
    the files that have it. A window too large to hold: iter_payload_logs, batch by batch."""
    import pandas as pd

    frames = list(iter_payload_logs(payload_log_files(root, model, start, end), start, end))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FIXED_COLUMNS})
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)
