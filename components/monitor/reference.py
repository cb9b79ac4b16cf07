"""A model version's training reference, found through the registry and ML Metadata, and the
newest serving statistics of a model (the training pipeline's skew check reads them).

The lineage of a registered version (mlops.registry.lineage) walks pusher <- trainer <- transform
<- example_validator / schema_gen / statistics_gen / example_gen. Its training reference is:
  * the Statistics the version was trained behind (train split: <dir>/train.stats.pb),
  * the Schema (<dir>/schema.pbtxt: environments, domains, comparators),
  * the raw Examples ExampleGen wrote (<dir>/train.parquet): a seeded sample of it is the
    reference for the per-feature tests, and the model's predictions on that sample are the
    reference of the prediction drift (computed once per version, kept under
    <artifact_root>/monitoring/reference/<name>/<version>/),
  * the evaluation metrics in the registry manifest (what CBPE's estimates are read against).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops import artifacts, storage
from mlops.config import PlatformConfig, join_uri
from mlops.errors import NotFound

SERVING_SPLIT = "serving"
REFERENCE_FILE = "reference.parquet"
PREDICTION = "prediction"


class NoTrainingReference(NotFound):
    """A model version whose training statistics, schema or examples cannot be found."""


@dataclass
class TrainingReference:
    selector: str  # "<name>@<version>"
    version_uri: str
    statistics_uri: str  # the train split's .stats.pb
    schema_uri: str
    examples_dir: str
    features: dict[str, str]  # model input -> numeric | categorical, from the manifest and config
    metrics: dict = field(default_factory=dict)  # the evaluation of the version (registry manifest)
    serving_model_uri: str | None = None
    output_key: str = "probability"


def _lineage_artifacts(config: PlatformConfig, selector: str) -> list:
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.lineage import lineage_for

    try:
        return [step.artifact for step in lineage_for(config, selector)]
    except RegistryNotFound as e:
        raise NoTrainingReference(f"{selector} has no training reference: {e}") from None


def training_reference(config: PlatformConfig, version) -> TrainingReference:
    """The reference of a registry ModelVersion; NoTrainingReference names what is missing."""
    from mlops.monitoring.drift import CATEGORICAL, NUMERIC

    found = _lineage_artifacts(config, version.selector)
    where = f"the lineage of {version.selector} in ML Metadata ({config.metadata.backend})"

    def first(type_name: str, has_file: str):
        for a in found:
            if a.type_name == f"mlops.{type_name}" and storage.exists(join_uri(a.uri, has_file)):
                return a.uri
        raise NoTrainingReference(
            f"{version.selector} has no training reference: no mlops.{type_name} with {has_file} in {where}"
        )

    statistics_dir = first("Statistics", f"train{artifacts.STATS_SUFFIX}")
    schema_dir = first("Schema", artifacts.SCHEMA_FILE)
    examples_dir = first("Examples", "train.parquet")
    # the version's own inputs (its manifest, as the Trainer exported them), else the config's
    if version.features:
        features = {f["name"]: (CATEGORICAL if f.get("dtype") == "string" else NUMERIC) for f in version.features}
    else:
        features = {f.name: f.kind.value for f in artifacts.model_features(config)}
    return TrainingReference(
        selector=version.selector,
        version_uri=version.uri,
        statistics_uri=artifacts.stats_path(statistics_dir, "train"),
        schema_uri=join_uri(schema_dir, artifacts.SCHEMA_FILE),
        examples_dir=examples_dir,
        features=features,
        metrics=version.metrics,
        serving_model_uri=version.serving_model_uri,
        output_key=version.manifest.get("output_key") or "probability",
    )


def reference_frame(config: PlatformConfig, ref: TrainingReference) -> pd.DataFrame:
    """A seeded sample of the training split (model inputs) with the model's predictions on it.
    Computed once per version and reference size, then read back (the model is not loaded again)."""
    name, version = ref.selector.split("@")
    rows = config.monitoring.reference_rows
    cached = join_uri(config.artifact_root, "monitoring", "reference", name, version, f"{rows}-{REFERENCE_FILE}")
    if storage.exists(cached):
        fs, path = storage.fs_and_path(cached)
        with fs.open(path, "rb") as f:
            return pd.read_parquet(f)
    frame = artifacts.read_split(ref.examples_dir, "train", columns=list(ref.features))
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=config.split.seed)
    frame = frame.reset_index(drop=True)
    frame[PREDICTION] = predict(ref, frame)
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.write_bytes_atomic(cached, buffer.getvalue())
    return frame


def predict(ref: TrainingReference, frame: pd.DataFrame) -> np.ndarray:
    """The version's own predictions (its SavedModel's serving signature) on raw feature rows."""
    from serving.predictor import load_predictor

    if not ref.serving_model_uri:
        raise NoTrainingReference(f"{ref.selector} has no serving_model in the registry: no reference predictions")
    predictor = load_predictor(storage.local_path(ref.version_uri), "savedmodel", output_key=ref.output_key)
    rows = {}
    for name, kind in ref.features.items():
        column = frame[name].to_numpy()
        rows[name] = column.astype(object) if kind == "categorical" else column.astype(np.float32)
    return np.asarray(predictor.predict(rows), dtype=np.float64).reshape(len(frame), -1)[:, -1]


def newest_serving_statistics(config: PlatformConfig, selector: str | None = None) -> str | None:
    """The newest serving statistics (.stats.pb) recorded by a monitoring run for the version
    `selector` resolves to (default: the project's production model); None when that model, alias
    or any such statistics do not exist (a first training run has nothing to compare with)."""
    from mlops.metadata.store import open_store
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import PRODUCTION, ModelRegistry

    try:
        version = ModelRegistry.from_config(config).resolve(selector or f"{config.project}@{PRODUCTION}")
    except RegistryNotFound:
        return None
    candidates = [
        a
        for a in open_store(config).list_artifacts("Statistics")
        if a.properties.get("split") == SERVING_SPLIT and a.properties.get("model") == version.selector
    ]
    for artifact in sorted(candidates, key=lambda a: a.id, reverse=True):
        if storage.exists(artifact.uri):
            return artifact.uri
    return None
