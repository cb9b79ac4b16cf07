"""KFP interface of the Transform step (implementation: executor.py; Beam/TFT work: worker.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def transform(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    examples: Input[Dataset],
    transform_graph: Output[Artifact],
    enable_cache: bool = True,
    schema: Input[Artifact] = None,
    anomalies: Input[Artifact] = None,
):
    """TFT analysis on the train split and transformation of train/eval/test (MLMD: TransformGraph).

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        examples: Directory with <split>.parquet for train/eval/test (raw feature encoding).
        transform_graph: Directory: transform_output/ (TFTransformOutput) and
            transformed/<split>.tfrecord.gz; metadata carries row counts and vocabulary sizes.
        enable_cache: Reuse the outputs of an identical earlier run (same examples, schema, config, code).
        schema: Optional TFDV schema directory (schema.pbtxt): the config's features are checked
            against it before any Beam work.
        anomalies: Optional ExampleValidator output: the validation this step ran behind (lineage).
    """
    from components.transform.executor import run
    from components.transform.worker import LOCAL_RUNNERS
    from mlops.steps import load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    # A distributed Beam runner (Dataflow/Flink/Spark) reads and writes through the artifact
    # URIs (e.g. gs://...), which its workers reach; the local runner uses the mounted paths.
    local = config.transform.beam_runner in LOCAL_RUNNERS
    result = run(config, examples.path if local else examples.uri,
                 transform_graph.path if local else transform_graph.uri, pipeline=pipeline_name, run_id=run_id,
                 schema_dir=schema.path if schema is not None else None,
                 anomalies_dir=anomalies.path if anomalies is not None else None, enable_cache=enable_cache)
    transform_graph.metadata.update({
        "row_counts": result.rows, "vocabulary_sizes": result.vocabulary_sizes,
        "content_hash": result.content_hash, "beam_runner": config.transform.beam_runner,
        "transformed_features": result.transformed_features, "seconds": result.seconds})
