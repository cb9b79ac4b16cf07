"""A test-only pipeline with one slow step, shaped like Transform and Trainer: the step's work
runs in a TF-style worker child (mlops.modeling.child.run_child), then the step records itself
in ML Metadata. Tests register it in pipelines.runner.PIPELINES to kill or fail a run mid-step."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from mlops.images import PIPELINE_IMAGE

PIPELINE_NAME = "slow"
WORKER_MODULE = "tests.support.slow_worker"


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def slow_step(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    seconds: float,
    fail_with: str,
    done: Output[Artifact],
):
    from mlops.errors import InvalidInput
    from mlops.modeling.child import run_child
    from mlops.steps import load_step_config, record_step

    config = load_step_config(config_path, config_overrides, artifact_root)
    if fail_with:
        raise InvalidInput(fail_with)
    run_child("tests.support.slow_worker", {"seconds": seconds}, what="slow step")
    record_step(config, pipeline=pipeline_name, run_id=run_id, component="slow_step")
    with open(done.path, "w") as f:
        f.write("done")


@dsl.pipeline(name=PIPELINE_NAME)
def slow_pipeline(
    config_path: str = "configs/flights.yaml",
    config_overrides: str = "",
    artifact_root: str = "",
    seconds: float = 0.0,
    fail_with: str = "",
):
    slow_step(
        config_path=config_path,
        config_overrides=config_overrides,
        artifact_root=artifact_root,
        pipeline_name=PIPELINE_NAME,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        seconds=seconds,
        fail_with=fail_with,
    ).set_caching_options(False)
