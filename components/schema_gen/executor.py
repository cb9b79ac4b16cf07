"""SchemaGen: the data schema every later step validates against (schema as code).

With a curated schema (config.validation.schema_path, committed and reviewed in PRs) the step
loads it; otherwise it infers one from the train split's statistics (tfdv.infer_schema), as a
first draft to review and commit. Either way the platform conventions are applied on top
(mlops.validation.schema): TRAINING/SERVING environments with the label excluded from SERVING,
and drift (config thresholds: L-infinity for categorical, Jensen-Shannon for numeric features)
and skew comparators on features that do not already set their own.

Writes the Schema artifact:
    <out>/schema.pbtxt   text-format tensorflow_metadata Schema (the contract: mlops.artifacts)
    <out>/schema.json    where it came from (source, curated file and its sha256, statistics)
    <out>/schema.md      a readable summary (also the KFP Markdown output), <out>/index.html
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass

from tensorflow_metadata.proto.v0 import schema_pb2

from mlops import storage
from mlops.artifacts import SCHEMA_FILE, stats_path
from mlops.config import PlatformConfig, join_uri
from mlops.errors import NotFound
from mlops.steps import Location, RunContext, StepResult, source_version
from mlops.validation import report
from mlops.validation.schema import (
    SERVING,
    TRAINING,
    Schema,
    apply_comparators,
    check_covers_config,
    ensure_environments,
    load_schema,
    relax_inferred_domains,
    relax_inferred_presence,
    schema_text,
)
from mlops.validation.statistics import read_statistics

COMPONENT = "schema_gen"
CODE_VERSION = source_version("schema_gen", __name__)
SCHEMA_INFO = "schema.json"
SUMMARY_MD = "schema.md"
HTML_FILE = "index.html"
CURATED, INFERRED = "curated", "inferred"
INFER_FROM_SPLIT = "train"

log = logging.getLogger(__name__)


class SchemaGenError(NotFound):
    """An input SchemaGen needs (the train statistics) is missing."""


@dataclass
class SchemaInfo:
    source: str  # curated | inferred
    schema_path: str
    content_hash: str
    curated_path: str | None = None
    curated_sha256: str | None = None
    inferred_from: str | None = None  # statistics file the schema was inferred from
    curate_to: str | None = None  # inferred: where to commit it (validation.schema_path) once reviewed
    optional_features: dict[str, float] | None = None  # inferred: partially present -> observed fraction
    note: str = ""


def generate_schema(config: PlatformConfig, statistics_dir: str, out_dir: str) -> tuple[str, str]:
    """Writes <out_dir>/schema.pbtxt; returns (its path, "curated" | "inferred")."""
    info = build(config, statistics_dir, out_dir)
    return info.schema_path, info.source


def build(config: PlatformConfig, statistics_dir: str, out_dir: str) -> SchemaInfo:
    curated = config.validation.schema_path
    label = config.dataset.label.column
    relaxed: dict[str, float] = {}
    if curated and storage.exists(curated):
        raw = storage.read_bytes(curated)
        schema = load_schema(curated)
        check_covers_config(schema, config, curated)
        source = CURATED
        header = (
            f"Effective schema: the curated schema {curated} (sha256 {hashlib.sha256(raw).hexdigest()[:16]}),\n"
            "with the platform's environments and default drift/skew comparators filled in by schema_gen."
        )
    else:
        stats_uri = stats_path(statistics_dir, INFER_FROM_SPLIT)
        if not storage.exists(stats_uri):
            raise SchemaGenError(f"statistics {statistics_dir}: no {INFER_FROM_SPLIT}.stats.pb to infer a schema from")
        stats = read_statistics(stats_uri)
        schema = infer(stats)
        relaxed = relax_inferred_presence(schema, stats, smallest_split_share(config))
        source = INFERRED
        header = (
            f"INFERRED by schema_gen from {stats_uri} (tfdv.infer_schema): a draft, not reviewed.\n"
            "Review domains and presence, then commit it as validation.schema_path (schema as code)."
        )
    ensure_environments(schema, label)
    apply_comparators(schema, config)

    storage.makedirs(out_dir)
    path = join_uri(out_dir, SCHEMA_FILE)
    text = schema_text(schema, header)
    storage.write_bytes_atomic(path, text.encode("utf-8"))
    info = SchemaInfo(
        source=source,
        schema_path=path,
        content_hash=hashlib.sha256(schema.SerializeToString(deterministic=True)).hexdigest()[:16],
    )
    if source == CURATED:
        info.curated_path, info.curated_sha256 = curated, hashlib.sha256(raw).hexdigest()
    else:
        info.inferred_from, info.curate_to, info.optional_features = stats_uri, curate_to(config), relaxed
        info.note = review_note(config, path, relaxed)
        log.warning(info.note)
        print(f"schema_gen: {info.note}", flush=True)  # the step's log (KFP shows stdout)
    storage.write_json_atomic(join_uri(out_dir, SCHEMA_INFO), asdict(info))
    md = summary_markdown(schema, info, config)
    storage.write_bytes_atomic(join_uri(out_dir, SUMMARY_MD), md.encode("utf-8"))
    storage.write_bytes_atomic(join_uri(out_dir, HTML_FILE), summary_html(schema, info, config).encode("utf-8"))
    return info


def infer(stats) -> Schema:
    import tensorflow_data_validation as tfdv

    schema = tfdv.infer_schema(stats, infer_feature_shape=True)
    return relax_inferred_domains(schema)


def smallest_split_share(config: PlatformConfig) -> float:
    """Rows of the smallest non-empty split per row of the train split (what presence inference
    from train statistics must allow for)."""
    s = config.split
    return min(x for x in (s.eval, s.test) if x > 0) / s.train


def curate_to(config: PlatformConfig) -> str:
    """Where a reviewed schema is committed: validation.schema_path, else
    <config dir>/schemas/<dataset>.schema.pbtxt (as configs/schemas/flights.schema.pbtxt)."""
    if config.validation.schema_path:
        return config.validation.schema_path
    base = os.path.dirname(config.source_path) if config.source_path else "configs"
    return os.path.join(base, "schemas", f"{config.dataset.name}.schema.pbtxt")


def review_note(config: PlatformConfig, inferred_path: str, relaxed: dict[str, float]) -> str:
    target = curate_to(config)
    if config.validation.schema_path:
        how = (
            f"validation.schema_path {target} does not exist: schema inferred. Review {inferred_path} and copy "
            f"it to {target}"
        )
    else:
        how = (
            f"schema inferred (no validation.schema_path). Review {inferred_path}, copy it to {target} and set "
            f"validation.schema_path: {os.path.relpath(target, os.path.dirname(config.source_path or '.'))}"
        )
    note = f"{how} to make it the curated schema."
    if relaxed:
        listed = ", ".join(f"{n} ({fraction:.2%})" for n, fraction in sorted(relaxed.items())[:10])
        note += f" Not always present (presence relaxed, check it): {listed}{', ...' if len(relaxed) > 10 else ''}."
    return note


# ---- readable summary ----------------------------------------------------------------------------


def _domain(schema: Schema, f: schema_pb2.Feature) -> str:
    kind = f.WhichOneof("domain_info")
    if kind == "domain":
        values = next((list(d.value) for d in schema.string_domain if d.name == f.domain), [])
        text = _values(values)
    elif kind == "string_domain":
        text = _values(list(f.string_domain.value))
    elif kind == "int_domain":
        d = f.int_domain
        text = "integers" + (
            f" [{d.min if d.HasField('min') else ''}, {d.max if d.HasField('max') else ''}]"
            if d.HasField("min") or d.HasField("max")
            else ""
        )
    elif kind == "float_domain":
        d = f.float_domain
        text = f"[{d.min if d.HasField('min') else '-inf'}, {d.max if d.HasField('max') else 'inf'}]"
    elif kind == "bool_domain":
        text = "0/1"
    else:
        text = "any"
    if f.HasField("distribution_constraints"):
        text += f" (min domain mass {f.distribution_constraints.min_domain_mass:g})"
    return text


def _values(values: list[str]) -> str:
    shown = ", ".join(values[:12])
    return f"{len(values)} values: {shown}{', ...' if len(values) > 12 else ''}"


def _presence(f: schema_pb2.Feature) -> str:
    p = f.presence
    if p.min_fraction >= 1.0:
        return "required"
    if p.min_fraction > 0:
        return f">= {p.min_fraction:.0%} of rows"
    return "optional" if p.min_count <= 1 else f">= {p.min_count} rows"


def _comparator(c: schema_pb2.FeatureComparator) -> str:
    if c.HasField("infinity_norm"):
        return f"L-inf > {c.infinity_norm.threshold:g}"
    if c.HasField("jensen_shannon_divergence"):
        return f"JS > {c.jensen_shannon_divergence.threshold:g}"
    return ""


def _environments(schema: Schema, f: schema_pb2.Feature) -> str:
    envs = list(f.in_environment) or [e for e in schema.default_environment if e not in f.not_in_environment]
    return ", ".join(envs)


def _rows(schema: Schema):
    for f in schema.feature:
        yield (
            f.name,
            schema_pb2.FeatureType.Name(f.type),
            _presence(f),
            _domain(schema, f),
            _comparator(f.drift_comparator),
            _comparator(f.skew_comparator),
            _environments(schema, f),
        )


_HEADERS = ["feature", "type", "presence", "domain", "drift", "skew", "environments"]


def summary_markdown(schema: Schema, info: SchemaInfo, config: PlatformConfig) -> str:
    lines = [f"# Schema ({info.source})", ""]
    if info.curated_path:
        lines.append(f"Curated: `{info.curated_path}` (sha256 `{info.curated_sha256[:16]}`)")
    if info.inferred_from:
        lines.append(
            f"Inferred from `{info.inferred_from}`: review it and commit it as `{info.curate_to}` "
            "(`validation.schema_path`)."
        )
    if info.note:
        lines.append(f"**Note:** {info.note}")
    lines += [
        "",
        f"Label `{config.dataset.label.column}`: in {TRAINING} only (not in {SERVING}).",
        "",
        report.md_table(_HEADERS, _rows(schema)),
    ]
    return "\n".join(lines)


def summary_html(schema: Schema, info: SchemaInfo, config: PlatformConfig) -> str:
    intro = f"<p>Source: <b>{report.esc(info.source)}</b>"
    if info.curated_path:
        intro += f" &mdash; <code>{report.esc(info.curated_path)}</code>"
    if info.inferred_from:
        intro += f" &mdash; inferred from <code>{report.esc(info.inferred_from)}</code> (review and commit it)"
    intro += "</p>"
    if info.note:
        intro += f'<p class="warn">{report.esc(info.note)}</p>'
    return report.page("Data schema", [intro, report.table(_HEADERS, _rows(schema))])


# ---- MLMD ----------------------------------------------------------------------------------------


def schema_ref(info: SchemaInfo, out_dir: str):
    from mlops.metadata.store import ArtifactRef

    return ArtifactRef(
        "Schema",
        out_dir,
        properties={"content_hash": info.content_hash, "source": info.source, "curated_path": info.curated_path or ""},
    )


def run(config: PlatformConfig, statistics_dir: str, out_dir: str, *, pipeline: str, run_id: str) -> SchemaInfo:
    """build() + the MLMD record. The statistics are an input only when the schema was inferred
    from them (a curated schema does not depend on this run's data)."""
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step

    info = build(config, statistics_dir, out_dir)
    inputs = {"statistics": [ArtifactRef("Statistics", statistics_dir)]} if info.source == INFERRED else {}
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs=inputs,
        outputs={"schema": [schema_ref(info, out_dir)]},
        properties={"code_version": CODE_VERSION},
    )
    return info


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"statistics"}; outputs {"schema"}."""
    from dataclasses import asdict

    info = run(
        config, inputs["statistics"].path, outputs["schema"].path, pipeline=context.pipeline, run_id=context.run_id
    )
    return StepResult(values=asdict(info))
