"""KFP interface of SchemaGen (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def schema_gen(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    statistics: Input[Artifact],
    schema: Output[Artifact],
    schema_summary: Output[Markdown],
):
    """The curated schema (validation.schema_path) or one inferred from the train statistics,
    with environments and drift/skew comparators; recorded in MLMD.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        statistics: StatisticsGen output: <split>.stats.pb (train is used to infer a schema).
        schema: Directory: schema.pbtxt (text-format TFDV schema), schema.json, schema.md, index.html.
        schema_summary: The schema as a Markdown table, for the KFP UI.
    """
    import shutil

    from components.schema_gen.executor import SUMMARY_MD, execute
    from mlops.config import join_uri
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    info = execute(
        config,
        {"statistics": Location(statistics.path, statistics.uri)},
        {"schema": Location(schema.path, schema.uri)},
        RunContext(pipeline_name, run_id),
    ).values
    shutil.copyfile(join_uri(schema.path, SUMMARY_MD), schema_summary.path)
    schema.metadata.update(
        {
            "source": info["source"],
            "content_hash": info["content_hash"],
            "curated_path": info["curated_path"] or "",
            "note": info["note"],
        }
    )
