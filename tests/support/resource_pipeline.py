"""A test-only pipeline whose steps use known resources in a worker child (as Transform and Trainer
do their work), for the runner's per-step measurement: `allocate` holds ~`allocate_mib` MiB and
records itself in ML Metadata like the platform's steps; `burn` burns ~`burn_cpu_seconds` of CPU
and records nothing (like resolve_config). Tests register it in pipelines.runner.PIPELINES."""

from kfp import dsl

from mlops.images import PIPELINE_IMAGE

PIPELINE_NAME = "resources"


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def allocate(config_path: str, config_overrides: str, artifact_root: str, pipeline_name: str, run_id: str, mib: int):
    from mlops.modeling.child import run_child
    from mlops.steps import load_step_config, record_step

    config = load_step_config(config_path, config_overrides, artifact_root)
    run_child("tests.support.resource_worker", {"allocate_mib": mib}, what="allocate")
    record_step(config, pipeline=pipeline_name, run_id=run_id, component="allocate")


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def burn(cpu_seconds: float):
    from mlops.modeling.child import run_child

    run_child("tests.support.resource_worker", {"burn_cpu_seconds": cpu_seconds}, what="burn")


@dsl.pipeline(name=PIPELINE_NAME)
def resource_pipeline(
    config_path: str = "configs/flights.yaml",
    config_overrides: str = "",
    artifact_root: str = "",
    allocate_mib: int = 200,
    burn_cpu_seconds: float = 1.0,
):
    allocated = allocate(
        config_path=config_path,
        config_overrides=config_overrides,
        artifact_root=artifact_root,
        pipeline_name=PIPELINE_NAME,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        mib=allocate_mib,
    ).set_caching_options(False)
    burn(cpu_seconds=burn_cpu_seconds).set_caching_options(False).after(allocated)


def run_locally(monkeypatch, *, allocate_mib: int, burn_cpu_seconds: float):
    """`mlops run resources` in this process (kfp.local, measured by the runner), with the config
    the `artifact_root` fixture points at: (the CLI result, the run's context, its executions by
    component). The run must succeed."""
    from click.testing import CliRunner

    from cli.main import cli
    from mlops.config import load_config
    from mlops.metadata.store import open_store
    from pipelines import runner
    from tests.support.fixtures import FLIGHTS_CONFIG

    monkeypatch.setitem(runner.PIPELINES, PIPELINE_NAME, "tests.support.resource_pipeline:resource_pipeline")
    params = ["--param", f"allocate_mib={allocate_mib}", "--param", f"burn_cpu_seconds={burn_cpu_seconds}"]
    result = CliRunner().invoke(cli, ["run", PIPELINE_NAME, *params])
    assert result.exit_code == 0, result.output
    store = open_store(load_config(FLIGHTS_CONFIG))
    [run] = [r for r in store.list_contexts("PipelineRun") if r.properties["pipeline_name"] == PIPELINE_NAME]
    return result, run, {e.component: e for e in store.list_executions(run.name)}
