"""KFP interface of the ingest step (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    span: str,
    pipeline_name: str,
    run_id: str,
    dataset: Output[Dataset],
):
    """Ingests the configured source into the dataset repository and records it in MLMD.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        span: Month to ingest (YYYY-MM), or "" for the whole source.
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        dataset: Pointer (JSON) to the immutable dataset version; metadata carries its id.
    """
    from components.ingest.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    out = execute(
        config, {}, {"dataset": Location(dataset.path, dataset.uri)}, RunContext(pipeline_name, run_id), span=span
    ).values
    dataset.metadata.update(
        {
            "version_id": out["version_id"],
            "row_count": out["row_count"],
            "created": out["created"],
            "repository_uri": out["uri"],
        }
    )
