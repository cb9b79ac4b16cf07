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
    from components.transform.executor import execute
    from mlops import beam
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    optional = {
        name: Location(a.path, a.uri) for name, a in (("schema", schema), ("anomalies", anomalies)) if a is not None
    }
    result = execute(
        config,
        {"examples": Location(examples.path, examples.uri), **optional},
        {"transform_graph": Location(transform_graph.path, transform_graph.uri)},
        RunContext(pipeline_name, run_id, enable_cache),
    ).values
    transform_graph.metadata.update(
        {
            "row_counts": result["rows"],
            "vocabulary_sizes": result["vocabulary_sizes"],
            "content_hash": result["content_hash"],
            "beam_runner": beam.describe(beam.for_step(config.beam, "transform")),
            "transformed_features": result["transformed_features"],
            "seconds": result["seconds"],
        }
    )
