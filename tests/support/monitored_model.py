"""A model version with the training reference a monitoring run needs, and payload logs of it,
without running the training pipeline: the tiny SavedModel (tests.support.serving_models) registered
as flights@1 (production) with the lineage a training run records in ML Metadata (examples,
statistics, schema), and windows of rows logged by serving's PayloadLogger as the model server
would (components/monitor tests, bench/monitoring.py)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd


def record_training_lineage(
    config, store, run_id: str, examples_dir: str, stats_dir: str, schema_dir: str, model_dir: str
):
    from mlops.metadata.store import ArtifactRef

    run = store.run_context("training", run_id)
    examples, statistics = ArtifactRef("Examples", examples_dir), ArtifactRef("Statistics", stats_dir)
    schema, anomalies = ArtifactRef("Schema", schema_dir), ArtifactRef("Anomalies", f"{examples_dir}-anomalies")
    graph, model = ArtifactRef("TransformGraph", f"{examples_dir}-transform"), ArtifactRef("Model", model_dir)
    store.record_execution(run, "statistics_gen", {"examples": [examples]}, {"statistics": [statistics]})
    store.record_execution(run, "schema_gen", {"statistics": [statistics]}, {"schema": [schema]})
    store.record_execution(
        run, "example_validator", {"statistics": [statistics], "schema": [schema]}, {"anomalies": [anomalies]}
    )
    store.record_execution(
        run,
        "transform",
        {"examples": [examples], "schema": [schema], "anomalies": [anomalies]},
        {"transform_graph": [graph]},
    )
    store.record_execution(run, "trainer", {"examples": [examples], "transform_graph": [graph]}, {"model": [model]})


def train_reference(config, root: str, model_dir: str, frame: pd.DataFrame) -> None:
    """Registers model_dir as flights@1 (production), trained on `frame` (the tiny model's inputs):
    its examples, TFDV statistics and schema, and the lineage a training run records."""
    import tensorflow_data_validation as tfdv

    from mlops.metadata.store import open_store
    from mlops.registry.lineage import record_registration
    from mlops.registry.store import ModelRegistry
    from mlops.validation.schema import apply_comparators, ensure_environments, write_schema
    from mlops.validation.statistics import compute_statistics, write_statistics
    from tests.support.serving_models import register, tiny_probability

    frame = frame.copy()
    frame["is_delayed"] = (np.random.default_rng(2).random(len(frame)) < tiny_probability(frame)).astype(np.int64)
    examples_dir, stats_dir, schema_dir = (f"{root}/training/{k}" for k in ("examples", "statistics", "schema"))
    os.makedirs(examples_dir)
    frame.to_parquet(f"{examples_dir}/train.parquet", index=False)
    stats = compute_statistics(frame, config, "train")
    write_statistics(stats, f"{stats_dir}/train.stats.pb")
    schema = apply_comparators(ensure_environments(tfdv.infer_schema(stats), "is_delayed"), config)
    write_schema(schema, f"{schema_dir}/schema.pbtxt")
    store = open_store(config)
    record_training_lineage(config, store, "train-1", examples_dir, stats_dir, schema_dir, model_dir)
    version = register(root, "flights", model_dir, metrics={"auc": 0.66})
    record_registration(
        config, version, run_id="train-1", pipeline="training", model_artifact_uri=model_dir, store=store
    )
    ModelRegistry(root).promote("flights", version.version, "production", reason="test")


def log_window(
    config,
    version: str,
    rows: dict,
    start: pd.Timestamp,
    predictions=None,
    source: str = "online",
    *,
    calls: int = 10,
    seconds: float = 3000,
    flush_rows: int = 10**6,
) -> None:
    """Writes rows as the model server would: `calls` logged calls spread evenly over `seconds`
    after `start` (predictions: the tiny model's unless given), a file per `flush_rows` rows."""
    from serving.payload_log import ParquetSink, PayloadLogger, payload_log_root
    from tests.support.serving_models import tiny_probability

    n = len(rows["hour"])
    predictions = tiny_probability(rows) if predictions is None else predictions
    logger = PayloadLogger(
        ParquetSink(payload_log_root(config)), flush_rows=flush_rows, flush_seconds=60, queue_size=2 * n
    )
    for i, chunk in enumerate(np.array_split(np.arange(n), calls)):
        logger.log(
            model="flights",
            version=version,
            source=source,
            request_ids=[f"r{version}-{start.value}-{j}" for j in chunk],
            features={k: np.asarray(v)[chunk] for k, v in rows.items()},
            predictions=np.asarray(predictions, dtype=np.float32)[chunk],
            timestamp=start.timestamp() + i * seconds / calls,
        )
    logger.close()
    assert logger.stats()["written_rows"] == n
