"""KFP interface of the monitoring run (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def monitor(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    model: str,
    window: str,
    last: str,
    result: Output[Artifact],
    report: Output[HTML],
) -> bool:
    """Payload logs of a window vs each model version's training reference: serving statistics,
    drift, estimated performance, data quality; recorded in MLMD, exported as Prometheus metrics.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        model: NAME, NAME@ALIAS or NAME@VERSION ("" = the project's name: production, else staging).
        window: START:END (ISO dates or times, UTC), or "" for `last`.
        last: A duration before now (30m, 6h, 2d), or "" for monitoring.window.
        result: Directory: result.json, report.html, metrics.prom (no Pushgateway), v<N>/serving.stats.pb.
        report: The monitoring report, for the KFP UI.

    Returns:
        Whether any monitored version drifted.
    """
    import shutil

    from components.monitor.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    values = execute(
        config,
        {},
        {"result": Location(result.path, result.uri)},
        RunContext(pipeline_name, run_id),
        model=model,
        window=window,
        last=last,
    ).values
    shutil.copyfile(values["report_path"], report.path)
    result.metadata.update({k: values[k] for k in ("model", "rows", "drifted")})
    return values["drifted"]
