"""KFP interface of batch_predict (implementation: executor.py, serving/batch.py)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def batch_predict(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    model: str,
    input_data: str,
    output_uri: str,
    id_column: str,
    passthrough_columns: str,
    chunk_rows: int,
    runtime: str,
    log_payloads: bool,
    pipeline_name: str,
    run_id: str,
    predictions: Output[Dataset],
    summary: Output[Markdown],
) -> NamedTuple("BatchPredictOutputs", [("rows", int), ("model_version", str), ("output_uri", str)]):
    """Predicts every row of a dataset version (or a parquet/csv URI) with a registered model.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        model: NAME, NAME@ALIAS or NAME@VERSION ("" = serving.model, else the project's name).
        input_data: Dataset version id, NAME@latest / NAME@YYYY-MM / NAME@span range, or a parquet/csv URI.
        output_uri: Where the predictions parquet goes ("" = <artifact_root>/predictions/<run id>/).
        id_column: Input column for row ids ("" = serving.batch.id_column if present, else row positions).
        passthrough_columns: Comma-separated input columns copied to the output ("" = serving.batch's).
        chunk_rows: Rows per read/predict/write step (0 = serving.batch.chunk_rows).
        runtime: savedmodel or tflite ("" = serving.runtime; auto means the SavedModel).
        log_payloads: Also log every prediction with the payload logger (serving.payload_log).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        predictions: Pointer (JSON) to the predictions parquet; metadata carries uri, rows, model.
        summary: Rows, seconds, rows/s, model and input, for the KFP UI.

    Returns:
        rows: rows predicted; model_version: "<name>@<version>"; output_uri: the predictions parquet.
    """
    import json
    from collections import namedtuple

    from components.batch_predict.executor import run_step
    from mlops.steps import load_step_config
    from mlops.storage import write_json_atomic

    config = load_step_config(config_path, config_overrides, artifact_root)
    passthrough = [c.strip() for c in passthrough_columns.split(",") if c.strip()] or None
    result = run_step(
        config,
        model=model,
        input=input_data,
        output_uri=output_uri,
        pipeline=pipeline_name,
        run_id=run_id,
        chunk_rows=chunk_rows or None,
        id_column=id_column or None,
        passthrough=passthrough,
        runtime=runtime or None,
        log_payloads=log_payloads,
    )
    selector = f"{result.model_name}@{result.model_version}"
    # The KFP artifact points at the predictions (like ingest's dataset pointer): they live at a
    # URI of the caller's choosing, which downstream jobs read without knowing about KFP.
    write_json_atomic(
        predictions.path,
        {"uri": result.output_uri, "summary_uri": result.summary_uri, "rows": result.rows, "model": selector},
    )
    predictions.metadata.update({"uri": result.output_uri, "rows": result.rows, "model": selector})
    with open(summary.path, "w") as f:
        f.write(
            f"# Batch predictions\n\n{result.rows:,} rows with `{selector}` -> `{result.output_uri}`\n\n"
            f"```json\n{json.dumps(result.summary, indent=2)}\n```\n"
        )
    return namedtuple("BatchPredictOutputs", ["rows", "model_version", "output_uri"])(
        result.rows, selector, result.output_uri
    )
