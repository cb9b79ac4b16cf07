"""Real flights for the monitoring proof: a model trained on January-March 2013 by the training
pipeline's own steps, flights replayed through the prediction path with payload logging on, and
labels taken from ingested spans.

* `train_q1_model(artifact_root)`: a sample of January-March flights (features joined as
  tests.support.reference_data joins them) -> StatisticsGen -> SchemaGen -> ExampleValidator ->
  Transform -> Trainer (each step's `run`, so ML Metadata holds the lineage a training run records),
  the test split scored with the Evaluator's binary_metrics, then registered as the pusher does
  (record_registration) and promoted to production. The flights not sampled are the held-out
  slice of the training months.
* `flight_ids(frame)`: a flight's identity (time_hour/origin/carrier/tailnum, unique over the
  dataset), sent as the request id of its prediction so labels join exactly.
* `replay(config, frame)`: the rows through serving's FeatureEnricher (the request checks; every
  feature-store feature sent by the caller, so no online read) and the registered predictor, logged
  by a PayloadLogger at each flight's scheduled hour.
* `ingest_spans(artifact_root, spans)` + `span_labels(config, spans, uri)`: the spans in the dataset
  repository, then their label column with the flight ids as a label file for `monitor evaluate`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

TRAIN_SPANS = ("2013-01", "2013-02", "2013-03")
SPAN_COLUMN = "_span"  # reference_data.joined_dataset's UTC month of the event
RUN_ID = "train-q1"


@dataclass
class TrainedModel:
    artifact_root: str
    selector: str  # "flights@1", promoted to production
    examples_dir: str
    training_ids: set[str]  # the flights of the examples (all three splits)
    metrics: dict  # the test split, the Evaluator's binary_metrics
    model_dir: str  # the Trainer's output (SavedModel + TFLite), as registered


def flight_ids(frame: pd.DataFrame) -> np.ndarray:
    """time_hour/origin/carrier/tailnum: one flight (unique over all 328,521 flights)."""
    when = pd.to_datetime(frame["time_hour"], utc=True).dt.strftime("%Y-%m-%dT%H:%MZ")
    parts = [when, frame["origin"].astype(str), frame["carrier"].astype(str), frame["tailnum"].astype(str)]
    return (parts[0] + "/" + parts[1] + "/" + parts[2] + "/" + parts[3]).to_numpy(dtype=object)


def months(config, spans) -> pd.DataFrame:
    """Every joined flight of the spans, with its request id."""
    from tests.support.reference_data import joined_dataset

    joined = joined_dataset(config)
    frame = joined[joined[SPAN_COLUMN].isin(list(spans))].reset_index(drop=True)
    return frame.assign(request_id=flight_ids(frame))


# 20,000 rows, 2 epochs: test AUC ~0.72 and probabilities calibrated enough for CBPE on held-out
# flights (6,000 rows x 3 epochs overfits: CBPE then overestimates the held-out AUC by ~0.04).
MODEL_OVERRIDES = {"model.epochs": 2, "model.batch_size": 256, "model.learning_rate": 0.002}


def training_sample(config, rows: int, seed: int) -> pd.DataFrame:
    """The seeded sample of January-March flights the model is trained on."""
    q1 = months(config, TRAIN_SPANS)
    return q1.iloc[np.sort(np.random.default_rng(seed).choice(len(q1), size=rows, replace=False))]


def train_q1_model(
    artifact_root: str, *, rows: int = 20000, seed: int = 7, model_overrides: dict | None = None
) -> TrainedModel:
    """Trains, records and registers flights@1 (production) under artifact_root (see the module doc)."""
    from components.evaluator.executor import binary_metrics
    from components.example_validator import executor as example_validator
    from components.schema_gen import executor as schema_gen
    from components.statistics_gen import executor as statistics_gen
    from components.trainer import executor as trainer
    from components.transform import executor as transform
    from mlops import artifacts
    from mlops.config import load_config
    from mlops.registry.lineage import record_registration
    from mlops.registry.store import PRODUCTION, ModelRegistry
    from serving.predictor import load_predictor
    from tests.support.reference_data import write_examples
    from tests.support.serving_models import FLIGHTS_CONFIG

    config = load_config(
        FLIGHTS_CONFIG,
        overrides={"artifact_root": artifact_root, **(MODEL_OVERRIDES if model_overrides is None else model_overrides)},
    )
    work = os.path.join(artifact_root, "training", RUN_ID)
    step = {"pipeline": "training", "run_id": RUN_ID}
    sample = training_sample(config, rows, seed)
    examples = os.path.join(work, "examples")
    write_examples(config, examples, frame=sample, seed=seed)
    stats, schema, anomalies = (os.path.join(work, k) for k in ("statistics", "schema", "anomalies"))
    statistics_gen.run(config, examples, stats, **step)
    schema_gen.run(config, stats, schema, **step)
    example_validator.run(config, stats, schema, anomalies, **step)
    graph, model_dir = os.path.join(work, "transform"), os.path.join(work, "model")
    transform.run(config, examples, graph, schema_dir=schema, anomalies_dir=anomalies, enable_cache=False, **step)
    trainer.run(config, graph, model_dir, examples_dir=examples, enable_cache=False, **step)

    test = artifacts.read_split(examples, "test")
    features = artifacts.model_features(config)
    predictor = load_predictor(model_dir)
    scores = predictor.predict({f.name: test[f.name].to_numpy() for f in features})
    metrics = binary_metrics(test[config.dataset.label.column].to_numpy(), scores)
    registry = ModelRegistry(config.artifact_root)
    version = registry.register(
        config.project,
        model_dir,
        metrics=metrics,
        blessing={"blessed": True, "reason": "monitoring proof: trained on 2013-01..03"},
        dataset_versions=list(TRAIN_SPANS),
        config_hash=config.content_hash(),
        git_commit="test",
        task=config.dataset.label.task.value,
        output_key=artifacts.OUTPUT_KEY[config.dataset.label.task],
        features=[{"name": f.name, "dtype": f.dtype} for f in features],
    )
    record_registration(config, version, run_id=RUN_ID, pipeline="training", model_artifact_uri=model_dir)
    registry.promote(config.project, version.version, PRODUCTION, reason="monitoring proof")
    return TrainedModel(artifact_root, version.selector, examples, set(sample["request_id"]), metrics, model_dir)


def replay(config, frame: pd.DataFrame, *, source: str = "online") -> np.ndarray:
    """Predicts `frame` (joined flights with request_id) with the production version and logs every
    row at its flight's scheduled hour, as the model server would have; returns the predictions."""
    from mlops.registry.store import PRODUCTION, ModelRegistry
    from serving.enrichment import FeatureEnricher
    from serving.payload_log import ParquetSink, PayloadLogger, payload_log_root
    from serving.predictor import load_predictor

    version = ModelRegistry(config.artifact_root).resolve(f"{config.project}@{PRODUCTION}")
    predictor = load_predictor(version.uri, "savedmodel", output_key=version.manifest.get("output_key"))
    enricher = FeatureEnricher(config, predictor.inputs)
    request = {s.name: frame[s.name].to_numpy() for s in enricher.schema.all if s.name in frame.columns}
    if enricher.time_column in request:  # sent as a client sends it: ISO-8601 text
        request[enricher.time_column] = (
            pd.to_datetime(frame[enricher.time_column], utc=True)
            .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_numpy(dtype=object)
        )
    columns, n = enricher.complete(request)  # every store feature is sent: checks, no online read
    predictions = np.asarray(predictor.predict(columns), dtype=np.float32).reshape(-1)
    logger = PayloadLogger(ParquetSink(payload_log_root(config)), flush_rows=10**7, queue_size=10**7)
    when = pd.to_datetime(frame["time_hour"], utc=True)
    ids = frame["request_id"].to_numpy(dtype=object)
    for _, rows in pd.Series(np.arange(n)).groupby(when.to_numpy()):
        at = rows.to_numpy()
        logger.log(
            model=version.name,
            version=str(version.version),
            source=source,
            request_ids=ids[at],
            features={k: v[at] for k, v in columns.items()},
            predictions=predictions[at],
            timestamp=when.iloc[at[0]].timestamp(),
        )
    logger.close()
    stats = logger.stats()
    if stats["written_rows"] != n:
        raise AssertionError(f"payload log wrote {stats['written_rows']} of {n} rows: {stats}")
    return predictions


def ingest_spans(artifact_root: str, spans) -> None:
    """The spans ingested into the dataset repository (the flights label source)."""
    from tests.support.serving_models import _ingest_spans

    _ingest_spans(artifact_root, spans)


def span_labels(config, spans, uri: str) -> str:
    """The label column of the ingested spans, keyed by flight id (request_id), label_time = when
    the span was ingested, written to `uri` (a .parquet label file for `monitor evaluate`)."""
    from components.monitor.live_evaluation import LABEL, LABEL_TIME, load_labels
    from mlops import storage

    frames = []
    for span in spans:
        labels, _ = load_labels(config, f"{config.dataset.name}@{span}")
        frames.append(labels)
    labels = pd.concat(frames, ignore_index=True)
    out = pd.DataFrame(
        {
            "request_id": flight_ids(labels),
            config.dataset.label.column: labels[LABEL].to_numpy(),
            LABEL_TIME: labels[LABEL_TIME],  # tz-aware UTC
        }
    )
    storage.write_parquet_atomic(out, uri)
    return uri


# ---- the proof: windows replayed, monitored and evaluated ---------------------------------------
@dataclass
class Window:
    name: str
    start: pd.Timestamp  # [start, end) in UTC: the monitoring and evaluation window
    end: pd.Timestamp
    spans: tuple[str, ...]  # the ingested spans its labels come from
    rows: int
    labels_uri: str = ""


def proof_config(trained: TrainedModel):
    """The flights config on the trained model's artifact root (the step config of train_q1_model)."""
    from mlops.config import load_config
    from tests.support.serving_models import FLIGHTS_CONFIG

    return load_config(FLIGHTS_CONFIG, overrides={"artifact_root": trained.artifact_root})


def _sample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    if rows is None or rows >= len(frame):
        return frame
    return frame.sample(n=rows, random_state=seed).sort_values("time_hour", kind="stable").reset_index(drop=True)


def replay_windows(config, trained: TrainedModel, *, rows: int | None = 2000, seed: int = 11) -> dict[str, Window]:
    """Replays (payload logs on) a held-out slice of January-March (flights the training sample does
    not contain), April and July, `rows` flights each (None: all), and writes each window's labels
    from its ingested spans; returns the windows by name: held_out, april, july."""
    q1 = months(config, TRAIN_SPANS)
    windows = {
        "held_out": (_sample(q1[~q1["request_id"].isin(trained.training_ids)], rows, seed), TRAIN_SPANS),
        "april": (_sample(months(config, ["2013-04"]), rows, seed), ("2013-04",)),
        "july": (_sample(months(config, ["2013-07"]), rows, seed), ("2013-07",)),
    }
    ingest_spans(config.artifact_root, [s for _, spans in windows.values() for s in spans])
    out = {}
    for name, (frame, spans) in windows.items():
        replay(config, frame)
        first = pd.Timestamp(f"{spans[0]}-01", tz="UTC")
        end = pd.Timestamp(f"{spans[-1]}-01", tz="UTC") + pd.offsets.MonthBegin(1)
        labels = span_labels(config, spans, os.path.join(config.artifact_root, "labels", f"{name}.parquet"))
        out[name] = Window(name, first, end, spans, len(frame), labels)
    return out


def monitor_and_evaluate(config, window: Window, *, run_id: str, labels_uri: str | None = None) -> tuple[dict, dict]:
    """(the production version's monitoring result of the window, its live evaluation against the
    window's labels), by `mlops monitor run`'s and `mlops monitor evaluate`'s code."""
    from components.monitor.executor import PIPELINE, default_out_dir, monitor

    quiet = lambda *_: None  # noqa: E731
    model = f"{config.project}@production"
    out = default_out_dir(config, config.project, f"{run_id}-monitor")
    result = monitor(
        config, model, window.start, window.end, out, pipeline=PIPELINE, run_id=f"{run_id}-monitor", log=quiet
    )
    [version] = [v for v in result["versions"] if v.get("selected")]
    return version, evaluate_window(config, window, run_id=run_id, labels_uri=labels_uri)


def evaluate_window(config, window: Window, *, run_id: str, labels_uri: str | None = None) -> dict:
    """The production version's live evaluation of the window (`mlops monitor evaluate`'s code),
    beside the CBPE estimate of the newest monitoring run of exactly this window."""
    from components.monitor.executor import default_out_dir
    from components.monitor.live_evaluation import evaluate

    out = default_out_dir(config, config.project, f"{run_id}-live")
    labels = labels_uri or window.labels_uri
    model = f"{config.project}@production"
    return evaluate(config, model, labels, window.start, window.end, out, run_id=f"{run_id}-live", log=lambda *_: None)


def summary(version: dict, live: dict) -> dict:
    """The numbers the proof is about, per window."""
    rounded = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    return {
        "rows": version["rows"],
        "drifted": version["verdict"]["drifted"],
        "drifted_features": version["verdict"]["drifted_features"],
        "features": {
            d["feature"]: {"effect": rounded(d["effect"]), "p_value": d["p_value"], "drifted": d["drifted"]}
            for d in version["feature_drift"]
        },
        "prediction_drift": {
            k: rounded(version["prediction_drift"][k]) if k != "drifted" else version["prediction_drift"][k]
            for k in ("effect", "p_value", "drifted")
        },
        "joint_drift": {
            "score": rounded(version["joint_drift"]["score"]),
            "drifted": version["joint_drift"]["drifted"],
        },
        "labels": {k: live["counts"][k] for k in ("predictions", "matched", "unmatched_predictions")},
        "mean_label": rounded(live["metrics"].get("mean_label")),
        "mean_prediction": rounded(live["metrics"].get("mean_prediction")),
        "cbpe_reference": version["estimated_performance"].get("reference"),
        "cbpe_reliable": live["cbpe"]["reliable"],
        "cbpe_signal": live["cbpe"]["signal"],
        "cbpe_vs_realised": {
            m: {
                k: rounded(v[k]) if k != "within_band" else v[k]
                for k in ("estimate", "low", "high", "live", "within_band")
            }
            for m, v in live["cbpe"]["metrics"].items()
        },
    }
