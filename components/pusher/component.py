"""KFP interface of the Pusher (implementation: executor.py)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def pusher(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    examples: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    blessing: Input[Artifact],
    summary: Output[Markdown],
) -> NamedTuple("PushOutputs", [("pushed", bool), ("model_version", str)]):
    """Registers a blessed model in the model registry (alias staging); explains a refusal.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        examples: ExampleGen output (dataset versions for the registry manifest).
        model: Trainer output directory.
        evaluation: Evaluator output (metrics).
        blessing: Evaluator blessing.
        summary: What happened, for the KFP UI.

    Returns:
        pushed: whether a version was registered; model_version: e.g. "flights@3" or "".
    """
    from collections import namedtuple

    from components.pusher.executor import execute
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    result = execute(
        config,
        {
            "model": Location(model.path, model.uri),
            "evaluation": Location(evaluation.path),
            "blessing": Location(blessing.path, blessing.uri),
            "examples": Location(examples.path),
        },
        {},
        RunContext(pipeline_name, run_id),
    ).values
    with open(summary.path, "w") as f:
        f.write(f"# Pusher\n\n{result['reason']}\n")
    selector = f"{result['model_name']}@{result['version']}" if result["version"] else ""
    return namedtuple("PushOutputs", ["pushed", "model_version"])(result["pushed"], selector)
