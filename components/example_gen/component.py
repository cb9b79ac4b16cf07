"""KFP interface of ExampleGen (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def example_gen(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    dataset_selector: str,
    pipeline_name: str,
    run_id: str,
    enable_cache: bool,
    examples: Output[Dataset],
):
    """Builds the training set: dataset version(s) + point-in-time Feast features, split.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        dataset_selector: "latest", a span (2013-03), a span range (2013-01:2013-06) or a version id.
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        enable_cache: Reuse outputs of an identical earlier run (same data, config, code).
        examples: <split>.parquet per split and examples.json (row counts, versions used).
    """
    from components.example_gen.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    result = execute(
        config,
        {},
        {"examples": Location(examples.path, examples.uri)},
        RunContext(pipeline_name, run_id, enable_cache),
        dataset_selector=dataset_selector,
    )
    examples.metadata.update(
        {
            "splits": result.values["splits"],
            "dataset_versions": result.values["dataset_versions"],
            "cached": result.cached,
        }
    )
