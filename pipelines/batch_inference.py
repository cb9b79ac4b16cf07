"""The `batch_inference` pipeline: a registered model over a dataset version -> a predictions parquet.

    batch_predict   (dataset version + model NAME@ALIAS -> predictions, lineage in ML Metadata)

Runs in the pipeline image (TF loads the SavedModel the Trainer exported; MLMD is there) with the
serving code (serving/batch.py). Upload pipelines/compiled/batch_inference.yaml in the KFP UI and
schedule it (e.g. monthly over NAME@latest), or run it locally:
`mlops run batch_inference --param model=flights@production --param input_data=flights@2013-02`.
"""

from kfp import dsl

from components.batch_predict.component import batch_predict
from pipelines.target import LOCAL, CompileTarget

PIPELINE_NAME = "batch_inference"


def define(target: CompileTarget = LOCAL):
    """The pipeline with the target's images, resources and node selectors on its steps."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Batch predictions of a registered model over a dataset version, with lineage in ML Metadata.",
    )
    def batch_inference_pipeline(
        config_path: str = "configs/flights.yaml",
        config_overrides: str = "",
        artifact_root: str = "",
        model: str = "",
        input_data: str = "",
        output_uri: str = "",
        id_column: str = "",
        passthrough_columns: str = "",
        chunk_rows: int = 0,
        runtime: str = "",
        log_payloads: bool = False,
    ):
        """
        Args:
            config_path: Platform config YAML, relative to the project root in the image.
            config_overrides: JSON object of dotted config keys to override, e.g. {"serving.batch.chunk_rows": 8192}.
            artifact_root: Artifact root (e.g. s3://bucket/mlops); empty: as in the config.
            model: NAME@ALIAS, NAME@VERSION or NAME; empty: serving.model, else the project's name (production alias).
            input_data: Dataset version id, NAME@latest, NAME@2013-02, NAME@2013-01:2013-06, or a parquet/csv URI;
                empty: the config's dataset @latest.
            output_uri: Predictions parquet URI; empty: <artifact_root>/predictions/<run id>/predictions.parquet.
            id_column: Input column for row ids; empty: serving.batch.id_column if present, else row positions.
            passthrough_columns: Comma-separated input columns copied to the output; empty: serving.batch's.
            chunk_rows: Rows per read/predict/write step; 0: serving.batch.chunk_rows.
            runtime: savedmodel or tflite; empty: serving.runtime (auto means the SavedModel).
            log_payloads: Also log every prediction to the payload log (monitoring).
        """
        step = (
            batch_predict(
                config_path=config_path,
                config_overrides=config_overrides,
                artifact_root=artifact_root,
                model=model,
                input_data=input_data,
                output_uri=output_uri,
                id_column=id_column,
                passthrough_columns=passthrough_columns,
                chunk_rows=chunk_rows,
                runtime=runtime,
                log_payloads=log_payloads,
                pipeline_name=PIPELINE_NAME,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            .set_display_name("batch predict")
            .set_caching_options(False)
        )  # the model alias and the data move
        target.configure(step)

    return batch_inference_pipeline


batch_inference_pipeline = define()
