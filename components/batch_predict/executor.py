"""batch_predict: a model over a dataset version (or a parquet/csv file) -> a predictions parquet,
recorded in ML Metadata as

    Dataset version(s) ─┐
                        ├─ batch_predict ─> Predictions
    PushedModel / Model ┘

so `MetadataStore.lineage()` walks from a predictions file to the model version that made it and
on through the training run to the model's own dataset versions. The work is serving.batch (the
same predictor, enrichment and payload logging as online serving); the KFP component
(component.py) and `mlops predict batch` both call `run_step`.

A run that fails (bad input, a model error) is recorded as FAILED with its inputs and the error,
and writes no predictions.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Sequence

from mlops.config import PlatformConfig, join_uri
from mlops.steps import source_version

COMPONENT = "batch_predict"
PIPELINE = "batch_inference"  # the MLMD pipeline context (KFP runs and `mlops predict batch` alike)
CODE_VERSION = source_version(COMPONENT, __name__)


def new_run_id() -> str:
    """Run id of a batch prediction outside KFP (the CLI)."""
    return f"predict-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def default_output_uri(config: PlatformConfig, run_id: str) -> str:
    return join_uri(config.artifact_root, "predictions", run_id, "predictions.parquet")


def input_refs(inp) -> list:
    """The input as MLMD Dataset artifacts: the repository versions (the artifacts ingest
    recorded: same type and uri), or the file/directory URI."""
    from components.ingest.executor import dataset_ref
    from mlops.metadata.store import ArtifactRef

    if inp.dataset_versions:
        return [dataset_ref(v) for v in inp.dataset_versions]
    return [ArtifactRef("Dataset", inp.uri, properties={"name": inp.uri.rstrip("/").rsplit("/", 1)[-1]})]


def model_ref(result):
    """A registry version is the PushedModel the pusher recorded (same uri and name, so the
    lineage continues into the training run); a plain model directory is a Model."""
    from mlops.metadata.store import ArtifactRef

    props = {"name": result.model_name, "version": result.model_version}
    if result.from_registry:
        return ArtifactRef(
            "PushedModel",
            result.model_uri,
            name=f"{result.model_name}@{result.model_version}",
            properties={**props, "destination": result.model_uri},
        )
    return ArtifactRef("Model", result.model_uri, properties=props)


def model_input_names(config: PlatformConfig, model: str | None) -> list[str] | None:
    """The raw inputs of `model` as its manifest lists them (registry versions always have one; a
    model directory may), read before the model loads; None when unknown."""
    from mlops import storage
    from mlops.config import join_uri
    from mlops.registry.store import MANIFEST, ModelRegistry
    from serving.handle import _is_dir_source

    source = model or config.serving.model or config.project
    if _is_dir_source(source):
        manifest_uri = join_uri(source, MANIFEST)
        features = storage.read_json(manifest_uri).get("features") if storage.exists(manifest_uri) else None
    else:
        features = ModelRegistry.from_config(config).resolve(source).features
    return [f["name"] for f in features] if features else None


def without_unneeded_lookup(config: PlatformConfig, model: str | None, input: str) -> PlatformConfig:
    """`config` with serving.feature_lookup off when the input already holds every model input:
    nothing would be looked up, and building Feast's FeatureStore anyway (its import and registry,
    seconds of CPU beside TensorFlow's import, then a warm-up read) was most of the fixed cost of a
    short run. Unchanged when a lookup may be needed or anything is unknown (the run itself then
    reports a bad model or input)."""
    from serving.batch import input_columns, resolve_input

    if config.features is None or not config.serving.feature_lookup:
        return config
    try:
        needed = model_input_names(config, model)
        have = set(input_columns(resolve_input(config, input))) if needed else set()
    except Exception:  # noqa: BLE001 - only a shortcut: the run itself reports a bad model or input
        return config
    if not needed or not have.issuperset(needed):
        return config
    return config.model_copy(update={"serving": config.serving.model_copy(update={"feature_lookup": False})})


def run_step(
    config: PlatformConfig,
    *,
    model: str | None,
    input: str = "",
    output_uri: str = "",
    summary_uri: str | None = None,
    pipeline: str = PIPELINE,
    run_id: str | None = None,
    chunk_rows: int | None = None,
    id_column: str | None = None,
    passthrough: Sequence[str] | None = None,
    runtime: str | None = None,
    log_payloads: bool = False,
    log=print,
):
    """serving.batch.predict_batch + the MLMD record. Returns the BatchResult. Defaults: the
    config's dataset @latest as input, <artifact_root>/predictions/<run id>/ as output."""
    from mlops import storage
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step
    from serving.batch import predict_batch, resolve_input

    run_id = run_id or new_run_id()
    input = input or f"{config.dataset.name}@latest"
    output_uri = output_uri or default_output_uri(config, run_id)
    # Paths typed in a shell: the lineage and the summary record where the files really are.
    output_uri, summary_uri = (u if not u or "://" in u else os.path.abspath(u) for u in (output_uri, summary_uri))
    properties = {"code_version": CODE_VERSION}
    try:
        result = predict_batch(
            without_unneeded_lookup(config, model, input),
            model=model or None,
            input=input,
            output=output_uri,
            summary=summary_uri,
            chunk_rows=chunk_rows,
            id_column=id_column,
            passthrough=passthrough,
            runtime=runtime,
            log_payloads=log_payloads,
        )
    except Exception as e:
        try:  # best effort: the run's own error is what the caller must see
            try:  # the input, when it resolves, so the failure is findable from the dataset
                inputs = {"dataset": input_refs(resolve_input(config, input))}
            except Exception:
                inputs = {}
            record_step(
                config,
                pipeline=pipeline,
                run_id=run_id,
                component=COMPONENT,
                inputs=inputs,
                properties={**properties, "error": f"{type(e).__name__}: {e}"[:2000]},
                state="FAILED",
            )
        except Exception as record_error:
            log(f"batch_predict: the failure could not be recorded in ML Metadata: {record_error}")
        raise
    summary = result.summary
    predictions = ArtifactRef(
        "Predictions",
        result.output_uri,
        properties={
            "model": f"{result.model_name}@{result.model_version}",
            "row_count": result.rows,
            "content_hash": storage.tree_hash(result.output_uri),
            "predicted_at": summary["started_at"],
            "summary_uri": result.summary_uri,
        },
    )
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs={"dataset": input_refs(result.input), "model": [model_ref(result)]},
        outputs={"predictions": [predictions]},
        properties=properties,
    )
    log(
        f"batch_predict: {result.rows:,} rows in {summary['seconds']:.1f} s ({summary['rows_per_second']:,.0f} rows/s) "
        f"with {result.model_name}@{result.model_version} -> {result.output_uri}"
    )
    return result
