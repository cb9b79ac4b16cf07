"""KFP interface of the Evaluator (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluator(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    enable_cache: bool,
    examples: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    blessing: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
) -> bool:
    """TFMA evaluation of the candidate against production, overall and per slice; blessing.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        enable_cache: Reuse outputs of an identical earlier evaluation.
        examples: Examples directory (the test split is evaluated).
        model: Trainer output directory (serving_model/ is evaluated).
        evaluation: metrics.json (overall, slices, calibration, checks) and index.html.
        blessing: blessing.json: blessed, reason, checks, baseline version.
        metrics: Overall candidate metrics, shown in the KFP UI.
        report: The evaluation report, for the KFP UI.

    Returns:
        Whether the candidate is blessed.
    """
    import math
    import shutil

    from components.evaluator.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    result = execute(
        config,
        {"examples": Location(examples.path, examples.uri), "model": Location(model.path, model.uri)},
        {"evaluation": Location(evaluation.path, evaluation.uri), "blessing": Location(blessing.path, blessing.uri)},
        RunContext(pipeline_name, run_id, enable_cache),
    ).values
    shutil.copyfile(f"{evaluation.path}/index.html", report.path)
    for name, value in result["overall"].get("candidate", {}).items():
        if value is not None and math.isfinite(value):  # KFP metadata is JSON: no NaN
            metrics.log_metric(name, value)
    blessing.metadata.update(result["blessing"] | {"checks": len(result["blessing"]["checks"])})
    return bool(result["blessing"]["blessed"])
