"""KFP interface of StatisticsGen (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def statistics_gen(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    examples: Input[Dataset],
    statistics: Output[Artifact],
    statistics_html: Output[HTML],
):
    """TFDV statistics per split of the examples, recorded in MLMD.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        examples: Examples directory: <split>.parquet in the raw feature encoding.
        statistics: Directory: <split>.stats.pb (binary DatasetFeatureStatisticsList), statistics.json, index.html.
        statistics_html: The statistics report, for the KFP UI.
    """
    import shutil

    from components.statistics_gen.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    out = execute(
        config,
        {"examples": Location(examples.path, examples.uri)},
        {"statistics": Location(statistics.path, statistics.uri)},
        RunContext(pipeline_name, run_id),
    ).values
    shutil.copyfile(out["html_path"], statistics_html.path)
    statistics.metadata.update(
        {
            "splits": out["splits"],
            "rows_in": out["rows_in"],
            "sample_rate": out["sample_rate"],
            "content_hash": out["content_hash"],
        }
    )
