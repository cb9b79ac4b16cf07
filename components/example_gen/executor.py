"""ExampleGen: dataset version(s) -> training set with Feast features -> deterministic splits.

1. Resolve the dataset selector ("latest", a span, a span range, a version id) in the dataset
   repository.
2. With a Feast feature repo in the config, get the features by point-in-time correct historical
   retrieval (the entity rows carry the event timestamp); without one, the version is the set.
3. Split by a hash of key columns (stable under re-ingest and row order) or by time (the most
   recent rows as test: the honest choice under drift).
4. Encode to the raw-feature contract (mlops.artifacts) and write <split>.parquet per split.
Row counts are checked at every step: no silent loss.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlops import artifacts, storage
from mlops.config import PlatformConfig, SplitSpec, join_uri
from mlops.datasets.repository import DatasetError, DatasetRepository
from mlops.errors import MlopsError
from mlops.steps import Location, RunContext, StepResult, source_version

CODE_VERSION = source_version("example_gen", __name__)


class ExampleGenError(MlopsError):
    pass


@dataclass
class ExamplesInfo:
    dataset_versions: list[str]
    feature_sources: dict[str, str]
    rows_in: int
    splits: dict[str, int]
    label: str
    features: list[dict]
    label_rate: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def split_fraction(df: pd.DataFrame, spec: SplitSpec, event_timestamp: str | None) -> np.ndarray:
    """A number in [0, 1) per row: where the row falls in the split order."""
    if spec.method == "time":
        ranks = df[event_timestamp].rank(method="first").to_numpy()
        return (ranks - 1) / len(df)
    keys = spec.hash_keys or list(df.columns)
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ExampleGenError(f"split.hash_keys: column(s) {missing} not in the dataset")
    # hash_pandas_object ignores hash_key for numeric columns: mix the seed in explicitly.
    salt = np.uint64(int(hashlib.sha256(str(spec.seed).encode()).hexdigest()[:16], 16))
    row_hashes = pd.util.hash_pandas_object(df[keys], index=False).to_numpy()
    hashes = pd.util.hash_array(row_hashes ^ salt)
    return (hashes % np.uint64(1_000_000)).astype(np.float64) / 1_000_000


def assign_splits(df: pd.DataFrame, spec: SplitSpec, event_timestamp: str | None) -> pd.Series:
    frac = split_fraction(df, spec, event_timestamp)
    names = np.where(frac < spec.train, "train", np.where(frac < spec.train + spec.eval, "eval", "test"))
    return pd.Series(names, index=df.index)


def build_training_frame(config: PlatformConfig, selector: str) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    repo = DatasetRepository(config.artifact_root)
    versions = repo.resolve(config.dataset.name, selector)
    df = repo.load(versions)
    dataset_columns = list(df.columns)  # what the split hash may use (not Feast values)
    sources: dict[str, str] = {}
    if config.features is not None:
        from mlops.features import store as feature_store

        rows = len(df)
        df = feature_store.historical_features(config, df)
        if len(df) != rows:
            raise ExampleGenError(f"feature retrieval returned {len(df)} rows for {rows} entity rows")
        sources = {name: entry["version"] for name, entry in feature_store.read_sources(config).items()}
    df.attrs["dataset_columns"] = dataset_columns  # retrieval returns a new frame
    return df, [v.id for v in versions], sources


def run_example_gen(config: PlatformConfig, selector: str, out_dir: str) -> ExamplesInfo:
    t0 = time.perf_counter()
    ds = config.dataset
    try:
        df, version_ids, sources = build_training_frame(config, selector)
    except DatasetError as e:
        raise ExampleGenError(str(e)) from None
    t_join = time.perf_counter()
    features = artifacts.model_features(config)
    try:
        encoded = artifacts.encode_features(df, features)
    except KeyError as e:
        raise ExampleGenError(f"{config.source_path}: dataset.features: {e.args[0]} after feature retrieval") from None
    encoded[ds.label.column] = artifacts.encode_label(df[ds.label.column], ds.label.task)
    # Hash over the dataset's own columns: a feature re-sync must not move rows between splits.
    own = df.attrs.get("dataset_columns") or list(df.columns)
    split = assign_splits(df[own], config.split, ds.event_timestamp)
    counts = {}
    storage.makedirs(out_dir)
    for name in artifacts.SPLITS:
        part = encoded[split == name]
        expected_empty = name == "test" and config.split.test == 0
        if part.empty and not expected_empty:
            raise ExampleGenError(
                f"split {name!r} is empty ({len(df)} rows, ratios train={config.split.train} eval={config.split.eval} "
                f"test={config.split.test}): more data or other ratios are needed"
            )
        storage.write_parquet_atomic(part.reset_index(drop=True), artifacts.split_path(out_dir, name))
        counts[name] = int(len(part))
    if sum(counts.values()) != len(df):
        raise ExampleGenError(f"rows lost in splitting: {len(df)} in, {sum(counts.values())} out")
    label = ds.label.column
    info = ExamplesInfo(
        dataset_versions=version_ids,
        feature_sources=sources,
        rows_in=int(len(df)),
        splits=counts,
        label=label,
        features=[{"name": f.name, "kind": f.kind.value, "dtype": f.dtype} for f in features],
        label_rate={n: float(encoded.loc[split == n, label].mean()) for n in counts if counts[n]},
        seconds={"load_and_join": round(t_join - t0, 3), "split_and_write": round(time.perf_counter() - t_join, 3)},
    )
    storage.write_json_atomic(join_uri(out_dir, artifacts.EXAMPLES_INFO), asdict(info))
    return info


def read_info(examples_dir: str) -> ExamplesInfo:
    return ExamplesInfo(**storage.read_json(join_uri(examples_dir, artifacts.EXAMPLES_INFO)))


def summary(info: ExamplesInfo) -> str:
    return json.dumps({"splits": info.splits, "label_rate": info.label_rate}, sort_keys=True)


def run_step(
    config: PlatformConfig,
    *,
    selector: str,
    out_dir: str,
    out_uri: str,
    pipeline: str,
    run_id: str,
    enable_cache: bool = True,
) -> dict:
    """The step as a pipeline runs it: cached on content, recorded in MLMD."""
    from components.ingest.executor import dataset_ref
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step, run_cached

    repo = DatasetRepository(config.artifact_root)
    try:
        versions = repo.resolve(config.dataset.name, selector)
    except DatasetError as e:
        raise ExampleGenError(str(e)) from None
    feature_versions: list[str] = []
    feature_definitions = None
    if config.features is not None:
        from mlops.features import store as feature_store

        feature_versions = sorted(entry["version"] for entry in feature_store.read_sources(config).values())
        # An edited feature view (a new TTL, another column) changes the training set: a miss.
        feature_definitions = feature_store.definitions_fingerprint(config)

    def work() -> dict:
        return asdict(run_example_gen(config, selector, out_dir))

    result, cached = run_cached(
        config,
        "example_gen",
        CODE_VERSION,
        sections=["dataset", "features", "split"],
        inputs={},
        outputs={"examples": out_dir},
        params={
            "datasets": [v.id for v in versions],
            "feature_sources": feature_versions,
            "feature_definitions": feature_definitions,
        },
        work=work,
        enabled=enable_cache,
    )
    inputs = {"dataset": [dataset_ref(v) for v in versions]}
    if feature_versions:
        inputs["feature_sources"] = [dataset_ref(repo.get(v)) for v in feature_versions]
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component="example_gen",
        inputs=inputs,
        outputs={
            "examples": [
                ArtifactRef(
                    "Examples",
                    out_uri,
                    properties={
                        "split_names": json.dumps(list(result["splits"])),
                        "row_count": result["rows_in"],
                        "span": ",".join(v.span or "full" for v in versions),
                    },
                )
            ]
        },
        properties={"code_version": CODE_VERSION, "cache_key": "hit" if cached else "miss"},
        state="CACHED" if cached else "COMPLETE",
    )
    return {**result, "cached": cached}


def execute(
    config: PlatformConfig,
    inputs: dict[str, Location],
    outputs: dict[str, Location],
    context: RunContext,
    *,
    dataset_selector: str,
) -> StepResult:
    """The step contract (mlops.steps): no artifact inputs (the dataset versions are resolved from
    `dataset_selector` in the repository); outputs {"examples"}."""
    examples = outputs["examples"]
    result = run_step(
        config,
        selector=dataset_selector,
        out_dir=examples.path,
        out_uri=examples.uri,
        pipeline=context.pipeline,
        run_id=context.run_id,
        enable_cache=context.enable_cache,
    )
    cached = result.pop("cached")
    return StepResult(values=result, cached=cached)
