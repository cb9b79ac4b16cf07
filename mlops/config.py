"""The one typed configuration schema of the platform.

One YAML file per project/pipeline under configs/ describes the dataset, its features, the Feast
feature tables, splits, model, evaluation and where artifacts and metadata go. Every command,
component and server reads the same `PlatformConfig` object, so onboarding another tabular
dataset is a new YAML file, not new code.

Loading is strict: unknown keys, wrong types and missing files raise `ConfigError` naming the
file and the dotted path of the field. Strings may use `${VAR}` / `${VAR:-default}`; relative
paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops.envs import REPO_ROOT
from mlops.errors import InvalidInput

SPAN_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
# The config a command uses when none is given: $MLOPS_CONFIG, else the checkout's flights.yaml.
DEFAULT_CONFIG_PATH = os.environ.get("MLOPS_CONFIG", str(REPO_ROOT / "configs" / "flights.yaml"))
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(InvalidInput):
    """A configuration problem, with the file and field it concerns. `override` is the dotted key
    of the override (a --set or pipeline parameter) at fault, when one is: callers name their
    option instead of the file."""

    def __init__(self, message: str, override: str | None = None):
        super().__init__(message)
        self.override = override


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnKind(str, Enum):
    numeric = "numeric"
    categorical = "categorical"
    timestamp = "timestamp"


class TaskType(str, Enum):
    binary_classification = "binary_classification"
    multiclass_classification = "multiclass_classification"
    regression = "regression"


EPOCH_UNITS = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}  # option -> pandas unit


def _check_timestamp_format(value: str | None) -> str | None:
    """How a timestamp column is written: unix time in a declared unit (numbers alone do not say
    whether 1357000000 is seconds or nanoseconds), or a strptime format for text."""
    if value is not None and value not in EPOCH_UNITS and "%" not in value:
        raise ValueError(
            f"{value!r} is neither {', '.join(EPOCH_UNITS)} nor a strptime format (e.g. '%Y-%m-%d %H:%M:%S')"
        )
    return value


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    kind: ColumnKind
    description: str = ""
    # kind timestamp only: epoch_s/epoch_ms/epoch_us/epoch_ns or a strptime format (see _check_timestamp_format)
    timestamp_format: str | None = None

    @field_validator("timestamp_format")
    @classmethod
    def _timestamp_format(cls, v: str | None) -> str | None:
        return _check_timestamp_format(v)

    @model_validator(mode="after")
    def _format_only_for_timestamps(self) -> FeatureSpec:
        if self.timestamp_format is not None and self.kind != ColumnKind.timestamp:
            raise ValueError(f"timestamp_format is set on {self.name!r}, a {self.kind.value} feature")
        return self


class SourceSpec(_Strict):
    """Where raw data comes from. `uri` is a path, an fsspec URI (s3://, gs://, file://) or
    `package://DIST/relative/path` for data files shipped inside an installed Python package."""

    uri: str = Field(min_length=1)
    format: Literal["csv", "parquet"]
    na_values: list[str] = Field(default_factory=lambda: ["NA", ""])


class LabelSpec(_Strict):
    column: str = Field(min_length=1)
    task: TaskType
    # A pandas expression over raw columns that derives the label, e.g. "dep_delay > 15".
    # Without it the label column must exist in the source.
    expression: str | None = None


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceSpec
    label: LabelSpec
    features: list[FeatureSpec] = Field(min_length=1)
    entity_keys: list[str] = Field(default_factory=list)
    event_timestamp: str | None = None
    # How event_timestamp is written when it is not ISO-8601 text or a timestamp type: epoch_s,
    # epoch_ms, epoch_us, epoch_ns (unix time) or a strptime format. Numbers need it (no guessing).
    event_timestamp_format: str | None = None
    # pandas query evaluated on raw rows before anything else, e.g. drop cancelled flights.
    row_filter: str | None = None
    # Columns kept alongside features (ids, raw label source) but never fed to the model.
    passthrough_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicate names {dupes}")
        if self.label.column in names:
            raise ValueError(f"label.column {self.label.column!r} is also listed in features")
        if self.event_timestamp_format is not None and not self.event_timestamp:
            raise ValueError("event_timestamp_format is set but event_timestamp is not")
        return self

    @field_validator("event_timestamp_format")
    @classmethod
    def _timestamp_format(cls, v: str | None) -> str | None:
        return _check_timestamp_format(v)

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


class FeatureTableSpec(_Strict):
    """A raw table ingested into the dataset repository and served through a Feast feature view."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: SourceSpec
    entity_keys: list[str] = Field(min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)  # source column -> feature name
    # None: a static table (e.g. plane attributes); it gets a fixed epoch timestamp for Feast.
    event_timestamp: str | None = None
    event_timestamp_format: str | None = None  # as dataset.event_timestamp_format
    columns: list[str] = Field(min_length=1)  # feature columns, after rename

    @field_validator("event_timestamp_format")
    @classmethod
    def _timestamp_format(cls, v: str | None) -> str | None:
        return _check_timestamp_format(v)


class RollingAggregateSpec(_Strict):
    """Per-key statistics of a column of the main dataset over trailing day windows.

    Computed daily from rows strictly before the day (no label leakage): the value for day D
    only uses events with timestamp < D 00:00 UTC."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    keys: list[str] = Field(min_length=1)
    value: str
    windows_days: list[int] = Field(min_length=1)
    threshold: float | None = None  # also emit the share of values above it (e.g. late share)

    @field_validator("windows_days")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError("windows must be positive day counts")
        return v


class FeaturesSpec(_Strict):
    repo: str = "feature_repo"
    project: str = Field(default="flights", pattern=r"^[a-z][a-z0-9_]*$")
    feature_service: str
    tables: list[FeatureTableSpec] = Field(default_factory=list)
    aggregates: list[RollingAggregateSpec] = Field(default_factory=list)
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "127.0.0.1:6379"


class SplitSpec(_Strict):
    method: Literal["hash", "time"] = "hash"
    train: float = Field(0.8, gt=0, lt=1)
    eval: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    hash_keys: list[str] = Field(default_factory=list)
    seed: int = 42

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSpec:
        if abs(self.train + self.eval + self.test - 1.0) > 1e-9:
            raise ValueError(f"train + eval + test must be 1.0, got {self.train + self.eval + self.test:g}")
        return self


class ValidationSpec(_Strict):
    """Data validation (TFDV): schema as code, and what anomalies and drift do to a run."""

    # Curated schema committed in the repo (reviewed in PRs). None or a missing file: infer it
    # on the first run (the inferred schema is an artifact to review and commit).
    schema_path: str | None = None
    on_anomaly: Literal["fail", "warn"] = "fail"
    on_drift: Literal["fail", "warn"] = "warn"
    categorical_drift_linf: float = Field(0.1, gt=0, le=1)  # L-infinity distance
    numeric_drift_js: float = Field(0.1, gt=0, le=1)  # Jensen-Shannon divergence
    skew_linf: float = Field(0.1, gt=0, le=1)  # training vs serving statistics
    stats_sample_rate: float = Field(1.0, gt=0, le=1)


class TransformSpec(_Strict):
    """TFT preprocessing, derived from the feature kinds: numeric -> z-score (+ missing flag),
    categorical -> vocabulary with OOV buckets; optional quantile buckets and hashed crosses."""

    vocabulary_top_k: int | None = Field(None, gt=0)
    oov_buckets: int = Field(1, ge=1)
    bucketize: dict[str, int] = Field(default_factory=dict)  # numeric feature -> bucket count
    crosses: list[list[str]] = Field(default_factory=list)  # categorical features to cross
    cross_hash_buckets: int = Field(1000, gt=0)


class DaskSpec(_Strict):
    """Where `beam.runner: dask` runs: a Dask scheduler, or a LocalCluster the step starts."""

    address: str | None = None  # scheduler, e.g. tcp://dask-scheduler:8786; unset: a LocalCluster on this machine
    workers: int = Field(2, gt=0)  # worker processes of that LocalCluster (one thread each)


class BeamSpec(_Strict):
    """The Beam runner of the steps that run Beam (TFDV statistics, TFT, TFMA). One section, one
    helper (mlops.beam.pipeline) that builds every step's pipeline from it: changing runner is
    configuration, the steps' code is the same.

    runner: direct (this process; StatisticsGen computes in memory, no Beam), dask (Beam's
    DaskRunner on a dask.distributed cluster: `dask.address`, else a LocalCluster of
    `dask.workers` processes; StatisticsGen only, Transform and the Evaluator stay in-process:
    README "Scale-out"), or any Beam runner name (DataflowRunner, FlinkRunner, SparkRunner,
    PortableRunner) or a PipelineRunner's dotted path, with its flags in `options`."""

    runner: str = Field("direct", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    options: list[str] = Field(default_factory=list)  # flags as on a command line, e.g. ["--project=x", "--region=y"]
    dask: DaskSpec = DaskSpec()

    @field_validator("options")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        for flag in v:
            if not flag.startswith("--") or len(flag) < 3:
                raise ValueError(f"{flag!r} is not a pipeline flag (--name or --name=value)")
            if flag.split("=", 1)[0] == "--runner":
                raise ValueError("the runner is beam.runner, not a flag in beam.options")
        return v


class ModelSpec(_Strict):
    architecture: Literal["dnn", "wide_deep"] = "dnn"
    hidden_units: list[int] = Field(default_factory=lambda: [64, 64])
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, gt=0)
    epochs: int = Field(3, gt=0)
    early_stopping_patience: int = Field(2, ge=0)
    embedding_dim: int = Field(8, gt=0)
    seed: int = 42


class EvaluationSpec(_Strict):
    min_auc: float | None = Field(0.65, ge=0, le=1)
    max_auc_drop: float | None = Field(0.01, ge=0)
    slices: list[list[str]] = Field(default_factory=list)


class MetadataSpec(_Strict):
    """ML Metadata backend. sqlite: a file under the artifact root (default); mysql: e.g. the
    MariaDB of a cluster; grpc: KFP's metadata-grpc-service."""

    backend: Literal["sqlite", "mysql", "grpc"] = "sqlite"
    sqlite_path: str | None = None  # default: <artifact_root>/metadata/mlmd.sqlite
    host: str = "127.0.0.1"
    port: int | None = None  # default 3306 (mysql) / 8080 (grpc)
    database: str = "mlmd"
    user: str = "root"
    password_env: str | None = None  # name of the env var holding the password, never the password


class PayloadLogSpec(_Strict):
    """Where predictions are logged for monitoring (request id, model version, features, output)."""

    enabled: bool = True
    sink: Literal["parquet", "redis"] = "parquet"
    path: str | None = None  # parquet sink; default <artifact_root>/payload_logs (hour partitions)
    redis_url: str = "127.0.0.1:6379"
    redis_stream: str = "mlops:payloads"
    redis_maxlen: int = Field(1_000_000, gt=0)  # approximate MAXLEN of the stream
    queue_size: int = Field(100_000, gt=0)  # rows waiting to be written; beyond it rows are dropped
    flush_rows: int = Field(10_000, gt=0)
    flush_seconds: float = Field(5.0, gt=0)


class StreamSpec(_Strict):
    """Prediction requests over Redis Streams (`mlops stream`)."""

    redis_url: str = "127.0.0.1:6379"
    input_stream: str = "mlops:requests"
    output_stream: str = "mlops:predictions"
    dead_letter_stream: str = "mlops:dead-letter"
    group: str = "mlops-predictors"
    batch_size: int = Field(256, gt=0)  # events read (and predicted) per micro-batch
    block_ms: int = Field(200, ge=0)
    claim_idle_ms: int = Field(30_000, gt=0)  # a pending event idle this long is taken over
    dedup_ttl_s: int = Field(7 * 24 * 3600, gt=0)  # how long a request id stays answered


class BatchSpec(_Strict):
    """Offline inference over a dataset version or a parquet/csv URI (`mlops predict batch`)."""

    chunk_rows: int = Field(65_536, gt=0)  # rows read, predicted and written per step (one online read each)
    # Row ids of the output: this input column when the input has it, else the row's position in
    # the input (0-based, over all files in order).
    id_column: str | None = None
    passthrough_columns: list[str] = Field(default_factory=list)  # input columns copied to the output


class FeatureStoreReadSpec(_Strict):
    """How the model server reads the Feast online store (serving.enrichment.GuardedOnlineReads):
    a deadline per read, what a request gets when the store fails, and the circuit breaker."""

    # Deadline of one online read, queueing included (healthy p99 measured: a few ms on Redis and SQLite).
    timeout_ms: float = Field(150.0, gt=0)
    # defaults: serve with the documented defaults, response marked degraded; fail: 503 / UNAVAILABLE
    on_failure: Literal["defaults", "fail"] = "defaults"
    breaker_failures: int = Field(5, gt=0)  # consecutive failed reads that open the breaker
    breaker_cooldown_s: float = Field(5.0, gt=0)  # no read while open; then one probe (half-open)
    read_threads: int = Field(4, gt=0)  # dedicated threads for online reads (a hung store holds at most these)


class ServingSpec(_Strict):
    """Online, batch, streaming and embedded prediction (serving/)."""

    model: str | None = None  # NAME, NAME@ALIAS or NAME@VERSION; default: the project's name
    host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_port: int = Field(8081, ge=0, le=65535)
    # auto: TFLite for batches up to 256 rows, the SavedModel above (serving.predictor.AutoPredictor);
    # a model without TFLite files runs its SavedModel
    runtime: Literal["savedmodel", "tflite", "auto"] = "auto"
    feature_lookup: bool = True  # enrich requests from the Feast online store (if features: is set)
    max_batch_rows: int = Field(10_000, gt=0)
    max_request_bytes: int = Field(8 * 1024 * 1024, gt=0)
    reload_interval_s: float = Field(5.0, ge=0)  # how often the alias is re-resolved; 0: never
    # SIGTERM: seconds to finish accepted requests before exiting (below the pod's terminationGracePeriodSeconds)
    shutdown_grace_s: float = Field(20.0, ge=0)
    feature_store: FeatureStoreReadSpec = FeatureStoreReadSpec()
    payload_log: PayloadLogSpec = PayloadLogSpec()
    stream: StreamSpec = StreamSpec()
    batch: BatchSpec = BatchSpec()


class MonitoringSpec(_Strict):
    """The monitoring run (stage 6): payload logs of a window vs the model version's training reference.
    Drift thresholds are on effect sizes; a p-value below `p_value` is required as well (a guard: on
    large windows every p-value is tiny, on small ones an effect size alone is noise)."""

    # default: NumPy/SciPy/TFDV (permissive licences); alibi: alibi-detect 0.13 (BSL-1.1, see README)
    detector: Literal["default", "alibi"] = "default"
    numeric_wasserstein: float = Field(0.1, gt=0)  # Wasserstein distance / the reference's std
    categorical_js: float = Field(0.1, gt=0, le=1)  # Jensen-Shannon distance (base 2) of category shares
    prediction_wasserstein: float = Field(0.1, gt=0)  # of the model's outputs, normalised as above
    domain_auc: float = Field(0.6, gt=0.5, le=1)  # joint space: a classifier telling window from reference
    p_value: float = Field(0.01, gt=0, lt=1)
    reference_rows: int = Field(10_000, gt=0)  # training rows sampled as the reference (seeded)
    min_rows: int = Field(100, gt=0)  # a model version with fewer rows in the window is not assessed
    window: str = "24h"  # default window of `mlops monitor run` without --window/--last: the last 24h
    pushgateway_url: str | None = None  # push metrics there; unset: a textfile-collector .prom file


class PlatformConfig(_Strict):
    project: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    artifact_root: str
    dataset: DatasetSpec
    features: FeaturesSpec | None = None
    split: SplitSpec = SplitSpec()
    model: ModelSpec = ModelSpec()
    validation: ValidationSpec = ValidationSpec()
    transform: TransformSpec = TransformSpec()
    beam: BeamSpec = BeamSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    metadata: MetadataSpec = MetadataSpec()
    serving: ServingSpec = ServingSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    # Set by load_config: where this config came from (for error messages and lineage).
    source_path: str | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> PlatformConfig:
        ds = self.dataset
        known = {f.name for f in ds.features} | set(ds.passthrough_columns)
        for key in ds.entity_keys:
            if key not in known and key != ds.event_timestamp:
                raise ValueError(f"dataset.entity_keys: {key!r} is neither a feature nor a passthrough column")
        for key in self.split.hash_keys:
            if key not in known and key != ds.event_timestamp:
                raise ValueError(f"split.hash_keys: {key!r} is not a column of the dataset")
        if self.split.method == "time" and not ds.event_timestamp:
            raise ValueError("split.method: 'time' needs dataset.event_timestamp")
        kinds = {f.name: f.kind for f in ds.features}
        for name in self.transform.bucketize:
            if kinds.get(name) != ColumnKind.numeric:
                raise ValueError(f"transform.bucketize: {name!r} is not a numeric feature")
        for cross in self.transform.crosses:
            for name in cross:
                if kinds.get(name) != ColumnKind.categorical:
                    raise ValueError(f"transform.crosses: {name!r} is not a categorical feature")
        model_inputs = {f.name for f in ds.features if f.kind != ColumnKind.timestamp}
        for sl in self.evaluation.slices:
            for col in sl:
                if col not in model_inputs:  # the examples the Evaluator reads hold model features only
                    raise ValueError(f"evaluation.slices: {col!r} is not a (non-timestamp) feature of the dataset")
        return self

    def content_hash(self) -> str:
        """Stable hash of the semantic content (not of the file's formatting): recorded in MLMD."""
        # serving and monitoring: ports, sinks and drift thresholds do not change what a training run
        # produces; nor does the Beam runner (the same outputs on every runner: tests/integration/test_dask_runner.py).
        body = self.model_dump(mode="json", exclude={"source_path", "serving", "monitoring", "beam"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def metadata_sqlite_path(self) -> str:
        return self.metadata.sqlite_path or join_uri(self.artifact_root, "metadata", "mlmd.sqlite")


def join_uri(root: str, *parts: str) -> str:
    """Joins path parts onto a local path or an fsspec URI without mangling `scheme://`."""
    out = root.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def _expand_env(value, where: str, path: Path):
    if isinstance(value, str):
        value_whole = value

        def repl(m: re.Match) -> str:
            var, default = m.group(1), m.group(2)
            # As in the shell, `${VAR:-default}` takes the default when VAR is unset OR empty (an
            # empty MLOPS_ARTIFACT_ROOT would otherwise put the artifact root in the config's dir).
            if os.environ.get(var) or (var in os.environ and default is None):
                value = os.environ[var]
                # A relative path typed in a shell means the shell's directory, not the file's.
                if m.group(0) == value_whole and _is_local_relative(value) and ("/" in value or value.startswith(".")):
                    return os.path.abspath(value)
                return value
            if default is not None:
                return default
            raise ConfigError(f"{path}: {where}: environment variable ${{{var}}} is not set and has no default")

        return _ENV_PATTERN.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), path) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return value


def _is_local_relative(p: str) -> bool:
    return "://" not in p and not os.path.isabs(p)


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Makes file-system paths relative to the config file absolute."""

    def fix(p: str) -> str:
        return str((base / p).resolve()) if _is_local_relative(p) else p

    if isinstance(raw.get("artifact_root"), str):
        raw["artifact_root"] = fix(raw["artifact_root"])
    ds = raw.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("source"), dict) and isinstance(ds["source"].get("uri"), str):
        ds["source"]["uri"] = fix(ds["source"]["uri"])
    feats = raw.get("features")
    if isinstance(feats, dict):
        if isinstance(feats.get("repo"), str):
            feats["repo"] = fix(feats["repo"])
        for t in feats.get("tables") or []:
            if isinstance(t, dict) and isinstance(t.get("source"), dict) and isinstance(t["source"].get("uri"), str):
                t["source"]["uri"] = fix(t["source"]["uri"])
    val = raw.get("validation")
    if isinstance(val, dict) and isinstance(val.get("schema_path"), str):
        val["schema_path"] = fix(val["schema_path"])
    md = raw.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("sqlite_path"), str):
        md["sqlite_path"] = fix(md["sqlite_path"])
    return raw


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> PlatformConfig:
    """Reads and validates a config file. `overrides` are dotted keys, e.g. {"model.epochs": 1}."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    # Overrides first: an overridden `${VAR}` value needs no VAR.
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {p} is not a mapping in {path}", override=dotted)
        node[leaf] = value
    raw = _expand_env(raw, "", path)
    raw = _resolve_paths(raw, path.parent.resolve())
    raw["source_path"] = str(path.resolve())
    try:
        return PlatformConfig.model_validate(raw)
    except ValidationError as e:
        at_fault = _override_at_fault(e, overrides or {})
        if at_fault is not None:
            problems = format_validation_error("", e).split("\n", 1)[1].strip()
            raise ConfigError(
                f"override {at_fault}={json.dumps(overrides[at_fault], default=str)}: {problems}", override=at_fault
            ) from None
        raise ConfigError(format_validation_error(path, e)) from None


def _override_at_fault(err: ValidationError, overrides: dict) -> str | None:
    """The override key that every validation error lies in (itself or a key below it), if any."""
    for dotted in overrides:
        prefix = tuple(dotted.split("."))
        if all(tuple(str(p) for p in e["loc"])[: len(prefix)] == prefix for e in err.errors()):
            return dotted
    return None
