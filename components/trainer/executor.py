"""Trainer: the Keras model on the Transform step's output, exported for serving and for TFLite.

Plain Python on paths and config; the KFP interface in component.py only maps its parameters and
artifacts to these functions. The model is mlops.modeling.model (dnn or wide_deep from
config.model); the work runs in a child process (components.trainer.worker through
mlops.modeling.child) so this process never imports TensorFlow and a crash in TF/TFT teardown
cannot fail the step after the model was written.

Output (<out_dir>, the mlops.artifacts Model layout):
  serving_model/              SavedModel; `serving_default`: one dense [None] tensor per raw
                              feature (float32 / string) -> {"probability": float32 [None]} with the
                              TFT layer inside; `transformed`: the core model on transformed features
  model.tflite                the core model (builtin ops only)
  tflite_preprocessing.json   TFT constants for mlops.modeling.tflite_predictor
  training.json               params, seed, history, eval/test metrics, TFLite parity, durations
  logs/                       TensorBoard event files;  checkpoints/  per-epoch weights
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from mlops import storage
from mlops.artifacts import (
    SERVING_MODEL,
    SPLITS,
    TFLITE_MODEL,
    TFLITE_PREPROCESSING,
    TRAINING_INFO,
    TRANSFORM_OUTPUT,
    TRANSFORMED_EXAMPLES,
)
from mlops.config import PlatformConfig, join_uri
from mlops.errors import MlopsError
from mlops.modeling.child import ChildError, run_child
from mlops.registry.store import model_content_hash
from mlops.steps import Location, RunContext, StepResult, record_step, source_version

COMPONENT = "trainer"
WORKER_MODULE = "components.trainer.worker"
# The executor and the worker it runs by name: their imports, transitively, are the code version.
CODE_VERSION = source_version("trainer", __name__, WORKER_MODULE)
LOGS = "logs"
CHECKPOINTS = "checkpoints"
PARITY_TOLERANCE = 1e-4

log = logging.getLogger(__name__)


class TrainingError(MlopsError):
    pass


@dataclass
class TrainingResult:
    out_dir: str
    serving_model: str
    tflite_model: str
    logs_dir: str
    metrics: dict
    rows: dict
    epochs_run: int
    best_epoch: int | None
    tflite_parity: dict | None
    durations_s: dict
    seconds: float
    worker_exit_code: int
    worker_peak_rss_mb: float | None = None

    cached: bool = False  # served by the step cache (set by run(); False in the stored entry)

    def to_json(self) -> dict:
        return asdict(self)


def run_training(
    config: PlatformConfig,
    transform_dir: str,
    out_dir: str,
    *,
    examples_dir: str | None = None,
    parity_rows: int = 2000,
    parity_tolerance: float = PARITY_TOLERANCE,
    timeout: float | None = None,
) -> TrainingResult:
    """Trains on <transform_dir>/transformed/{train,eval} and writes the Model layout to out_dir.
    With `examples_dir`, checks TFLite (+ NumPy preprocessing) against the SavedModel on up to
    `parity_rows` raw test rows and fails beyond `parity_tolerance`."""
    started = time.monotonic()
    needed = [join_uri(transform_dir, TRANSFORM_OUTPUT, "transform_fn", "saved_model.pb")]
    needed += [join_uri(transform_dir, TRANSFORMED_EXAMPLES, f"{s}.tfrecord.gz") for s in SPLITS]
    missing = [p for p in needed if not storage.exists(p)]
    if missing:
        raise TrainingError(f"transform graph {transform_dir} is incomplete, missing: {missing}")
    storage.makedirs(out_dir)
    request = {
        "config": config.model_dump(mode="json"),
        "transform_dir": transform_dir,
        "out_dir": out_dir,
        "examples_dir": examples_dir,
        "parity_rows": parity_rows,
        "parity_tolerance": parity_tolerance,
    }
    try:
        result = run_child(WORKER_MODULE, request, what="trainer", timeout=timeout)
    except ChildError as e:
        raise TrainingError(str(e)) from None
    outputs = [
        join_uri(out_dir, SERVING_MODEL, "saved_model.pb"),
        join_uri(out_dir, TFLITE_MODEL),
        join_uri(out_dir, TFLITE_PREPROCESSING),
        join_uri(out_dir, TRAINING_INFO),
    ]
    missing = [p for p in outputs if not storage.exists(p)]
    if missing:
        raise TrainingError(f"trainer worker reported success but outputs are missing: {missing}")
    return TrainingResult(
        out_dir=out_dir,
        serving_model=join_uri(out_dir, SERVING_MODEL),
        tflite_model=join_uri(out_dir, TFLITE_MODEL),
        logs_dir=join_uri(out_dir, LOGS),
        metrics=result["metrics"],
        rows=result["rows"],
        epochs_run=result["epochs_run"],
        best_epoch=result["best_epoch"],
        tflite_parity=result["tflite_parity"],
        durations_s=result["durations_s"],
        seconds=round(time.monotonic() - started, 3),
        worker_exit_code=result["worker_exit_code"],
        worker_peak_rss_mb=result.get("worker_peak_rss_mb"),
    )


def run(
    config: PlatformConfig,
    transform_dir: str,
    out_dir: str,
    *,
    pipeline: str,
    run_id: str,
    model_name: str | None = None,
    enable_cache: bool = True,
    **kwargs,
) -> TrainingResult:
    """run_training + the MLMD record: TransformGraph and transformed Examples in; Model out."""
    from dataclasses import asdict

    from mlops.metadata.store import ArtifactRef
    from mlops.steps import run_cached

    result_dict, cached = run_cached(
        config,
        COMPONENT,
        CODE_VERSION,
        sections=["dataset", "transform", "model"],
        inputs={"transform_graph": transform_dir, "examples": kwargs.get("examples_dir") or ""},
        outputs={"model": out_dir},
        params={},
        work=lambda: asdict(run_training(config, transform_dir, out_dir, **kwargs)),
        enabled=enable_cache,
    )
    result = TrainingResult(**{**result_dict, "cached": cached})
    graph = ArtifactRef("TransformGraph", transform_dir)
    transformed = ArtifactRef(
        "Examples", join_uri(transform_dir, TRANSFORMED_EXAMPLES), properties={"split_names": json.dumps(list(SPLITS))}
    )
    model = ArtifactRef(
        "Model",
        out_dir,
        properties={
            "name": model_name or config.project,
            "content_hash": model_content_hash(out_dir),  # = the registry manifest's hash of these files
            "metrics": json.dumps(result.metrics, sort_keys=True),
        },
    )
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs={"transform_graph": [graph], "examples": [transformed]},
        outputs={"model": [model]},
        properties={"code_version": CODE_VERSION},
        state="CACHED" if cached else "COMPLETE",
    )
    return result


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"transform_graph", "examples"}; outputs {"model"}."""
    from dataclasses import asdict

    result = run(
        config,
        inputs["transform_graph"].path,
        outputs["model"].path,
        pipeline=context.pipeline,
        run_id=context.run_id,
        examples_dir=inputs["examples"].path,
        enable_cache=context.enable_cache,
    )
    return StepResult(values=asdict(result), cached=result.cached)
