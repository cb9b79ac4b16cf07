"""The MLMD type system of the platform, defined once, in the tables below.

Every name is prefixed `mlops.` so our types never collide with KFP's own (`system.Model`,
`system.ContainerExecution`, ...) when both write into one shared metadata database.

Artifacts: `uri` and `name` are built-in MLMD fields, so they are not listed as properties. An
artifact is identified by (type, uri): the same dataset version consumed by many runs is one
artifact. JSON-valued properties (metrics, split names) are stored as STRING.

Executions: ONE execution type, `mlops.ComponentRun`, with the component name as a property,
instead of one type per component (`mlops.ExampleGen`, `mlops.Trainer`, ...). Why:
  * lineage is walked through events, which do not care about execution types;
  * "all Trainer runs" is still one query (`properties.component` filter), and the execution
    name `<run_id>/<component>` is unique within the single type, so the idempotency lookup of
    `record_execution` is one get-by-type-and-name call;
  * types in MLMD can never be deleted and are global to the database: a new or renamed
    component must not require registering (and forever keeping) a new type.

Contexts: `mlops.Pipeline` (one per pipeline name) is the parent of `mlops.PipelineRun` (one per
run id); every execution and artifact is attached to both.

This module only holds data (plain strings for property types) so it imports without
ml-metadata installed, e.g. in the serving image.
"""

from __future__ import annotations

from mlops.metadata.errors import UnknownArtifactType

PREFIX = "mlops."
S, I, D = "STRING", "INT", "DOUBLE"  # noqa: E741  (MLMD PropertyType names, short for the tables)

# fmt: off
ARTIFACT_TYPES: dict[str, dict[str, str]] = {
    # type                   typed properties (uri and name are MLMD built-ins)
    "mlops.Dataset":         {"name": S, "version_id": S, "span": S, "row_count": I, "content_hash": S},
    "mlops.FeatureView":     {"name": S, "project": S, "content_hash": S},
    "mlops.Statistics":      {"split": S, "span": S, "row_count": I, "content_hash": S},
    "mlops.Schema":          {"content_hash": S},
    "mlops.Anomalies":       {"split": S, "anomaly_count": I, "content_hash": S},
    "mlops.TransformGraph":  {"content_hash": S},
    "mlops.Examples":        {"split_names": S, "span": S, "row_count": I, "content_hash": S},  # split_names: JSON list
    "mlops.Model":           {"name": S, "version": S, "content_hash": S, "metrics": S},        # metrics: JSON
    "mlops.ModelEvaluation": {"metrics": S, "baseline_version": S},                             # metrics: JSON
    "mlops.ModelBlessing":   {"blessed": I, "reason": S, "baseline_version": S},                # blessed: 0/1
    "mlops.PushedModel":     {"name": S, "version": S, "destination": S},
    # Batch inference output (one parquet file): model = "<name>@<version>"
    "mlops.Predictions":     {"model": S, "row_count": I, "content_hash": S, "predicted_at": S},
    # Monitoring (components/monitor): the payload-log rows of one model in [start, end), and the
    # run's result (drift, data quality, estimated performance: result.json + report.html).
    # Its serving statistics are mlops.Statistics with split "serving" and model "<name>@<version>".
    "mlops.PayloadWindow":   {"model": S, "start": S, "end": S, "row_count": I},
    "mlops.DriftResult":     {"model": S, "start": S, "end": S, "drifted": I, "content_hash": S},
    # Continuous evaluation (components/monitor/live_evaluation.py): predictions of the window
    # joined with their labels; live metrics, concept drift (live.json + report.html).
    "mlops.LiveEvaluation":  {"model": S, "start": S, "end": S, "matched_rows": I, "content_hash": S},
}

EXECUTION_TYPE = "mlops.ComponentRun"
EXECUTION_TYPES: dict[str, dict[str, str]] = {
    EXECUTION_TYPE:          {"component": S, "code_version": S, "config_hash": S, "git_commit": S,
                              "cache_key": S, "error": S},
}

PIPELINE_CONTEXT = "mlops.Pipeline"
RUN_CONTEXT = "mlops.PipelineRun"
CONTEXT_TYPES: dict[str, dict[str, str]] = {
    PIPELINE_CONTEXT:        {"project": S},
    RUN_CONTEXT:             {"pipeline_name": S, "run_id": S, "config_hash": S, "git_commit": S, "runner": S},
}
# fmt: on


def qualify(type_name: str) -> str:
    """`"Model"` -> `"mlops.Model"` (already qualified names pass through), so callers and the CLI
    can use the short names."""
    return type_name if type_name.startswith(PREFIX) else PREFIX + type_name


def artifact_type(type_name: str) -> str:
    """The qualified artifact type name, or ValueError listing the known types."""
    name = qualify(type_name)
    if name not in ARTIFACT_TYPES:
        known = ", ".join(t.removeprefix(PREFIX) for t in ARTIFACT_TYPES)
        raise UnknownArtifactType(f"unknown artifact type {type_name!r}; known: {known}")
    return name
