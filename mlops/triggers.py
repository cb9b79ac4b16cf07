"""Continuous training triggers: the decision and the record; starting the run is the caller's job.

A trigger fires for a cause (a schedule slot, a new dataset span, a commit, an alert group and
model version), which an idempotency key names. Each key gets one record, a JSON file in the
artifact store created with create-if-absent semantics, before anything is started:

    <artifact_root>/triggers/<key>.json            the claim, then the record of what it started
    <artifact_root>/triggers/released/<key>.<utc>.json   a start that failed before any run existed

Two triggers for one cause, in two processes or on two machines, race on creating that file;
exactly one wins and starts the run, the other reads the winner's record and starts nothing. On
a local file system the record is written to a temporary file and hard-linked into place (link
fails if the name exists, and the file is complete when it appears); on an object store it is
opened in mode "xb" (S3's conditional put, If-None-Match: *).

A start that fails before a run exists (the KFP API unreachable, a bad parameter) releases the key:
the record moves to released/ and the next trigger for that cause tries again. A run that started
keeps its key whatever its outcome: a failed run is not retried by the trigger (delete or
`mlops trigger forget` the record to re-arm it). A claim whose process died before it recorded a
run reads as ABANDONED and is not retried on its own either: the run may have been created.

States: STARTING (claimed), RUNNING (a local run going on), SUBMITTED (a KFP run created),
SUCCEEDED / FAILED / CANCELED (a local run's end), ABANDONED (see above), RELEASED.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops import storage
from mlops.config import join_uri
from mlops.errors import InvalidInput, MlopsError, NotFound

KINDS = ("schedule", "new-data", "code-change", "alert")
STARTING, RUNNING, SUBMITTED = "STARTING", "RUNNING", "SUBMITTED"
SUCCEEDED, FAILED, CANCELED, ABANDONED, RELEASED = "SUCCEEDED", "FAILED", "CANCELED", "ABANDONED", "RELEASED"
RUN_STATES = (SUBMITTED, SUCCEEDED, FAILED, CANCELED)  # what a start may report
_KEY_PART = re.compile(r"[^A-Za-z0-9@._-]")
MAX_KEY_LENGTH = 180


class TriggerInputError(InvalidInput):
    """A trigger's cause or option is wrong (a commit that is not a SHA, an unknown kind)."""


class TriggerNotFound(NotFound):
    """No trigger record with that key."""


class CreateIfAbsentUnsupported(MlopsError):
    """The artifact store cannot create a file only if it is absent (needed for idempotency)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def idempotency_key(kind: str, pipeline: str, *cause: str) -> str:
    """`<kind>.<pipeline>.<cause parts joined by .>`, readable and usable as a file name: characters
    outside [A-Za-z0-9@._-] become "_", and whenever that (or shortening) changed the text a hash
    of the exact cause is appended, so two different causes never share a key."""
    if kind not in KINDS:
        raise TriggerInputError(f"trigger kind {kind!r}: expected one of {', '.join(KINDS)}")
    exact = ".".join([kind, pipeline, *cause])
    readable = ".".join(_KEY_PART.sub("_", part) for part in (kind, pipeline, *cause))
    if readable == exact and len(readable) <= MAX_KEY_LENGTH and not readable.startswith("."):
        return readable
    digest = hashlib.sha256(json.dumps([kind, pipeline, *cause]).encode()).hexdigest()[:12]
    return f"{readable[: MAX_KEY_LENGTH - 13].lstrip('.')}-{digest}"


@dataclass
class TriggerRecord:
    key: str
    kind: str  # what fired: schedule, new-data, code-change, alert
    reason: str  # why, in words
    cause: dict[str, Any]  # why, as data: the slot, span, commit, alert group...
    pipeline: str
    parameters: dict[str, Any]
    mode: str  # "local" (kfp.local) or "kfp" (submitted to a KFP API)
    state: str = STARTING
    run_id: str | None = None
    run_name: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the KFP pipeline version, the run dir
    metadata: str | None = None  # "recorded", or why ML Metadata was not written
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    driver: str = field(default_factory=lambda: _this_process())

    @classmethod
    def from_json(cls, data: dict) -> TriggerRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def shown_state(self) -> str:
        """The state, with a claim or local run whose process is gone read as ABANDONED."""
        if self.state in (STARTING, RUNNING) and _process_alive(self.driver) is False:
            return ABANDONED
        return self.state


@dataclass(frozen=True)
class StartedRun:
    """What starting a run returned: its id (None when a local run failed before telling it), and
    the state it is in now (SUBMITTED for KFP, the end state of a synchronous local run)."""

    state: str
    run_id: str | None = None
    run_name: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    record: TriggerRecord
    started: bool  # False: the cause had already been triggered; `record` is that trigger's


class TriggerRecords:
    """The trigger records of an artifact root."""

    def __init__(self, artifact_root: str):
        self.root = join_uri(artifact_root, "triggers")

    def _uri(self, key: str) -> str:
        return join_uri(self.root, f"{key}.json")

    def claim(self, record: TriggerRecord) -> TriggerRecord | None:
        """Creates the record if no record has its key. Returns None when it was created (this
        caller owns the cause), else the record that was there first."""
        data = _record_bytes(record)
        uri = self._uri(record.key)
        if _create_if_absent(uri, data):
            return None
        existing = self.find(record.key)
        if existing is None:  # released between our attempt and the read: one more try
            return None if _create_if_absent(uri, data) else self.get(record.key)
        return existing

    def update(self, record: TriggerRecord) -> None:
        """Rewrites the owner's record (atomically: readers see the old or the new one)."""
        record.updated_at = now()
        storage.write_bytes_atomic(self._uri(record.key), _record_bytes(record))

    def release(self, record: TriggerRecord) -> None:
        """Frees the key of a trigger that started nothing: the record moves to released/."""
        record.state, record.updated_at = RELEASED, now()
        self.update(record)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        storage.makedirs(join_uri(self.root, "released"))
        storage.rename(self._uri(record.key), join_uri(self.root, "released", f"{record.key}.{stamp}.json"))

    def forget(self, key: str) -> TriggerRecord:
        """Re-arms a cause: its record moves to released/ as it is (a run it started stays)."""
        record = self.get(key)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        storage.makedirs(join_uri(self.root, "released"))
        storage.rename(self._uri(key), join_uri(self.root, "released", f"{key}.{stamp}.json"))
        return record

    def find(self, key: str) -> TriggerRecord | None:
        try:
            return TriggerRecord.from_json(storage.read_json(self._uri(key)))
        except FileNotFoundError:
            return None

    def get(self, key: str) -> TriggerRecord:
        record = self.find(key)
        if record is None:
            raise TriggerNotFound(f"no trigger record {key!r} under {self.root}")
        return record

    def list(self, include_released: bool = False) -> list[TriggerRecord]:
        """Records, oldest first (released ones too when asked)."""
        uris = [join_uri(self.root, n) for n in storage.listdir(self.root) if n.endswith(".json")]
        if include_released:
            released = join_uri(self.root, "released")
            uris += [join_uri(released, n) for n in storage.listdir(released) if n.endswith(".json")]
        records = []
        for uri in uris:
            with contextlib.suppress(FileNotFoundError):  # released while listing
                records.append(TriggerRecord.from_json(storage.read_json(uri)))
        return sorted(records, key=lambda r: (r.created_at, r.key))


def fire(
    records: TriggerRecords,
    record: TriggerRecord,
    start: Callable[[TriggerRecord], StartedRun],
    *,
    synchronous: bool = False,
    record_metadata: Callable[[TriggerRecord], None] | None = None,
) -> Outcome:
    """Starts the run of `record`'s cause unless its key was claimed before.

    `start(record)` starts the run and returns a StartedRun; if it raises, no run exists, the key
    is released and the error propagates. `record_metadata(record)` records the trigger in ML
    Metadata once the run id is known; its failure is noted in the record, never fatal."""
    existing = records.claim(record)
    if existing is not None:
        return Outcome(existing, started=False)
    try:
        if synchronous:  # a local run: the record says RUNNING while it goes on
            record.state = RUNNING
            records.update(record)
        started = start(record)
        if started.state not in RUN_STATES:
            raise MlopsError(f"trigger {record.key}: a start reported state {started.state!r}")
    except BaseException as e:
        record.error = str(e) or type(e).__name__
        records.release(record)
        raise
    record.state, record.run_id, record.run_name = started.state, started.run_id, started.run_name
    record.error, record.details = started.error, {**record.details, **started.details}
    if record_metadata is not None and record.run_id:
        try:
            record_metadata(record)
            record.metadata = "recorded"
        except Exception as e:  # noqa: BLE001 - ML Metadata is where available, the record is the truth
            record.metadata = f"not recorded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"trigger {record.key}: ML Metadata {record.metadata}", file=sys.stderr)
    records.update(record)
    return Outcome(record, started=True)


def record_in_metadata(config, record: TriggerRecord) -> None:
    """The trigger on its run's context in ML Metadata (custom properties trigger, trigger_key,
    trigger_reason; a commit as git_commit), so lineage says why a model was trained."""
    from mlops.metadata.store import open_store

    properties = {"trigger": record.kind, "trigger_key": record.key, "trigger_reason": record.reason}
    if record.kind == "code-change":
        properties["git_commit"] = record.cause.get("commit")
    open_store(config).run_context(record.pipeline, record.run_id, properties)


# ---- create-if-absent ---------------------------------------------------------------------------


def _record_bytes(record: TriggerRecord) -> bytes:
    return (json.dumps(record.to_json(), indent=2, sort_keys=True, default=str) + "\n").encode()


def _create_if_absent(uri: str, data: bytes) -> bool:
    """Writes `data` to `uri` only if nothing is there; True when this call created it. The file
    appears complete or not at all."""
    fs, path = storage.fs_and_path(uri)
    if storage.is_local(uri):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), storage.new_temp_name() + ".json")
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if `path` exists: the atomic create-if-absent
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    fs.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    except (NotImplementedError, ValueError) as e:
        raise CreateIfAbsentUnsupported(
            f"{uri}: the artifact store cannot create a file only if absent ({e}); triggers need it"
        ) from None
    return True


def _this_process() -> str:
    from mlops.metadata.store import this_process

    return this_process()


def _process_alive(driver: str) -> bool | None:
    """Whether the process that claimed a trigger still runs; None when that cannot be told here."""
    from mlops.metadata.store import driver_alive

    return driver_alive(driver)
