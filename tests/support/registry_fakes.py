"""Registry and ML Metadata records without TensorFlow: a Trainer output directory with fake
bytes, a blessed registration of it, and a training run's lineage as the pipeline records it."""

from __future__ import annotations

import json
from pathlib import Path

from mlops import artifacts
from mlops.config import ColumnKind, TaskType
from mlops.registry import ModelRegistry

FEATURES = [
    artifacts.RawFeature("distance", ColumnKind.numeric),
    artifacts.RawFeature("carrier", ColumnKind.categorical),
]


def make_model_dir(base: Path, tag: str = "m", tflite: bool = True) -> Path:
    """A Trainer output dir as the artifact contract describes it (fake bytes, no TensorFlow)."""
    d = base / f"trainer-{tag}"
    (d / "serving_model" / "variables").mkdir(parents=True)
    (d / "serving_model" / "saved_model.pb").write_bytes(b"pb-" + tag.encode())
    (d / "serving_model" / "variables" / "variables.index").write_bytes(b"idx")
    if tflite:
        (d / "model.tflite").write_bytes(b"tflite-" + tag.encode())
    (d / "training.json").write_text(json.dumps({"epochs": 1}))
    (d / "logs").mkdir()
    (d / "logs" / "events.out").write_bytes(b"tensorboard")  # not part of a registered version
    return d


def register(registry: ModelRegistry, model_dir, name: str = "flights", blessed: bool = True, **overrides):
    kwargs = dict(
        metrics={"auc": 0.71, "example_count": 1000},
        blessing={"blessed": blessed, "reason": "auc 0.71 >= 0.65"},
        dataset_versions=["flights-abc123def456"],
        config_hash="cfg123",
        git_commit="deadbeef",
        task=TaskType.binary_classification,
        output_key="probability",
        features=FEATURES,
    )
    kwargs.update(overrides)
    return registry.register(name, str(model_dir), **kwargs)


def record_training_run(store, run_id: str, root: str) -> dict[str, str]:
    """example_gen -> transform -> trainer -> evaluator, as the training pipeline records them."""
    from mlops.metadata.store import ArtifactRef

    run = store.run_context("training", run_id)
    uri = {k: f"{root}/runs/{run_id}/{k}" for k in ("examples", "transform", "model", "evaluation", "blessing")}
    dataset = ArtifactRef(
        "Dataset",
        f"{root}/datasets/flights/versions/flights-abc123def456",
        name="flights-abc123def456",
        properties={"version_id": "flights-abc123def456"},
    )
    examples = ArtifactRef("Examples", uri["examples"])
    graph = ArtifactRef("TransformGraph", uri["transform"])
    model = ArtifactRef("Model", uri["model"], properties={"metrics": {"auc": 0.71}})
    store.record_execution(run, "example_gen", {"dataset": [dataset]}, {"examples": [examples]})
    store.record_execution(run, "transform", {"examples": [examples]}, {"transform_graph": [graph]})
    store.record_execution(run, "trainer", {"examples": [examples], "transform_graph": [graph]}, {"model": [model]})
    store.record_execution(
        run,
        "evaluator",
        {"model": [model], "examples": [examples]},
        {
            "evaluation": [ArtifactRef("ModelEvaluation", uri["evaluation"])],
            "blessing": [ArtifactRef("ModelBlessing", uri["blessing"], properties={"blessed": 1})],
        },
    )
    return uri
