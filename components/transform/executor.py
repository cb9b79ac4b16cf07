"""Transform: TFT analysis on the train split, transformation of train/eval/test.

Plain Python on paths and config; the KFP interface in component.py only maps its parameters and
artifacts to these functions. The preprocessing itself is mlops.modeling.preprocessing (derived
from the config's feature kinds); the Beam runner and its options come from config.beam (through
mlops.beam.pipeline), so Dask/Dataflow/Flink/Spark runners need no code change.

The Beam/TFT work runs in a child process (components.transform.worker, via
mlops.modeling.child): TFT processes crash with SIGSEGV in interpreter teardown after writing all
outputs, which must not fail this step. The step trusts the worker's marker and then checks the
outputs itself: transform_output/ (TFTransformOutput layout, raw schema included), one
transformed/<split>.tfrecord.gz per split, and rows in == rows out for every split (rows in
counted here from the parquet footers, rows out counted by the pipeline on what it wrote), so no
row is silently lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field

from mlops import beam, storage
from mlops.artifacts import SCHEMA_FILE, SPLITS, TRANSFORM_OUTPUT, TRANSFORMED_EXAMPLES, parquet_rows, split_path
from mlops.config import PlatformConfig, join_uri
from mlops.errors import MlopsError
from mlops.modeling.child import ChildError, run_child
from mlops.steps import Location, RunContext, StepResult, record_step, source_version

COMPONENT = "transform"
WORKER_MODULE = "components.transform.worker"
# The executor and the worker it runs by name: their imports, transitively, are the code version.
CODE_VERSION = source_version("transform", __name__, WORKER_MODULE)
DEFAULT_BATCH_ROWS = 10_000  # rows per Arrow RecordBatch fed to TFT

log = logging.getLogger(__name__)


class TransformError(MlopsError):
    pass


@dataclass
class TransformResult:
    out_dir: str
    transform_output: str
    transformed: dict[str, str]
    rows: dict[str, int]
    vocabulary_sizes: dict[str, int]
    transformed_features: list[str]
    seconds: float
    beam_seconds: float
    worker_exit_code: int
    worker_peak_rss_mb: float | None = None
    content_hash: str = ""
    extra: dict = field(default_factory=dict)
    cached: bool = False  # served by the step cache (set by run(); False in the stored entry)

    def to_json(self) -> dict:
        return asdict(self)


def transformed_path(out_dir: str, split: str) -> str:
    return join_uri(out_dir, TRANSFORMED_EXAMPLES, f"{split}.tfrecord.gz")


def _check_examples(examples_dir: str) -> dict[str, int]:
    rows = {}
    for split in SPLITS:
        uri = split_path(examples_dir, split)
        if not storage.exists(uri):
            raise TransformError(f"examples: {uri} does not exist (expected <examples>/<split>.parquet for {SPLITS})")
        rows[split] = parquet_rows(uri)
    if rows["train"] == 0:
        raise TransformError(f"examples: {split_path(examples_dir, 'train')} has no rows to analyze")
    return rows


def content_hash(root: str) -> str:
    """Short content identity of a directory (recorded in MLMD)."""
    return storage.tree_hash(root)[:16]


def check_schema(config: PlatformConfig, schema_dir: str) -> None:
    """The raw model features must be in the (TFDV) schema with a compatible type: numeric ->
    FLOAT or INT, categorical -> BYTES. Raises TransformError naming every mismatch."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    from mlops.modeling.preprocessing import FeaturePlan

    uri = join_uri(schema_dir, SCHEMA_FILE)
    if not storage.exists(uri):
        raise TransformError(f"schema: {uri} does not exist")
    schema = text_format.Parse(storage.read_bytes(uri).decode(), schema_pb2.Schema())
    types = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}
    allowed = {"float32": {"FLOAT", "INT"}, "string": {"BYTES"}}
    problems = []
    for f in FeaturePlan.from_config(config).raw:
        if f.name not in types:
            problems.append(f"{f.name!r} is not in the schema")
        elif types[f.name] not in allowed[f.dtype]:
            problems.append(f"{f.name!r} is {types[f.name]} in the schema, the model expects {f.dtype}")
    if problems:
        raise TransformError(f"schema {uri} does not match the config's features: " + "; ".join(problems))


def run_transform(
    config: PlatformConfig,
    examples_dir: str,
    out_dir: str,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    timeout: float | None = None,
) -> TransformResult:
    """Analyzes <examples_dir>/train.parquet and writes <out_dir>/transform_output and
    <out_dir>/transformed/<split>.tfrecord.gz for every split. Raises TransformError when an
    output is missing or a split lost rows."""
    started = time.monotonic()
    config = config.model_copy(update={"beam": beam.for_step(config.beam, "transform")})
    rows_in = _check_examples(examples_dir)
    storage.makedirs(out_dir)
    request = {
        "config": config.model_dump(mode="json"),
        "examples_dir": examples_dir,
        "out_dir": out_dir,
        "batch_rows": batch_rows,
    }
    try:
        result = run_child(WORKER_MODULE, request, what="transform", timeout=timeout)
    except ChildError as e:
        raise TransformError(str(e)) from None

    tft_dir = join_uri(out_dir, TRANSFORM_OUTPUT)
    needed = [
        join_uri(tft_dir, "transform_fn", "saved_model.pb"),
        join_uri(tft_dir, "transformed_metadata", "schema.pbtxt"),
        join_uri(tft_dir, "metadata", "schema.pbtxt"),
    ]
    needed += [transformed_path(out_dir, s) for s in SPLITS]
    missing = [p for p in needed if not storage.exists(p)]
    if missing:
        raise TransformError(f"transform worker reported success but outputs are missing: {missing}")
    lost = {
        s: (rows_in[s], result["rows_in"].get(s), result["rows_out"].get(s))
        for s in SPLITS
        if not (rows_in[s] == result["rows_in"].get(s) == result["rows_out"].get(s))
    }
    if lost:
        detail = ", ".join(f"{s}: {a} in the parquet, {b} read, {c} written" for s, (a, b, c) in lost.items())
        raise TransformError(f"transform lost or duplicated rows: {detail}")

    return TransformResult(
        out_dir=out_dir,
        transform_output=tft_dir,
        transformed={s: transformed_path(out_dir, s) for s in SPLITS},
        rows=dict(rows_in),
        vocabulary_sizes=result["vocabulary_sizes"],
        transformed_features=result["transformed_features"],
        seconds=round(time.monotonic() - started, 3),
        beam_seconds=result["beam_seconds"],
        worker_exit_code=result["worker_exit_code"],
        worker_peak_rss_mb=result.get("worker_peak_rss_mb"),
        content_hash=content_hash(tft_dir),
    )


def schema_digest(schema_dir: str) -> str:
    """Hash of the schema's content: comment lines (SchemaGen's header names run-specific paths)
    and the reports beside it do not count, so an unchanged schema keeps the cache valid."""
    text = storage.read_bytes(join_uri(schema_dir, SCHEMA_FILE)).decode()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return hashlib.sha256(body.encode()).hexdigest()


def run(
    config: PlatformConfig,
    examples_dir: str,
    out_dir: str,
    *,
    pipeline: str,
    run_id: str,
    schema_dir: str | None = None,
    anomalies_dir: str | None = None,
    enable_cache: bool = True,
    examples_properties: dict | None = None,
    **kwargs,
) -> TransformResult:
    """[check_schema +] run_transform (or the step cache) + the MLMD record: Examples, Schema and
    the validation verdict (Anomalies: the gate this step ran behind) in; TransformGraph and
    transformed Examples out."""
    from dataclasses import asdict

    from mlops.metadata.store import ArtifactRef
    from mlops.steps import run_cached

    if schema_dir:
        check_schema(config, schema_dir)
    result_dict, cached = run_cached(
        config,
        COMPONENT,
        CODE_VERSION,
        sections=["dataset", "transform"],
        inputs={"examples": examples_dir},
        outputs={"transform_graph": out_dir},
        params={"schema": schema_digest(schema_dir) if schema_dir else ""},
        work=lambda: asdict(run_transform(config, examples_dir, out_dir, **kwargs)),
        enabled=enable_cache,
    )
    result = TransformResult(**{**result_dict, "cached": cached})
    split_names = json.dumps(list(SPLITS))
    examples = ArtifactRef(
        "Examples",
        examples_dir,
        properties={"split_names": split_names, "row_count": sum(result.rows.values()), **(examples_properties or {})},
    )
    graph = ArtifactRef("TransformGraph", out_dir, properties={"content_hash": result.content_hash})
    transformed_dir = join_uri(out_dir, TRANSFORMED_EXAMPLES)
    transformed = ArtifactRef(
        "Examples",
        transformed_dir,
        properties={
            "split_names": split_names,
            "row_count": sum(result.rows.values()),
            "content_hash": content_hash(transformed_dir),
        },
    )
    inputs = {"examples": [examples]}
    if schema_dir:
        inputs["schema"] = [ArtifactRef("Schema", schema_dir)]
    if anomalies_dir:
        inputs["anomalies"] = [ArtifactRef("Anomalies", anomalies_dir)]
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs=inputs,
        outputs={"transform_graph": [graph], "transformed_examples": [transformed]},
        properties={"code_version": CODE_VERSION},
        state="CACHED" if cached else "COMPLETE",
    )
    return result


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"examples", "schema"?, "anomalies"?}; outputs
    {"transform_graph"}. A runner whose workers do not share this file system (Dataflow, a remote
    Dask cluster, ...) reads and writes through the artifact URIs; the others use the mounted paths
    (mlops.beam.where)."""
    from dataclasses import asdict

    config = config.model_copy(update={"beam": beam.for_step(config.beam, "transform")})
    where = lambda loc: beam.where(config.beam, loc)  # noqa: E731
    optional = lambda name: inputs[name].path if inputs.get(name) is not None else None
    result = run(
        config,
        where(inputs["examples"]),
        where(outputs["transform_graph"]),
        pipeline=context.pipeline,
        run_id=context.run_id,
        schema_dir=optional("schema"),
        anomalies_dir=optional("anomalies"),
        enable_cache=context.enable_cache,
    )
    return StepResult(values=asdict(result), cached=result.cached)
