"""Streaming predictions over Redis Streams, at least once in, exactly once out per request id.

    consumer = StreamConsumer(config, ModelHandle.from_config(config, "flights@production"), logger)
    consumer.run(max_events=None)     # until stop() (SIGTERM in `mlops stream`)

Event format (XADD to serving.stream.input_stream), one request row per event:

    request_id   the client's id: the output's key, and the idempotency key
    data         a JSON object of the request fields, the same fields the online server takes
                 (handle.current.enricher.schema: entity keys and request-time features, optionally
                 the event time and store-provided features); null = missing
    (any other field is ignored, e.g. a trace id)

Output (XADD to output_stream): request_id, prediction, model, version, timestamp (epoch seconds),
event_id. Malformed events (no request_id, data not a JSON object, a field unknown, missing, of the
wrong type) go to dead_letter_stream with `reason`, `event_id`, `input_stream`, `consumer` and the
original fields as `event:<name>` (bytes as sent), and are acknowledged.

The loop, per micro-batch of up to stream.batch_size events:
1. at start, the consumer's own pending entries (delivered before a restart under the same name,
   never acknowledged); every claim_idle_ms/2, entries idle for claim_idle_ms in any consumer's
   pending list (a dead consumer's, or ours after a server error) are taken over with XAUTOCLAIM;
   then new entries (XREADGROUP >, blocking block_ms);
2. each event is decoded and validated on its own (a bad one cannot fail its neighbours);
3. the valid ones are completed (one Feast read) and predicted as ONE batch;
4. one Lua script (atomic on the server) per batch: for each answered event, SET NX the request
   id's dedup key (dedup_ttl_s) and only if it was not set XADD the output; XADD the dead letters
   (deduplicated by event id); XACK every event of the batch.

Why that gives exactly one output per request id: a consumer killed before step 4 leaves its
events pending: they are re-delivered (restart) or claimed (another consumer) and step 4 then runs
once. Step 4 is all-or-nothing, so "answered" and the output cannot be separated, and acking in the
same script means a committed event is never re-delivered. A consumer that was only slow (its
events claimed meanwhile) finds the dedup keys set and writes nothing; the same request id sent
twice is answered once. A server-side failure (the model, the store) leaves the batch pending, to
be retried after claim_idle_ms; only client errors go to the dead-letter stream.

Broker outages (Redis paused, killed, restarted, failed over): every call has a socket timeout
(a blocking read: block_ms + BROKER_STALL_S), so a hung broker is detected rather than waited for.
The loop then retries with a bounded, jittered exponential backoff (serving.redis_conn.Backoff),
logging one line when the broker goes and one when it is back, and on reconnecting re-reads its
own pending entries before anything new. Nothing is lost or answered twice, whatever the call
that failed: a read whose reply was lost left its entries pending (re-read now, or claimed after
claim_idle_ms if Redis ran the read only after we re-read); a commit that failed before Redis ran
it left its batch pending (predicted again and committed once); a commit that ran but whose reply
was lost is found done when the batch is committed again (dedup keys set: no output; XACK of
acknowledged ids: a no-op). A Redis restarted from its AOF/RDB keeps the streams, the group, the
pending lists and the dedup keys, so the same holds across a restart; one restarted EMPTY has lost
the unanswered events themselves (not the consumer's to recover): the group is created again and
the consumer goes on with what is sent from then on.

Redis Cluster is not supported (the script touches keys of several slots).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlops.errors import InvalidInput
from serving.predictor import PredictionInputError
from serving.redis_conn import Backoff, BrokerUnavailable, Outage, broker_errors

log = logging.getLogger("mlops.serving.stream")

try:  # orjson: several times faster than json on small objects
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads

ACK_CHUNK = 1000  # ids per XACK inside the script (Lua's unpack has a stack limit)
DEAD_LETTER_FIELDS = 100  # original fields copied to a dead letter (same limit; a poison event
# with thousands of fields must not make the batch's commit fail)
MAX_REQUEST_ID = 256  # characters; the id is part of a Redis key
BROKER_STALL_S = 2.0  # a call silent this long beyond its blocking time: the broker is hung

# KEYS: input, output, dead letter, then one dedup key per output, then one per dead letter.
# ARGV: group, ttl, model, version, timestamp, n_out, n_dead, n_out x (event id, request id,
# prediction), n_dead x (event id, n_fields, field, value, ...). Returns 1/0 per output: written.
COMMIT_LUA = """
local group, ttl = ARGV[1], tonumber(ARGV[2])
local model, version, ts = ARGV[3], ARGV[4], ARGV[5]
local n_out, n_dead = tonumber(ARGV[6]), tonumber(ARGV[7])
local a = 8
local ids, written = {}, {}
for i = 1, n_out do
  local eid, rid, pred = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  if redis.call('SET', KEYS[3 + i], eid, 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[2], '*', 'request_id', rid, 'prediction', pred, 'model', model,
               'version', version, 'timestamp', ts, 'event_id', eid)
    written[i] = 1
  else
    written[i] = 0
  end
  ids[#ids + 1] = eid
end
for j = 1, n_dead do
  local eid, nf = ARGV[a], tonumber(ARGV[a + 1])
  local fields = {}
  for f = a + 2, a + 1 + 2 * nf do fields[#fields + 1] = ARGV[f] end
  a = a + 2 + 2 * nf
  if redis.call('SET', KEYS[3 + n_out + j], eid, 'NX', 'EX', ttl) then
    redis.call('XADD', KEYS[3], '*', unpack(fields))
  end
  ids[#ids + 1] = eid
end
for s = 1, #ids, %d do
  redis.call('XACK', KEYS[1], group, unpack(ids, s, math.min(s + %d - 1, #ids)))
end
return written
""" % (ACK_CHUNK, ACK_CHUNK)  # noqa: UP031  (Lua source: braces are Lua tables, not fields)


class MalformedEvent(InvalidInput):
    """The event cannot be predicted as sent: the reason goes to the dead-letter stream."""


@dataclass
class StreamStats:
    events: int = 0  # events taken off the input stream and acknowledged
    answered: int = 0  # outputs written
    duplicates: int = 0  # valid events whose request id was already answered
    dead_lettered: int = 0
    batches: int = 0
    retried_later: int = 0  # events left pending after a server-side error
    claimed: int = 0  # events taken over from idle pending lists


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_event(fields: Mapping[bytes, bytes], enricher) -> tuple[str, dict[str, Any]]:
    """(request id, request fields) of one event, checked against the request schema on its own
    (one row); MalformedEvent says what is wrong."""
    request_id = _text(fields.get(b"request_id"))
    if not request_id:
        raise MalformedEvent("missing or empty field 'request_id' (UTF-8 text)")
    if len(request_id) > MAX_REQUEST_ID:
        raise MalformedEvent(f"field 'request_id' is longer than {MAX_REQUEST_ID} characters")
    raw = fields.get(b"data")
    if raw is None:
        raise MalformedEvent("missing field 'data' (a JSON object of the request fields)")
    try:
        data = _loads(raw)
    except ValueError as e:
        raise MalformedEvent(f"field 'data' is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"field 'data' must be a JSON object, got {type(data).__name__}")
    for name, value in data.items():
        if isinstance(value, (list, dict)):
            raise MalformedEvent(f"data field {name!r}: expected a single value, got a JSON {type(value).__name__}")
    time_column = enricher.time_key
    time_value = data.get(time_column) if time_column else None
    if time_value is not None and (isinstance(time_value, bool) or not isinstance(time_value, (str, int, float))):
        raise MalformedEvent(f"data field {time_column!r}: expected ISO-8601 text or epoch seconds")
    try:
        enricher.check({k: [v] for k, v in data.items()})
    except PredictionInputError as e:
        raise MalformedEvent(str(e).replace(" at row 0", "")) from None
    return request_id, data


class StreamConsumer:
    def __init__(self, config, handle, logger=None, *, consumer: str | None = None, client=None):
        from serving.payload_log import NullPayloadLogger
        from serving.redis_conn import connect

        self.spec = config.serving.stream
        self.handle = handle
        self.logger = logger or NullPayloadLogger()
        self.consumer = consumer or socket.gethostname()
        # a bytes client (decode_responses off): event fields are kept byte for byte
        self.client = client or connect(
            self.spec.redis_url,
            purpose="serving.stream.redis_url",
            socket_timeout=self.spec.block_ms / 1000 + BROKER_STALL_S,
        )
        self._commit = self.client.register_script(COMMIT_LUA)
        self.stats = StreamStats()
        self.outage = Outage(log, f"broker serving.stream.redis_url {self.spec.redis_url}")
        self._stop = threading.Event()

    # ---- keys ---------------------------------------------------------------------------------
    def answered_key(self, request_id: str) -> str:
        return f"{self.spec.output_stream}:answered:{request_id}"

    def dead_key(self, event_id: str) -> str:
        return f"{self.spec.dead_letter_stream}:event:{self.spec.input_stream}:{event_id}"

    # ---- the loop -----------------------------------------------------------------------------
    def ensure_group(self) -> None:
        """The consumer group, created at the start of the stream: events sent before the first
        consumer ever ran are answered too. BrokerUnavailable when Redis does not answer."""
        import redis

        try:
            self.client.xgroup_create(self.spec.input_stream, self.spec.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        except broker_errors() as e:
            raise BrokerUnavailable(f"serving.stream.redis_url {self.spec.redis_url}: {e}") from None

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, return from run()."""
        self._stop.set()

    def _room(self, max_events: int | None) -> int:
        left = self.spec.batch_size if max_events is None else max_events - self.stats.events
        return max(0, min(self.spec.batch_size, left))

    def run(self, max_events: int | None = None) -> StreamStats:
        """Answers events until stop() or max_events; survives broker outages (module doc).
        BrokerUnavailable only if the broker does not answer at the start."""
        import redis

        self.ensure_group()
        s = self.spec
        log.info("consumer %s of group %s on %s -> %s", self.consumer, s.group, s.input_stream, s.output_stream)
        backoff = Backoff()
        resync = True  # (re)connected: our own pending entries first
        next_claim = 0.0
        while not self._stop.is_set() and self._room(max_events):
            try:
                if resync:
                    self.ensure_group()  # a no-op unless Redis came back empty
                    self._recover_own_pending(max_events)
                    resync = False
                elif time.monotonic() >= next_claim:
                    self._claim_idle(max_events)
                    next_claim = time.monotonic() + s.claim_idle_ms / 2000
                else:
                    reply = self.client.xreadgroup(
                        s.group, self.consumer, {s.input_stream: ">"}, count=self._room(max_events), block=s.block_ms
                    )
                    for _, entries in reply or ():
                        self.process(entries)
            except (*broker_errors(), BrokerUnavailable) as e:
                # Whatever was read and not committed stays pending: re-read once Redis is back.
                self.outage.failed(e, "retrying with backoff; unanswered events stay pending")
                self._stop.wait(backoff.next_delay())
                resync, next_claim = True, 0.0
                continue
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                # Redis restarted without its data (or the stream was deleted): the group is gone.
                log.warning("consumer group %s of %s is gone (%s); creating it again", s.group, s.input_stream, e)
                resync = True
                continue
            if self.outage.down:
                self.outage.recovered()
            backoff.reset()
        self.logger.flush()
        return self.stats

    def _recover_own_pending(self, max_events: int | None) -> None:
        """Entries delivered to this consumer name and never acknowledged (a previous life)."""
        s, after = self.spec, "0"
        while not self._stop.is_set() and self._room(max_events):
            reply = self.client.xreadgroup(
                s.group, self.consumer, {s.input_stream: after}, count=self._room(max_events)
            )
            entries = reply[0][1] if reply else []
            if not entries:
                return
            after = entries[-1][0]
            self.process(entries)

    def _claim_idle(self, max_events: int | None) -> None:
        s, start = self.spec, "0-0"
        while not self._stop.is_set() and self._room(max_events):
            reply = self.client.xautoclaim(
                s.input_stream, s.group, self.consumer, s.claim_idle_ms, start_id=start, count=self._room(max_events)
            )
            start, entries = reply[0], reply[1]
            if entries:  # (deleted entries are dropped from the pending list by Redis itself)
                self.stats.claimed += len(entries)
                log.info("%s took over %d idle pending events", self.consumer, len(entries))
                self.process(entries)
            if start in (b"0-0", "0-0"):
                return

    # ---- one micro-batch ------------------------------------------------------------------------
    def process(self, entries: Sequence[tuple[bytes, Mapping[bytes, bytes] | None]]) -> None:
        """Predicts, answers, dead-letters and acknowledges one batch of stream entries."""
        served = self.handle.current  # one model version for the whole batch
        enricher = served.enricher
        groups: dict[tuple, list[tuple[bytes, str, dict, Mapping]]] = {}
        dead: list[tuple[bytes, Mapping, str, str | None]] = []
        for event_id, fields in entries:
            if fields is None:
                dead.append((event_id, {}, "the entry was deleted from the stream before it was processed", None))
                continue
            try:
                request_id, data = decode_event(fields, enricher)
            except MalformedEvent as e:
                dead.append((event_id, fields, str(e), _text(fields.get(b"request_id"))))
                continue
            # Events that send the same fields are predicted together (an optional field is
            # sent by all rows of a column or by none).
            groups.setdefault(tuple(sorted(data)), []).append((event_id, request_id, data, fields))

        answered: list[tuple[bytes, str]] = []
        predictions, columns, request_keys = [], [], []
        for names, events in groups.items():
            try:
                preds, cols, group_keys, events = self._predict(served, names, events, dead)
            except Exception:  # the model or the store, not the client: retried after claim_idle_ms
                log.exception("%d events left pending after a server-side error", len(events))
                self.stats.retried_later += len(events)
                continue
            if not events:
                continue
            answered += [(e[0], e[1]) for e in events]
            predictions.append(preds)
            columns.append(cols)
            request_keys.append(group_keys)
        self._commit_batch(served, answered, predictions, columns, dead, request_keys)

    def _predict(self, served, names: tuple, events: list, dead: list):
        """Predictions for a group of valid events; events whose completion fails on their own
        (e.g. a time the store cannot parse) move to `dead`. -> (predictions, columns, the
        request keys for the payload log, events)."""
        enricher = served.enricher
        try:
            enriched = enricher.enrich({name: [e[2][name] for e in events] for name in names})
            cols, keys = enriched.columns, enriched.keys
        except PredictionInputError:
            # Rare (each event passed validation): complete them one by one, so the culprits are
            # named and the others are still answered, from their own completed rows.
            kept, parts = [], []
            for e in events:
                try:
                    parts.append(enricher.enrich({name: [e[2][name]] for name in names}))
                    kept.append(e)
                except PredictionInputError as err:
                    dead.append((e[0], e[3], str(err), e[1]))
            if not kept:
                return np.zeros(0, np.float32), {}, {}, []
            cols = {k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns}
            keys = {k: np.concatenate([p.keys[k] for p in parts]) for k in parts[0].keys}
            events = kept
        return served.predictor.predict(cols), cols, keys, events

    def _commit_batch(self, served, answered, predictions, columns, dead, request_keys=()) -> None:
        if not answered and not dead:
            return
        s = self.spec
        now = time.time()
        preds = np.concatenate(predictions) if predictions else np.zeros(0, np.float32)
        keys = [s.input_stream, s.output_stream, s.dead_letter_stream]
        keys += [self.answered_key(rid) for _, rid in answered]
        keys += [self.dead_key(_text(eid)) for eid, *_ in dead]
        args: list = [s.group, s.dedup_ttl_s, served.name, served.version, repr(now), len(answered), len(dead)]
        for (eid, rid), p in zip(answered, preds.tolist()):
            args += [eid, rid, repr(p)]
        for eid, fields, reason, request_id in dead:
            original = list(fields.items())
            if len(original) > DEAD_LETTER_FIELDS:
                reason += f" (the first {DEAD_LETTER_FIELDS} of its {len(original)} fields are kept)"
            meta = {"reason": reason, "event_id": eid, "input_stream": s.input_stream, "consumer": self.consumer}
            if request_id:
                meta["request_id"] = request_id
            flat = [x for k, v in meta.items() for x in (k, v)]
            flat += [x for k, v in original[:DEAD_LETTER_FIELDS] for x in (b"event:" + k, v)]
            args += [eid, len(flat) // 2, *flat]
            log.warning("dead letter %s: %s", _text(eid), reason)
        written = self._commit(keys=keys, args=args)
        self.stats.batches += 1
        self.stats.events += len(answered) + len(dead)
        self.stats.answered += sum(written)
        self.stats.duplicates += len(written) - sum(written)
        self.stats.dead_lettered += len(dead)
        if self.logger.enabled and sum(written):
            mask = np.asarray(written, dtype=bool)
            features = {k: np.concatenate([c[k] for c in columns if c])[mask] for k in columns[0]} if columns else {}
            # Groups differ in the optional fields they sent: a key a group lacks is missing ("") there.
            key_names = dict.fromkeys(k for group in request_keys for k in group)
            logged_keys = {
                k: np.concatenate(
                    [g[k] if k in g else np.full(len(p), "", dtype=object) for g, p in zip(request_keys, predictions)]
                )[mask]
                for k in key_names
            }
            self.logger.log(
                model=served.name,
                version=served.version,
                source="stream",
                request_ids=[rid for (_, rid), w in zip(answered, written) if w],
                features=features,
                predictions=preds[mask],
                timestamp=now,
                keys=logged_keys,
            )


# ---- benchmark ---------------------------------------------------------------------------------
def benchmark_throughput(
    config, handle, *, events: int = 5000, rows: Sequence[Mapping[str, Any]] | None = None, producer_chunk: int = 500
) -> dict:
    """End-to-end events/s through a real consumer on the configured Redis: a producer thread
    XADDs `events` requests (cycling through `rows`, default: one valid row of the model's
    request schema) while the consumer answers them; from the first XADD to the last output.
    Uses throwaway stream names and deletes them (and the dedup keys) afterwards."""
    import json

    from serving.redis_conn import connect

    suffix = uuid.uuid4().hex[:12]
    spec = config.serving.stream.model_copy(
        update={
            "input_stream": f"bench:{suffix}:in",
            "output_stream": f"bench:{suffix}:out",
            "dead_letter_stream": f"bench:{suffix}:dead",
            "group": f"bench-{suffix}",
        }
    )
    config = config.model_copy(update={"serving": config.serving.model_copy(update={"stream": spec})})
    client = connect(spec.redis_url, purpose="serving.stream.redis_url")
    if rows is None:
        rows = [{s.name: (1.0 if s.dtype == "float32" else "x") for s in handle.current.enricher.schema.required}]
    payloads = [json.dumps(r) for r in rows]
    consumer = StreamConsumer(config, handle, consumer="bench", client=client)
    consumer.ensure_group()

    def produce():
        for start in range(0, events, producer_chunk):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(events, start + producer_chunk)):
                pipe.xadd(spec.input_stream, {"request_id": f"b{i}", "data": payloads[i % len(payloads)]})
            pipe.execute()

    try:
        started = time.perf_counter()
        producer = threading.Thread(target=produce, name="bench-producer")
        producer.start()
        stats = consumer.run(max_events=events)
        elapsed = time.perf_counter() - started
        producer.join()
        outputs = client.xlen(spec.output_stream)
    finally:
        keys = [spec.input_stream, spec.output_stream, spec.dead_letter_stream]
        keys += list(client.scan_iter(match=f"{spec.output_stream}:answered:*", count=10_000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    return {
        "events": events,
        "answered": outputs,
        "dead_lettered": stats.dead_lettered,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "batch_size": spec.batch_size,
        "mean_batch": round(stats.events / max(stats.batches, 1), 1),
        **{"stats": asdict(stats)},
    }
