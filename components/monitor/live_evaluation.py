"""Continuous evaluation: logged predictions joined with labels that arrive later.

    evaluate(config, "flights@production", labels="flights@2013-04", start, end, out_dir, ...)

Labels (`--labels`): a dataset version id, NAME@SPAN (or NAME@SPAN:SPAN) of the dataset
repository (an ingested span is the label source of flights: a flight's label is known once it
has left), or a parquet/CSV file (URI) with the label column (the config's `dataset.label.column`)
and the join key, optionally `label_time` (when each label arrived).

The join (one prediction row = one payload-log row of the selected version in [start, end)):
  * by `request_id` when the labels have that column (the client's id, what the server logs);
  * else by KEYS (`--keys`, default the dataset's entity keys + event timestamp: for flights
    origin, dest, carrier, tailnum, time_hour, unique over the whole dataset). Every key must be
    in the labels AND in the payload logs: the model server, batch and stream log the request's
    entity keys and event time beside the model inputs (serving.payload_log), the event time as a
    UTC timestamp; a request that did not send them is an unmatched prediction. Logs written
    before keys were logged lack the columns (the error names them). The model inputs alone are
    NOT a key: (origin, dest, carrier, month, hour) is shared by 99.5% of flights, all 19 inputs by 1%.
Keys are compared as UTC times (a key whose label values are times), float32 numbers (what the
server logged) or text.

Counted, never silently dropped:
  * predictions without a label (`unmatched_predictions`: labels still to come);
  * duplicate labels, one rule: the LAST label wins (latest `label_time`; in source order when
    equal or absent); the superseded rows are `duplicate_labels`;
  * labels without a value (NaN) and labels that match no prediction in the window;
  * late labels: matched labels that arrived after the evaluated window closed; they are used (a
    window is the predictions' time, so a late label still counts for its prediction's window).
Label lag = label_time - prediction time (a dataset version's labels arrived when it was ingested:
its manifest's created_at), reported as quantiles.

Metrics are the Evaluator's (binary_metrics, slice_metrics: one definition of AUC), overall, per
sub-window (`--every`) and per configured slice (calibration per slice over time), compared with
the version's offline evaluation (registry manifest) and with the CBPE estimate of the monitoring
run of the same window when one is recorded. Concept drift: DDM on the 0/1 error stream in
prediction-time order (mlops.monitoring.concept_drift).

Writes live.json, report.html and metrics.prom (or pushes to the Pushgateway, job
mlops_live_evaluation), all at once, and records ONE ML Metadata execution `live_evaluation`
(inputs: the payload window, the labels, the model; output: mlops.LiveEvaluation). Bad input
(labels with no join key or no label column, labels of another dataset, an empty join) raises
before anything is written or recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import time

import numpy as np
import pandas as pd

from components.evaluator.executor import DECISION_THRESHOLD, binary_metrics, slice_metrics
from components.monitor import output
from components.monitor.executor import PIPELINE, EmptyWindow, parse_duration, read_window
from mlops import storage
from mlops.config import PlatformConfig, join_uri
from mlops.errors import InvalidInput, NotFound
from mlops.monitoring.concept_drift import DDM
from mlops.steps import source_version

COMPONENT = "live_evaluation"
CODE_VERSION = source_version(COMPONENT, __name__)
JOB = "mlops_live_evaluation"
RESULT_FILE, REPORT_FILE = "live.json", "report.html"
REQUEST_ID, LABEL, LABEL_TIME, PREDICTED_AT = "request_id", "label", "label_time", "timestamp"
COMPARED = ("auc", "precision", "recall", "binary_accuracy", "calibration", "mean_label", "mean_prediction")
LAG_QUANTILES = (0.5, 0.95, 1.0)


class LabelSourceError(InvalidInput):
    """Labels that cannot be joined: no join key, no label column, another dataset, bad values."""


class EmptyJoin(NotFound):
    """No label matches a prediction of the window."""


# ---- labels ----------------------------------------------------------------------------------
def _read_file(uri: str) -> pd.DataFrame:
    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as f:
        if uri.endswith(".csv"):
            return pd.read_csv(f)
        if uri.endswith(".parquet"):
            return pd.read_parquet(f)
    raise LabelSourceError(f"--labels {uri}: a label file is .parquet or .csv")


def load_labels(config: PlatformConfig, spec: str) -> tuple[pd.DataFrame, list[dict]]:
    """(label frame with a `label_time` column, the sources as MLMD Dataset properties + uri)."""
    from mlops.datasets.repository import DatasetRepository

    label_column = config.dataset.label.column
    repo = DatasetRepository(config.artifact_root)
    if "://" not in spec and "@" in spec:
        name, selector = spec.split("@", 1)
        versions = repo.resolve(name, selector)
    elif "://" not in spec and "/" not in spec and repo.find(spec) is not None:
        versions = [repo.find(spec)]
    elif storage.exists(spec):
        frame = _read_file(spec)
        if label_column not in frame.columns:
            raise LabelSourceError(
                f"--labels {spec}: no label column {label_column!r} (dataset.label.column); "
                f"it has {list(frame.columns)}"
            )
        frame = frame.rename(columns={label_column: LABEL})
        unknown = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")  # lag and lateness unknown
        frame[LABEL_TIME] = pd.to_datetime(frame[LABEL_TIME], utc=True) if LABEL_TIME in frame else unknown
        return frame, [{"uri": spec, "name": spec.rstrip("/").rsplit("/", 1)[-1]}]
    else:
        raise NotFound(f"--labels {spec!r}: not a dataset version id, NAME@SPAN or an existing .parquet/.csv file")
    frames, sources = [], []
    for v in versions:
        if v.name != config.dataset.name:
            raise LabelSourceError(
                f"--labels {spec}: dataset {v.name!r}, but the model is trained on dataset {config.dataset.name!r}"
            )
        columns = [c["name"] for c in v.manifest.get("columns", [])]
        if label_column not in columns:
            raise LabelSourceError(f"--labels {spec}: version {v.id} has no label column {label_column!r}")
        frame = repo.load(v).rename(columns={label_column: LABEL})
        frame[LABEL_TIME] = pd.Timestamp(v.created_at).tz_convert("UTC")  # the labels arrived when ingested
        frames.append(frame)
        sources.append(
            {"uri": v.uri, "name": v.name, "version_id": v.id, "span": v.span or "", "row_count": len(frame)}
        )
    return pd.concat(frames, ignore_index=True), sources


def join_keys(config: PlatformConfig, labels: pd.DataFrame, predictions: pd.DataFrame, keys: list[str]) -> list[str]:
    if not keys and REQUEST_ID in labels.columns:
        return [REQUEST_ID]
    event_time = config.dataset.event_timestamp
    keys = keys or [*config.dataset.entity_keys, *([event_time] if event_time else [])]
    missing_labels = [k for k in keys if k not in labels.columns]
    if missing_labels:
        raise LabelSourceError(
            f"labels have no join key: no {REQUEST_ID!r} column and not the key column(s) {missing_labels} "
            f"(they have {sorted(c for c in labels.columns if c not in (LABEL, LABEL_TIME))})"
        )
    missing_logs = [k for k in keys if k not in predictions.columns]
    if missing_logs:
        raise LabelSourceError(
            f"the payload logs do not carry the join key column(s) {missing_logs} (they carry "
            f"{sorted(c for c in predictions.columns if c not in ('model', 'version', 'source', 'prediction'))}): "
            "give labels with a request_id column, or --keys from what the logs carry"
        )
    return keys


def _normalised(labels: pd.Series, logged: pd.Series) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_datetime64_any_dtype(labels) or pd.api.types.is_datetime64_any_dtype(logged):
        return pd.to_datetime(labels, utc=True, errors="coerce"), pd.to_datetime(logged, utc=True, errors="coerce")
    if pd.api.types.is_numeric_dtype(labels) and pd.api.types.is_numeric_dtype(logged):
        return labels.astype(np.float32), logged.astype(np.float32)
    return labels.astype(str), logged.astype(str)


def join(predictions: pd.DataFrame, labels: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict]:
    """Every prediction row with its label (NaN: none yet) and the counts of the module doc."""
    preds, labs = predictions.copy(), labels[[*keys, LABEL, LABEL_TIME]].copy()
    for k in keys:
        labs[k], preds[k] = _normalised(labs[k], preds[k])
    values = pd.to_numeric(labs[LABEL], errors="coerce")
    if values.notna().any() and not values[values.notna()].between(0, 1).all():
        raise LabelSourceError(f"labels: column {LABEL!r} has values outside [0, 1] (a binary label is 0 or 1)")
    labs[LABEL] = values
    no_value = int(values.isna().sum())
    labs = labs[values.notna()]
    labs = labs.assign(_order=np.arange(len(labs))).sort_values([LABEL_TIME, "_order"], na_position="first")
    duplicate = labs.duplicated(keys, keep="last")
    labs = labs[~duplicate].drop(columns="_order")
    merged = preds.merge(labs, how="left", on=keys, indicator=True, validate="many_to_one")
    matched = merged["_merge"] == "both"
    label_keys = pd.MultiIndex.from_frame(labs[keys]) if len(keys) > 1 else pd.Index(labs[keys[0]])
    pred_keys = pd.MultiIndex.from_frame(preds[keys]) if len(keys) > 1 else pd.Index(preds[keys[0]])
    counts = {
        "predictions": len(preds),
        "matched": int(matched.sum()),
        "unmatched_predictions": int((~matched).sum()),
        "labels": len(labels),
        "duplicate_labels": int(duplicate.sum()),
        "labels_without_value": no_value,
        "unmatched_labels": int((~label_keys.isin(pred_keys)).sum()),
        "duplicate_prediction_keys": int(preds.duplicated(keys, keep="first").sum()),
    }
    return merged.drop(columns="_merge"), counts


# ---- metrics ---------------------------------------------------------------------------------
def _metrics(frame: pd.DataFrame) -> dict:
    return binary_metrics(frame[LABEL].to_numpy(), frame["prediction"].to_numpy(dtype=np.float64))


def _slices(config: PlatformConfig, frame: pd.DataFrame) -> list[dict]:
    slices = [s for s in config.evaluation.slices if all(c in frame.columns for c in s)]
    out = slice_metrics(frame, LABEL, {"live": "prediction"}, slices) if len(frame) else []
    return [{"slice": s["slice"], "metrics": s["metrics"]} for s in out]


def _lag(seconds: pd.Series) -> dict:
    s = seconds.dropna()
    if s.empty:
        return {"known": 0}
    return {"known": int(s.size), **{f"q{q:g}": float(s.quantile(q)) for q in LAG_QUANTILES}}


def _windows(start, end, every: str) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    if not every:
        return [(start, end)]
    step = parse_duration(every, "--every")
    edges = list(pd.date_range(start, end, freq=step)) + [end]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def compare(live: dict, offline: dict) -> dict:
    return {
        m: {
            "live": live.get(m),
            "offline": offline.get(m),
            "delta": live[m] - offline[m] if live.get(m) is not None and offline.get(m) is not None else None,
        }
        for m in COMPARED
    }


def cbpe_of_window(config: PlatformConfig, selector: str, version: str, start, end) -> dict | None:
    """The CBPE estimates of the newest monitoring run recorded for exactly this window."""
    from mlops.metadata.store import open_store

    runs = [
        a
        for a in open_store(config).list_artifacts("DriftResult")
        if a.properties.get("start") == start.isoformat() and a.properties.get("end") == end.isoformat()
    ]
    for run in sorted(runs, key=lambda a: a.id, reverse=True):
        path = join_uri(run.uri, "result.json")
        if not storage.exists(path):
            continue
        for v in storage.read_json(path).get("versions", []):
            if str(v.get("version")) == version and "estimated_performance" in v:
                return {"monitoring_run": run.uri, "metrics": v["estimated_performance"]["metrics"]}
    return None


def _against_cbpe(live: dict, cbpe: dict | None) -> dict | None:
    if cbpe is None:
        return None
    from components.monitor.cbpe import compare

    return {"monitoring_run": cbpe["monitoring_run"], **compare(live, cbpe["metrics"])}


# ---- the run ---------------------------------------------------------------------------------
def evaluate(
    config: PlatformConfig,
    model: str,
    labels: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    out_dir: str,
    *,
    run_id: str,
    keys: list[str] | None = None,
    every: str = "",
    pipeline: str = PIPELINE,
    log=print,
) -> dict:
    from mlops.registry.store import ModelRegistry

    t0 = time.perf_counter()
    windows = _windows(start, end, every)  # a bad --every fails before any read
    mv = ModelRegistry.from_config(config).resolve(model or config.project)
    rows = read_window(config, mv.name, start, end)
    version = str(mv.version)
    other = {str(k): int(n) for k, n in rows.loc[rows["version"] != version, "version"].value_counts().items()}
    rows = rows[rows["version"] == version].reset_index(drop=True)
    if rows.empty:
        raise EmptyWindow(
            f"no payload logs of {mv.selector} in the window {start.isoformat()} .. {end.isoformat()}: "
            f"it holds rows of version(s) {', '.join(sorted(other))} only"
        )
    label_frame, sources = load_labels(config, labels)
    keys = join_keys(config, label_frame, rows, list(keys or []))
    joined, counts = join(rows, label_frame, keys)
    if not counts["matched"]:
        raise EmptyJoin(
            f"no label of --labels {labels} matches a prediction of {mv.selector} in {start.isoformat()} .. "
            f"{end.isoformat()} by {keys}: {counts['predictions']} predictions, {counts['labels']} labels"
        )
    joined["label_lag_seconds"] = (joined[LABEL_TIME] - joined[PREDICTED_AT]).dt.total_seconds()
    matched = joined[joined[LABEL].notna()].sort_values(PREDICTED_AT, kind="stable").reset_index(drop=True)
    log(f"monitor evaluate: {mv.selector}: {counts['matched']:,} of {counts['predictions']:,} predictions labelled")

    per_window = []
    for a, b in windows:
        part = matched[(matched[PREDICTED_AT] >= a) & (matched[PREDICTED_AT] < b)]
        total = int(((joined[PREDICTED_AT] >= a) & (joined[PREDICTED_AT] < b)).sum())
        per_window.append(
            {
                "start": a.isoformat(),
                "end": b.isoformat(),
                "predictions": total,
                "matched": len(part),
                "metrics": _metrics(part) if len(part) else None,
                "slices": _slices(config, part),
            }
        )
    counts["late_labels"] = int((matched[LABEL_TIME] > end).sum())
    overall = _metrics(matched)
    errors = ((matched["prediction"].to_numpy(dtype=np.float64) > DECISION_THRESHOLD) != (matched[LABEL] > 0.5)).astype(
        np.float64
    )
    drift = DDM().run(errors).to_json()
    drift["changes_at"] = [matched[PREDICTED_AT].iloc[i].isoformat() for i in drift["changes"]]
    finished = time.time()
    result = {
        "model": mv.selector,
        "model_name": mv.name,
        "version": version,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "every": every or None},
        "labels": {"spec": labels, "sources": sources, "join_keys": keys},
        "counts": counts,
        "other_versions": other,
        "label_lag_seconds": _lag(matched["label_lag_seconds"]),
        "metrics": overall,
        "slices": _slices(config, matched),
        "windows": per_window,
        "offline": compare(overall, mv.metrics),
        "cbpe": _against_cbpe(overall, cbpe_of_window(config, mv.selector, version, start, end)),
        "concept_drift": drift,
        "run_id": run_id,
        "finished_at": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "finished_at_epoch": finished,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    publish(config, result, mv, out_dir, pipeline=pipeline, run_id=run_id)
    return result


def registry_for(result: dict):
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    model, version = result["model_name"], result["version"]
    live = Gauge(
        "mlops_live_metric", "Live metric on labelled predictions", ["model", "version", "metric"], registry=registry
    )
    offline = Gauge(
        "mlops_live_offline_metric",
        "The version's offline evaluation",
        ["model", "version", "metric"],
        registry=registry,
    )
    sliced = Gauge(
        "mlops_live_slice_metric", "Live metric per slice", ["model", "version", "slice", "metric"], registry=registry
    )
    rows = Gauge(
        "mlops_live_rows", "Prediction and label counts of the join", ["model", "version", "kind"], registry=registry
    )
    lag = Gauge(
        "mlops_live_label_lag_seconds",
        "Time from prediction to label",
        ["model", "version", "quantile"],
        registry=registry,
    )
    drift = Gauge(
        "mlops_live_concept_drift_detected",
        "1 when DDM signalled a drift on the error stream",
        ["model", "version"],
        registry=registry,
    )
    changes = Gauge("mlops_live_concept_drift_changes", "Drifts DDM signalled", ["model", "version"], registry=registry)
    error_rate = Gauge(
        "mlops_live_error_rate",
        "Share of labelled predictions on the wrong side of 0.5",
        ["model", "version"],
        registry=registry,
    )
    unreliable = Gauge(
        "mlops_live_cbpe_unreliable",
        "1 when a realised metric falls outside its CBPE band (concept drift suspected)",
        ["model", "version"],
        registry=registry,
    )
    finished = Gauge(
        "mlops_live_last_run_timestamp_seconds", "When the live evaluation finished", ["model"], registry=registry
    )
    for m in COMPARED:
        if result["metrics"].get(m) is not None:
            live.labels(model, version, m).set(result["metrics"][m])
        if result["offline"][m]["offline"] is not None:
            offline.labels(model, version, m).set(result["offline"][m]["offline"])
    for s in result["slices"]:
        name = ",".join(f"{k}={v}" for k, v in s["slice"].items())
        for m in ("auc", "calibration"):
            if s["metrics"].get(m) is not None:
                sliced.labels(model, version, name, m).set(s["metrics"][m])
    for kind, n in result["counts"].items():
        rows.labels(model, version, kind).set(n)
    for q, seconds in result["label_lag_seconds"].items():
        if q != "known":
            lag.labels(model, version, q[1:]).set(seconds)
    drift.labels(model, version).set(int(result["concept_drift"]["detected"]))
    changes.labels(model, version).set(len(result["concept_drift"]["changes"]))
    if result["concept_drift"]["error_rate"] is not None:
        error_rate.labels(model, version).set(result["concept_drift"]["error_rate"])
    if result["cbpe"] and result["cbpe"]["reliable"] is not None:
        unreliable.labels(model, version).set(int(not result["cbpe"]["reliable"]))
    finished.labels(model).set(result["finished_at_epoch"])
    return registry


def render(result: dict) -> str:
    def fmt(v):
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    cbpe = result["cbpe"]
    drift = result["concept_drift"]
    verdict = f"DETECTED at {fmt(', '.join(drift['changes_at']))}" if drift["detected"] else "not detected"
    parts = [
        f"<h1>Live evaluation of {html.escape(result['model'])}</h1>",
        f"<p>window {fmt(result['window']['start'])} .. {fmt(result['window']['end'])}; labels "
        f"{fmt(result['labels']['spec'])} joined by {fmt(', '.join(result['labels']['join_keys']))}</p>",
        "<h2>Join</h2>",
        table(["count", "rows"], list(result["counts"].items())),
        table(["label lag (s)", "value"], list(result["label_lag_seconds"].items())),
        "<h2>Live vs offline</h2>",
        table(["metric", "live", "offline", "delta"], [(m, *c.values()) for m, c in result["offline"].items()]),
        "<h2>Live vs estimated (CBPE)</h2>",
        table(
            ["metric", "live", "estimate", "low", "high", "within band"],
            [(m, *c.values()) for m, c in cbpe["metrics"].items()],
        )
        if cbpe
        else "<p>no monitoring run of this window</p>",
        f"<p><b>{fmt(cbpe['signal'])}</b></p>" if cbpe and cbpe.get("signal") else "",
        "<h2>Per window</h2>",
        table(
            ["start", "end", "predictions", "labelled", "AUC", "calibration"],
            [
                (
                    w["start"],
                    w["end"],
                    w["predictions"],
                    w["matched"],
                    *((w["metrics"] or {}).get(m) for m in ("auc", "calibration")),
                )
                for w in result["windows"]
            ],
        ),
        "<h2>Calibration per slice over time</h2>",
        table(
            ["window start", "slice", "examples", "AUC", "calibration"],
            [
                (
                    w["start"],
                    ", ".join(f"{k}={v}" for k, v in s["slice"].items()),
                    s["metrics"]["example_count"],
                    s["metrics"]["auc"],
                    s["metrics"]["calibration"],
                )
                for w in result["windows"]
                for s in w["slices"]
            ],
        ),
        "<h2>Concept drift (DDM on the error stream)</h2>",
        f"<p>error rate {fmt(drift['error_rate'])}; drift {verdict}</p>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Live evaluation</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def publish(config: PlatformConfig, result: dict, mv, out_dir: str, *, pipeline: str, run_id: str) -> None:
    """Files, metrics, then the MLMD record, all or nothing (components/monitor/output.py)."""
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step

    body = output.result_json(result)
    window = result["window"]

    def record() -> None:
        rows = result["counts"]["predictions"] + sum(result["other_versions"].values())
        inputs = {
            "payload_window": [output.payload_window_ref(config, mv.name, window, rows)],
            "labels": [
                ArtifactRef("Dataset", s["uri"], properties={k: v for k, v in s.items() if k != "uri"})
                for s in result["labels"]["sources"]
            ],
            "model": [output.pushed_model_ref(mv)],
        }
        outputs = {
            "live_evaluation": [
                ArtifactRef(
                    "LiveEvaluation",
                    out_dir,
                    properties={
                        "model": result["model"],
                        "start": window["start"],
                        "end": window["end"],
                        "matched_rows": result["counts"]["matched"],
                        "content_hash": hashlib.sha256(body.encode()).hexdigest()[:16],
                    },
                )
            ]
        }
        record_step(
            config,
            pipeline=pipeline,
            run_id=run_id,
            component=COMPONENT,
            inputs=inputs,
            outputs=outputs,
            properties={"code_version": CODE_VERSION},
        )

    files = {RESULT_FILE: body.encode(), REPORT_FILE: render(result).encode()}
    output.publish(config, out_dir, files, registry_for(result), job=JOB, model=mv.name, record=record)


def new_run_id() -> str:
    import uuid

    return f"live-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
