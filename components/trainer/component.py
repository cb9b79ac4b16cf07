"""KFP interface of the Trainer step (implementation: executor.py; TensorFlow work: worker.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def trainer(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    transform_graph: Input[Artifact],
    examples: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    enable_cache: bool = True,
):
    """Trains the Keras model on the transformed examples and exports it (MLMD: Model).

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        transform_graph: The Transform step's output directory.
        examples: The raw examples (<split>.parquet): raw test rows for the TFLite parity check.
        model: Directory in the mlops.artifacts Model layout (serving_model/, model.tflite,
            tflite_preprocessing.json, training.json, logs/); metadata names the TensorBoard logs.
        metrics: Eval/test metrics of the exported model (KFP UI).
        enable_cache: Reuse the outputs of an identical earlier run (same data, config, code).
    """
    from components.trainer.executor import LOGS, execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    result = execute(
        config,
        {
            "transform_graph": Location(transform_graph.path, transform_graph.uri),
            "examples": Location(examples.path, examples.uri),
        },
        {"model": Location(model.path, model.uri)},
        RunContext(pipeline_name, run_id, enable_cache),
    )
    for split, values in result.values["metrics"].items():
        for name, value in values.items():
            metrics.log_metric(f"{split}_{name}", float(value))
    model.metadata.update(
        {
            "tensorboard_logs": model.uri.rstrip("/") + "/" + LOGS,
            "epochs_run": result.values["epochs_run"],
            "best_epoch": result.values["best_epoch"],
            "rows": result.values["rows"],
            "tflite_parity": result.values["tflite_parity"],
            "framework": "tensorflow",
            "signature": "serving_default",
        }
    )
