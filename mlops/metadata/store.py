"""The ML Metadata store: the system of record for lineage (what produced what, in which run).

`open_store(config)` connects to the backend named by `config.metadata` (a SQLite file under the
artifact root by default; MySQL/MariaDB; or KFP's metadata-grpc-service) and returns a thin
`MetadataStore` wrapper. The wrapper exists for three reasons the raw MLMD API does not cover:

* idempotency: a component recorded twice for one run (a retry, a re-run of the publisher step)
  updates one execution instead of adding a second one. Executions are named `<run_id>/<component>`
  and looked up by name; artifacts are identified by (type, uri) through a deterministic
  `external_id`, so a dataset version consumed by many runs stays one artifact;
* no silent data loss: MLMD replaces a stored artifact *wholesale* when it is put again, so a
  consumer that only knows (type, uri) would wipe the properties recorded by the producer. We
  merge the new properties into the stored artifact before writing;
* plain Python results for the CLI (`mlops lineage MODEL@VERSION`), not protos.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Union

from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from mlops.config import MetadataSpec, PlatformConfig
from mlops.errors import Unavailable
from mlops.metadata import types as T
from mlops.metadata.errors import MetadataConfigError, MetadataConflict, MetadataError, MetadataNotFound

ConnectionConfig = Union[pb.ConnectionConfig, pb.MetadataStoreClientConfig]

DEFAULT_MYSQL_PORT = 3306
DEFAULT_GRPC_PORT = 8080  # KFP's metadata-grpc-service
GRPC_TIMEOUT_S = 30.0  # per call to the gRPC service
_INPUT_EVENTS = {pb.Event.INPUT, pb.Event.DECLARED_INPUT, pb.Event.INTERNAL_INPUT}
_OUTPUT_EVENTS = {pb.Event.OUTPUT, pb.Event.DECLARED_OUTPUT, pb.Event.INTERNAL_OUTPUT}
_NOT_LINEAGE = {pb.Execution.FAILED, pb.Execution.CANCELED}  # their outputs are not trusted


# ---------------------------------------------------------------------------------------------
# Connection


def connection_config(spec: MetadataSpec, artifact_root_sqlite_path: str) -> ConnectionConfig:
    """The MLMD connection for `spec`. `artifact_root_sqlite_path` is the SQLite file used by the
    sqlite backend (normally `PlatformConfig.metadata_sqlite_path`); its directory is created."""
    if spec.backend == "sqlite":
        path = artifact_root_sqlite_path.removeprefix("file://")
        if "://" in path:
            raise MetadataConfigError(
                f"metadata: SQLite needs a local file, got {artifact_root_sqlite_path!r}; "
                "set metadata.sqlite_path or use the mysql/grpc backend"
            )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        cfg = pb.ConnectionConfig()
        cfg.sqlite.filename_uri = path
        cfg.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return cfg
    if spec.backend == "mysql":
        cfg = pb.ConnectionConfig()
        cfg.mysql.host = spec.host
        cfg.mysql.port = spec.port or DEFAULT_MYSQL_PORT
        cfg.mysql.database = spec.database  # MLMD creates it if missing
        cfg.mysql.user = spec.user
        if spec.password_env:
            if spec.password_env not in os.environ:
                raise MetadataConfigError(
                    f"metadata.password_env: environment variable ${spec.password_env} is not set"
                )
            cfg.mysql.password = os.environ[spec.password_env]
        return cfg
    if spec.backend == "grpc":
        # A deadline on every call: without one a stalled service blocks a step forever.
        return pb.MetadataStoreClientConfig(
            host=spec.host, port=spec.port or DEFAULT_GRPC_PORT, client_timeout_sec=GRPC_TIMEOUT_S
        )
    raise MetadataConfigError(f"metadata.backend: unknown backend {spec.backend!r}")


class MetadataServiceUnavailable(MetadataError, Unavailable):
    """The ML Metadata gRPC service (metadata.backend: grpc) did not answer."""


def open_store(config: PlatformConfig) -> MetadataStore:
    """The metadata store configured for this project (types registered)."""
    connection = connection_config(config.metadata, config.metadata_sqlite_path)
    if not isinstance(connection, pb.MetadataStoreClientConfig):
        return MetadataStore(connection)
    try:
        return MetadataStore(connection)  # registers the types: the first call to the service
    except (errors.UnavailableError, errors.DeadlineExceededError) as e:
        raise MetadataServiceUnavailable(
            f"metadata: the ML Metadata service at {connection.host}:{connection.port} (metadata.backend grpc) "
            f"did not answer: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Run state (see MetadataStore.start_run)

RUN_STATE, RUN_DRIVER, RUN_ENDED, RUN_REASON = "state", "driver", "ended_at", "state_reason"
RUNNING, COMPLETE, FAILED, CANCELED, ABANDONED = "RUNNING", "COMPLETE", "FAILED", "CANCELED", "ABANDONED"
RUN_END_STATES = (COMPLETE, FAILED, CANCELED)


class RunClosed(MetadataConflict):
    """A step tried to record a result into a run that was cancelled, failed or abandoned."""


def _process_start_ticks(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, Linux), which tells a live driver
    from a later process that reused its pid; None when no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> str:
    import socket

    return f"{socket.gethostname()} {os.getpid()} {_process_start_ticks(os.getpid()) or '-'}"


def driver_alive(driver: str) -> bool | None:
    """Whether the process named by a run's `driver` property still runs; None when that cannot
    be told from here (another host, or no /proc)."""
    import socket

    try:
        host, pid, ticks = driver.split(" ")
    except ValueError:
        return None
    if host != socket.gethostname() or ticks == "-":
        return None
    return _process_start_ticks(int(pid)) == ticks


def run_state(run: ContextRecord) -> str:
    """A run's state: RUNNING, COMPLETE, FAILED, CANCELED; ABANDONED for a RUNNING run whose
    driver process is gone (killed with SIGKILL, or its machine restarted); "" when unrecorded."""
    state = run.properties.get(RUN_STATE, "")
    if state == RUNNING and driver_alive(run.properties.get(RUN_DRIVER, "")) is False:
        return ABANDONED
    return state


# ---------------------------------------------------------------------------------------------
# Plain-Python values


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact as a component knows it. (type_name, uri) is its identity; `name`, if given,
    must be unique within the type (MLMD rule; case-insensitively on MySQL), e.g. "flights@3"."""

    type_name: str
    uri: str
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactRecord:
    id: int
    type_name: str
    uri: str
    name: str | None
    properties: dict[str, Any]  # typed and custom properties together
    state: str  # LIVE, PENDING, ...
    create_time_ms: int


@dataclass(frozen=True)
class ExecutionRecord:
    id: int
    type_name: str
    name: str  # "<run_id>/<component>"
    component: str
    state: str  # COMPLETE, FAILED, CACHED, ...
    properties: dict[str, Any]
    create_time_ms: int


@dataclass(frozen=True)
class ContextRecord:
    id: int
    type_name: str
    name: str
    properties: dict[str, Any]
    create_time_ms: int


@dataclass(frozen=True)
class RecordedExecution:
    """What `record_execution` stored: artifact ids per event key, in list order."""

    execution_id: int
    input_ids: dict[str, list[int]]
    output_ids: dict[str, list[int]]


@dataclass(frozen=True)
class LineageStep:
    """One upstream step: `artifact` was produced by `execution` (None: produced outside any
    recorded execution, e.g. a raw source). `depth` 0 is the starting artifact; `consumed_as` is
    the input key under which the step below (depth - 1) read it. `repeated`: the execution was
    already expanded above (diamond-shaped lineage), its inputs are not listed again."""

    depth: int
    artifact: ArtifactRecord
    execution: ExecutionRecord | None
    consumed_as: str | None = None
    repeated: bool = False


def _to_value(value: Any, declared: str | None) -> pb.Value:
    """Python -> MLMD Value, following the declared type (bool -> INT 0/1, dict/list -> JSON)."""
    v = pb.Value()
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True)
    kind = declared or ("INT" if isinstance(value, (bool, int)) else "DOUBLE" if isinstance(value, float) else "STRING")
    if kind == "INT":
        v.int_value = int(value)
    elif kind == "DOUBLE":
        v.double_value = float(value)
    else:
        v.string_value = str(value)
    return v


def _set_properties(node, props: dict[str, Any], declared: dict[str, str]) -> None:
    """Declared names go to typed `properties`, anything else to `custom_properties`."""
    for key, value in props.items():
        if value is None:
            continue
        target = node.properties if key in declared else node.custom_properties
        target[key].CopyFrom(_to_value(value, declared.get(key)))


def _from_value(v: pb.Value) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def _props(node) -> dict[str, Any]:
    out = {k: _from_value(v) for k, v in node.custom_properties.items()}
    out.update({k: _from_value(v) for k, v in node.properties.items()})
    return out


def _event(kind: int, key: str, index: int) -> pb.Event:
    """Event path [key, index], the TFX convention: key = the dict key of inputs/outputs."""
    event = pb.Event(type=kind)
    event.path.steps.add().key = key
    event.path.steps.add().index = index
    return event


def _event_key(event: pb.Event) -> str | None:
    return next((s.key for s in event.path.steps if s.HasField("key")), None)


# Where KFP's launcher mounts object-store artifacts inside a container: a step may know an
# artifact by its URI (artifact.uri) or by its local path (artifact.path); both are one artifact.
_KFP_MOUNTS = (("/minio/", "minio://"), ("/s3/", "s3://"), ("/gcs/", "gs://"))


def canonical_uri(uri: str) -> str:
    """One spelling per artifact: KFP mount paths become their object-store URIs, no trailing /."""
    for mount, scheme in _KFP_MOUNTS:
        if uri.startswith(mount):
            uri = scheme + uri[len(mount) :]
            break
    return uri.rstrip("/") or uri


def _external_id(type_name: str, uri: str) -> str:
    """Deterministic identity of an artifact. The uri is hashed: MLMD's MySQL schema makes
    external_id a case-insensitive VARCHAR(255), so raw uris could be too long or collide
    ("s3://b/Model" vs "s3://b/model") on MySQL while working on SQLite."""
    return f"{type_name}:{hashlib.sha256(canonical_uri(uri).encode()).hexdigest()}"


# ---------------------------------------------------------------------------------------------
# The store


class MetadataStore:
    """Thin wrapper over `ml_metadata.MetadataStore`; the raw store is `.mlmd` for anything else."""

    def __init__(self, connection: ConnectionConfig):
        self.mlmd = metadata_store.MetadataStore(connection)
        self._type_ids: dict[str, int] = {}
        self._type_names: dict[int, str] = {}
        self.ensure_types()

    # -- types and contexts --------------------------------------------------------------------

    def ensure_types(self) -> None:
        """Registers the types of `types.py`. Idempotent; can_add/can_omit let an older or newer
        platform version share one database (a property may be added, never retyped)."""
        for table, proto, put in (
            (T.ARTIFACT_TYPES, pb.ArtifactType, self.mlmd.put_artifact_type),
            (T.EXECUTION_TYPES, pb.ExecutionType, self.mlmd.put_execution_type),
            (T.CONTEXT_TYPES, pb.ContextType, self.mlmd.put_context_type),
        ):
            for name, props in table.items():
                t = proto(name=name)
                for prop, kind in props.items():
                    t.properties[prop] = pb.PropertyType.Value(kind)
                try:
                    type_id = put(t, can_add_fields=True, can_omit_fields=True)
                except errors.AlreadyExistsError as e:
                    raise MetadataError(f"MLMD type {name} is stored with an incompatible property type: {e}") from e
                self._type_ids[name] = type_id
                self._type_names[type_id] = name

    def pipeline_context(self, name: str, project: str | None = None) -> ContextRecord:
        """Get-or-create the `mlops.Pipeline` context `name`."""
        return self._context_record(self._get_or_create_context(T.PIPELINE_CONTEXT, name, {"project": project}))

    def run_context(self, pipeline_name: str, run_id: str, properties: dict[str, Any] | None = None) -> ContextRecord:
        """Get-or-create the `mlops.PipelineRun` context `run_id` (a child of the pipeline context).
        Run ids are global (KFP run UUIDs, local timestamps+nonce): reusing one for another
        pipeline is an error rather than a silent merge of two runs."""
        stored = self.mlmd.get_context_by_type_and_name(T.RUN_CONTEXT, run_id)
        if stored is not None and (owner := _props(stored).get("pipeline_name")) != pipeline_name:
            raise MetadataConflict(f"run id {run_id!r} already belongs to pipeline {owner!r}, not {pipeline_name!r}")
        pipeline = self._get_or_create_context(T.PIPELINE_CONTEXT, pipeline_name, {})
        props = {**(properties or {}), "pipeline_name": pipeline_name, "run_id": run_id}
        run = self._get_or_create_context(T.RUN_CONTEXT, run_id, props)
        try:
            self.mlmd.put_parent_contexts([pb.ParentContext(child_id=run.id, parent_id=pipeline.id)])
        except errors.AlreadyExistsError:
            pass
        return self._context_record(run)

    # -- run state ------------------------------------------------------------------------------
    # A run context records its state as custom properties (no type change, so an older platform
    # version still reads the database): `state` is RUNNING from the driver's start, then
    # COMPLETE, FAILED or CANCELED; `driver` = "host pid start-ticks" of the local driver process.
    # A driver killed with SIGKILL cannot write its end: its run stays RUNNING in the database and
    # reads as ABANDONED once that process is gone (run_state). A run recorded by steps alone (a
    # KFP cluster run, whose driver is the KFP backend) has no state: "".

    def start_run(self, pipeline_name: str, run_id: str, properties: dict[str, Any] | None = None) -> ContextRecord:
        """Creates the run context as RUNNING, owned by this (driver) process."""
        return self.run_context(
            pipeline_name, run_id, {**(properties or {}), RUN_STATE: RUNNING, RUN_DRIVER: this_process(), RUN_ENDED: ""}
        )

    def finish_run(self, run_id: str, state: str, reason: str = "") -> ContextRecord:
        """Marks a run COMPLETE, FAILED or CANCELED (the driver's last write), with why."""
        if state not in RUN_END_STATES:
            raise MetadataError(f"finish_run: state must be one of {', '.join(RUN_END_STATES)}, got {state!r}")
        stored = self.mlmd.get_context_by_type_and_name(T.RUN_CONTEXT, run_id)
        if stored is None:
            raise MetadataNotFound(f"no run {run_id!r} in ML Metadata")
        import time

        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return self._context_record(
            self._get_or_create_context(
                T.RUN_CONTEXT, run_id, {RUN_STATE: state, RUN_ENDED: ended, RUN_REASON: reason[:2000]}
            )
        )

    def _get_or_create_context(self, type_name: str, name: str, props: dict[str, Any]) -> pb.Context:
        """Creates the context, or merges `props` into the stored one (a concurrent creator wins
        the insert; we then read its row)."""
        declared = T.CONTEXT_TYPES[type_name]
        ctx = self.mlmd.get_context_by_type_and_name(type_name, name)
        if ctx is None:
            ctx = pb.Context(type_id=self._type_ids[type_name], name=name)
            _set_properties(ctx, props, declared)
            try:
                ctx.id = self.mlmd.put_contexts([ctx])[0]
                return ctx
            except errors.AlreadyExistsError:
                ctx = self.mlmd.get_context_by_type_and_name(type_name, name)
        merged = pb.Context()
        merged.CopyFrom(ctx)
        _set_properties(merged, props, declared)
        if merged != ctx:
            self.mlmd.put_contexts([merged])
        return merged

    # -- recording -----------------------------------------------------------------------------

    def record_execution(
        self,
        run_context: ContextRecord,
        component: str,
        inputs: dict[str, list[ArtifactRef]],
        outputs: dict[str, list[ArtifactRef]],
        properties: dict[str, Any] | None = None,
        state: str = "COMPLETE",
    ) -> RecordedExecution:
        """Records one component execution of a run, atomically with its artifacts, its
        INPUT/OUTPUT events (path = [dict key, list index]) and its attribution to the run and
        pipeline contexts. `state` is an MLMD Execution.State name (COMPLETE, FAILED, CACHED...).

        Idempotent per (run, component): a second call updates the same execution (e.g. FAILED
        then COMPLETE on retry), reuses artifacts by (type, uri) and adds only missing events."""
        if run_context.type_name != T.RUN_CONTEXT:
            raise MetadataError(f"record_execution needs a {T.RUN_CONTEXT} context, got {run_context.type_name}")
        if pb.Execution.State.Value(state) not in _NOT_LINEAGE:
            [current] = self.mlmd.get_contexts_by_id([run_context.id])
            closed = run_state(self._context_record(current))
            if closed not in ("", RUNNING, COMPLETE):
                # An orphaned step of a cancelled or dead run must not add trusted lineage to it.
                raise RunClosed(f"{component}: run {run_context.name} is {closed}; its step results are not recorded")
        parents = self.mlmd.get_parent_contexts_by_context(run_context.id)
        contexts = [pb.Context(id=run_context.id)] + [pb.Context(id=p.id) for p in parents]

        name = f"{run_context.name}/{component}"
        stored = self.mlmd.get_execution_by_type_and_name(T.EXECUTION_TYPE, name)
        execution = pb.Execution(
            type_id=self._type_ids[T.EXECUTION_TYPE], name=name, last_known_state=pb.Execution.State.Value(state)
        )
        _set_properties(execution, {**(properties or {}), "component": component}, T.EXECUTION_TYPES[T.EXECUTION_TYPE])
        existing_events: set[tuple[int, int]] = set()
        if stored is not None:
            execution.id = stored.id
            existing_events = {(e.artifact_id, e.type) for e in self.mlmd.get_events_by_execution_ids([stored.id])}

        refs = [(pb.Event.INPUT, k, i, r) for k, rs in inputs.items() for i, r in enumerate(rs)]
        refs += [(pb.Event.OUTPUT, k, i, r) for k, rs in outputs.items() for i, r in enumerate(rs)]
        ext_ids = [_external_id(T.artifact_type(r.type_name), r.uri) for _, _, _, r in refs]
        known = {a.external_id: a for a in self._artifacts_by_external_ids(ext_ids)}

        pairs, seen = [], set()
        for (kind, key, index, ref), ext_id in zip(refs, ext_ids):
            if (ext_id, kind) in seen:  # MLMD: one event per (artifact, execution, type)
                raise MetadataError(f"{component}: artifact {ref.uri} appears twice as {pb.Event.Type.Name(kind)}")
            seen.add((ext_id, kind))
            artifact = self._merged_artifact(ref, ext_id, known.get(ext_id))
            if kind == pb.Event.OUTPUT and execution.last_known_state not in _NOT_LINEAGE:
                artifact.state = pb.Artifact.LIVE
            new_event = artifact.id == 0 or (artifact.id, kind) not in existing_events
            pairs.append((artifact, _event(kind, key, index) if new_event else None))

        execution_id, artifact_ids, _ = self.mlmd.put_execution(
            execution,
            pairs,
            contexts,
            reuse_context_if_already_exist=True,
            reuse_artifact_if_already_exist_by_external_id=True,  # concurrent first writers of one artifact
            force_reuse_context=True,  # contexts are passed by id only: never overwrite them
        )
        ids: dict[int, dict[str, list[int]]] = {pb.Event.INPUT: {}, pb.Event.OUTPUT: {}}
        for (kind, key, _, _), artifact_id in zip(refs, artifact_ids):
            ids[kind].setdefault(key, []).append(artifact_id)
        return RecordedExecution(execution_id, ids[pb.Event.INPUT], ids[pb.Event.OUTPUT])

    def execution_update_times(self, run_id: str) -> dict[int, int]:
        """Execution id -> last update time (ms) of a run's executions. Two snapshots around a step
        tell which executions that step recorded (a local run's steps run one at a time)."""
        run = self.mlmd.get_context_by_type_and_name(T.RUN_CONTEXT, run_id)
        return (
            {e.id: e.last_update_time_since_epoch for e in self.mlmd.get_executions_by_context(run.id)} if run else {}
        )

    def update_execution_properties(self, execution_id: int, properties: dict[str, Any]) -> ExecutionRecord:
        """Merges `properties` into a stored execution (declared names typed, others custom),
        leaving its state, events and contexts as they are: MLMD replaces an execution's properties
        wholesale when it is put, so the stored ones are copied first."""
        found = self.mlmd.get_executions_by_id([execution_id])
        if not found:
            raise MetadataNotFound(f"no execution with id {execution_id} in ML Metadata")
        execution = pb.Execution()
        execution.CopyFrom(found[0])
        _set_properties(
            execution,
            properties,
            T.EXECUTION_TYPES.get(self._type_name(execution.type_id, self.mlmd.get_execution_types_by_id), {}),
        )
        self.mlmd.put_executions([execution])
        return self._execution_record(execution)

    def _merged_artifact(self, ref: ArtifactRef, ext_id: str, stored: pb.Artifact | None) -> pb.Artifact:
        """The artifact to write: the stored one (if any) with `ref`'s name and properties on top,
        because MLMD's update replaces properties it is not given."""
        type_name = T.artifact_type(ref.type_name)
        artifact = pb.Artifact()
        if stored is not None:
            artifact.CopyFrom(stored)
        else:
            artifact.type_id, artifact.uri, artifact.external_id = (
                self._type_ids[type_name],
                canonical_uri(ref.uri),
                ext_id,
            )
        if ref.name:
            artifact.name = ref.name
        _set_properties(artifact, ref.properties, T.ARTIFACT_TYPES[type_name])
        return artifact

    def _artifacts_by_external_ids(self, external_ids: list[str]) -> list[pb.Artifact]:
        """MLMD raises NotFoundError (not an empty list) when none of the ids exists."""
        if not external_ids:
            return []
        try:
            return list(self.mlmd.get_artifacts_by_external_ids(sorted(set(external_ids))))
        except errors.NotFoundError:
            return []

    # -- queries -------------------------------------------------------------------------------

    def list_artifacts(self, type_name: str | None = None) -> list[ArtifactRecord]:
        """Our artifacts (of one type, short or qualified name), oldest first."""
        names = [T.artifact_type(type_name)] if type_name else list(T.ARTIFACT_TYPES)
        arts = [a for n in names for a in self.mlmd.get_artifacts_by_type(n)]
        return [self._artifact_record(a) for a in sorted(arts, key=lambda a: a.id)]

    def find_artifact(
        self, type_name: str, *, uri: str | None = None, name: str | None = None
    ) -> ArtifactRecord | None:
        """One artifact by (type, uri) or by (type, name), e.g. ("Model", name="flights@3")."""
        qualified = T.artifact_type(type_name)
        if uri is not None:
            found = self._artifacts_by_external_ids([_external_id(qualified, uri)])
            artifact = found[0] if found else None
        elif name is not None:
            artifact = self.mlmd.get_artifact_by_type_and_name(qualified, name)
        else:
            raise MetadataError("find_artifact needs uri or name")
        return self._artifact_record(artifact) if artifact is not None else None

    def list_executions(self, run_id: str | None = None) -> list[ExecutionRecord]:
        """Component executions (of one run), oldest first."""
        if run_id is None:
            execs = self.mlmd.get_executions_by_type(T.EXECUTION_TYPE)
        else:
            run = self.mlmd.get_context_by_type_and_name(T.RUN_CONTEXT, run_id)
            execs = self.mlmd.get_executions_by_context(run.id) if run else []
        return [self._execution_record(e) for e in sorted(execs, key=lambda e: e.id)]

    def list_contexts(self, type_name: str | None = None) -> list[ContextRecord]:
        """Pipeline and run contexts (or one of the two types), oldest first."""
        names = [T.qualify(type_name)] if type_name else list(T.CONTEXT_TYPES)
        ctxs = [c for n in names for c in self.mlmd.get_contexts_by_type(n)]
        return [self._context_record(c) for c in sorted(ctxs, key=lambda c: c.id)]

    def lineage(self, artifact_id: int, max_depth: int = 50) -> list[LineageStep]:
        """Walks upstream from an artifact: its producing execution, that execution's inputs,
        their producers, ... Depth-first, inputs in (key, index) order, so printing each step
        indented by `depth` gives the tree. FAILED/CANCELED executions are not producers."""
        if not self.mlmd.get_artifacts_by_id([artifact_id]):
            raise MetadataNotFound(f"no artifact with id {artifact_id} in ML Metadata")
        steps: list[LineageStep] = []
        expanded: set[int] = set()

        def visit(artifact_id: int, depth: int, consumed_as: str | None) -> None:
            artifact = self._artifact_record(self.mlmd.get_artifacts_by_id([artifact_id])[0])
            producer_ids = sorted(
                {
                    e.execution_id
                    for e in self.mlmd.get_events_by_artifact_ids([artifact_id])
                    if e.type in _OUTPUT_EVENTS
                }
            )
            producers = (
                [e for e in self.mlmd.get_executions_by_id(producer_ids) if e.last_known_state not in _NOT_LINEAGE]
                if producer_ids
                else []
            )
            if not producers:
                steps.append(LineageStep(depth, artifact, None, consumed_as))
            for execution in sorted(producers, key=lambda e: e.id):
                repeated = execution.id in expanded or depth >= max_depth
                steps.append(LineageStep(depth, artifact, self._execution_record(execution), consumed_as, repeated))
                if repeated:
                    continue
                expanded.add(execution.id)
                events = [e for e in self.mlmd.get_events_by_execution_ids([execution.id]) if e.type in _INPUT_EVENTS]
                for event in sorted(events, key=lambda e: (_event_key(e) or "", [s.index for s in e.path.steps])):
                    visit(event.artifact_id, depth + 1, _event_key(event))

        visit(artifact_id, 0, None)
        return steps

    # -- proto -> record -----------------------------------------------------------------------

    def _type_name(self, type_id: int, getter) -> str:
        if type_id not in self._type_names:  # a foreign (e.g. KFP) type in a shared database
            self._type_names[type_id] = getter([type_id])[0].name
        return self._type_names[type_id]

    def _artifact_record(self, a: pb.Artifact) -> ArtifactRecord:
        return ArtifactRecord(
            a.id,
            self._type_name(a.type_id, self.mlmd.get_artifact_types_by_id),
            a.uri,
            a.name or None,
            _props(a),
            pb.Artifact.State.Name(a.state),
            a.create_time_since_epoch,
        )

    def _execution_record(self, e: pb.Execution) -> ExecutionRecord:
        props = _props(e)
        return ExecutionRecord(
            e.id,
            self._type_name(e.type_id, self.mlmd.get_execution_types_by_id),
            e.name,
            props.get("component", ""),
            pb.Execution.State.Name(e.last_known_state),
            props,
            e.create_time_since_epoch,
        )

    def _context_record(self, c: pb.Context) -> ContextRecord:
        return ContextRecord(
            c.id,
            self._type_name(c.type_id, self.mlmd.get_context_types_by_id),
            c.name,
            _props(c),
            c.create_time_since_epoch,
        )
