"""The monitoring run: the payload logs of one model in a window, split by model version, each
version against its own training reference (components/monitor/reference.py).

Per version with at least monitoring.min_rows rows:
  * serving statistics (TFDV, mlops.validation.statistics: the same code as StatisticsGen), their
    TFDV skew comparators against the training statistics (the schema's L-inf / JS comparators:
    the schema-level verdict) and their anomalies in the schema's SERVING environment;
  * feature drift with effect sizes and p-values (mlops.monitoring.drift; or alibi-detect, by
    monitoring.detector), prediction drift (the model's outputs vs its outputs on the reference
    sample), one joint-space check (a domain classifier's AUC; alibi: MMD);
  * CBPE estimates of AUC, precision and recall with their band (estimates.py);
  * data quality: missing and out-of-vocabulary rates, rows served with feature-store defaults.

Writes, into the output directory, all at once (built in a hidden staging directory, then moved):
    result.json    every number above, per version
    report.html    self-contained report (inline SVG per feature, no external JS/CSS)
    metrics.prom   the Prometheus exposition (when monitoring.pushgateway_url is not set: pushed otherwise)
    v<N>/serving.stats.pb   the serving statistics of version N
and records ONE ML Metadata execution `monitor`: inputs the payload window and the model versions
(their PushedModel artifacts, so the lineage of each version reaches its monitoring results),
outputs the serving statistics (mlops.Statistics, split "serving", model "<name>@<N>") and the
result (mlops.DriftResult). Bad input (an empty window, a selected version without rows or
without a training reference, payload logs written for another schema) raises before anything is
written or recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
import uuid

import numpy as np
import pandas as pd

from components.monitor import estimates
from components.monitor.reference import (
    PREDICTION,
    SERVING_SPLIT,
    NoTrainingReference,
    TrainingReference,
    reference_frame,
    training_reference,
)
from mlops import storage
from mlops.config import PlatformConfig, join_uri
from mlops.errors import InvalidInput, NotFound, Refused
from mlops.monitoring import drift as D
from mlops.monitoring import prometheus, quality
from mlops.monitoring import report as R
from mlops.steps import Location, RunContext, StepResult
from mlops.validation import anomalies as A
from serving.payload_log import FIXED_COLUMNS

COMPONENT = "monitor"
PIPELINE = "monitoring"
CODE_VERSION = "monitor/1"
RESULT_FILE, REPORT_FILE, METRICS_FILE = "result.json", "report.html", "metrics.prom"
STATS_FILE = "serving.stats.pb"


class EmptyWindow(NotFound):
    """No payload-log rows of the model (or of the selected version) in the window."""


class ForeignPayloads(InvalidInput):
    """Payload logs that do not fit the model version: written for another schema."""


class WindowError(InvalidInput):
    """A --window / --last / monitoring.window value that is not a time range."""


# ---- the window ------------------------------------------------------------------------------
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str) -> pd.Timedelta:
    m = _DURATION.match(text or "")
    if not m:
        raise WindowError(f"{what}: {text!r} is not a duration like 30m, 6h, 2d or 1w")
    return pd.Timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def _timestamp(text: str) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(text.strip())
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def parse_window(window: str = "", last: str = "", default: str = "24h", now=None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) in UTC from "START:END" (ISO dates or times; naive = UTC) or a duration before now."""
    if window and last:
        raise WindowError("give --window START:END or --last DURATION, not both")
    if window:
        # ISO times contain ':' themselves: the separator is the ':' where both sides parse.
        for i in [i for i, ch in enumerate(window) if ch == ":" and _ISO_DATE.match(window[i + 1 :])]:
            start, end = _timestamp(window[:i]), _timestamp(window[i + 1 :])
            if start is not None and end is not None:
                if end <= start:
                    raise WindowError(f"--window {window}: the end is not after the start")
                return start, end
        raise WindowError(
            f"--window {window!r}: use START:END, e.g. 2013-07-01:2013-07-02 or 2013-07-01T06:00:2013-07-01T12:00"
        )
    now = (
        pd.Timestamp(now if now is not None else time.time(), unit="s", tz="UTC")
        if not isinstance(now, pd.Timestamp)
        else now
    )
    span = parse_duration(last or default, "--last" if last else "monitoring.window")
    return now - span, now


# ---- one version -----------------------------------------------------------------------------
def _tfdv_checks(ref: TrainingReference, serving_stats) -> dict:
    import tensorflow_data_validation as tfdv

    from mlops.validation.schema import SERVING, TRAINING, load_schema
    from mlops.validation.statistics import read_statistics

    schema = load_schema(ref.schema_uri)
    envs = set(schema.default_environment)
    training = read_statistics(ref.statistics_uri)
    skew = tfdv.validate_statistics(
        training, schema, environment=TRAINING if TRAINING in envs else None, serving_statistics=serving_stats
    )
    serving = tfdv.validate_statistics(serving_stats, schema, environment=SERVING if SERVING in envs else None)
    return {
        "skew": [{**m.__dict__, "exceeded": m.exceeded} for m in A.measurements(skew, A.SKEW, "train")],
        "anomalies": [a.__dict__ for a in A.rows(serving, A.SERVING, SERVING_SPLIT, exclude_comparators=True)],
        "vocabularies": {
            f.name: set(f.string_domain.value)
            or {v for d in schema.string_domain if d.name == f.domain for v in d.value}
            for f in schema.feature
            if f.HasField("string_domain") or f.domain
        },
    }


def assess_version(
    config: PlatformConfig, ref: TrainingReference, rows: pd.DataFrame, seed: int = 0
) -> tuple[dict, dict, object]:
    """(the version's result, its per-feature plots, its serving statistics)."""
    from mlops.validation.statistics import compute_statistics

    m = config.monitoring
    kinds = ref.features
    reference = reference_frame(config, ref)
    serving_stats = compute_statistics(rows[list(kinds)], config, name=SERVING_SPLIT, sample_rate=1.0)
    tfdv_checks = _tfdv_checks(ref, serving_stats)
    vocabularies = tfdv_checks.pop("vocabularies")
    for name, kind in kinds.items():  # no schema domain: the reference's categories are the vocabulary
        if kind == D.CATEGORICAL and not vocabularies.get(name):
            vocabularies[name] = set(D.present_categorical(reference[name].to_numpy()).tolist())

    features = D.feature_drift(
        reference,
        rows,
        kinds,
        numeric_threshold=m.numeric_wasserstein,
        categorical_threshold=m.categorical_js,
        p_value=m.p_value,
    )
    predictions = rows[PREDICTION].to_numpy(dtype=np.float64)
    prediction = D.numeric_drift(PREDICTION, reference[PREDICTION], predictions, m.prediction_wasserstein, m.p_value)
    if m.detector == "alibi":
        from components.monitor import alibi

        features = alibi.feature_drift(reference, rows, features, m.p_value)
        joint = alibi.mmd(reference, rows, kinds, m.p_value, seed=seed)
    else:
        joint = estimates.domain_classifier(reference, rows, kinds, seed=seed)
        joint["threshold"] = m.domain_auc
        joint["drifted"] = joint["score"] is not None and joint["score"] > m.domain_auc and joint["p_value"] < m.p_value
    cbpe = estimates.cbpe(predictions, seed=seed)
    for metric, value in cbpe.items():
        value["reference"] = ref.metrics.get(metric)
    drifted_features = [d.feature for d in features if d.drifted]
    skewed = sorted({s["feature"] for s in tfdv_checks["skew"] if s["exceeded"]})
    drifted = bool(drifted_features or prediction.drifted or joint["drifted"])
    summary = (
        f"{len(drifted_features)} of {len(features)} features drifted"
        + (f" ({', '.join(drifted_features)})" if drifted_features else "")
        + f"; prediction drift {'yes' if prediction.drifted else 'no'}; joint ({joint['method']}) "
        f"{'yes' if joint['drifted'] else 'no'}; TFDV skew comparators exceeded on {len(skewed)}; "
        f"{len(tfdv_checks['anomalies'])} schema anomalies"
    )
    result = {
        "version": ref.selector.split("@")[1],
        "model": ref.selector,
        "rows": len(rows),
        "sources": {str(k): int(v) for k, v in rows["source"].value_counts().items()} if "source" in rows else {},
        "reference": {"rows": len(reference), "statistics": ref.statistics_uri, "schema": ref.schema_uri},
        "verdict": {
            "drifted": drifted,
            "drifted_features": drifted_features,
            "tfdv_skewed_features": skewed,
            "summary": summary,
        },
        "feature_drift": [d.to_json() for d in features],
        "prediction_drift": prediction.to_json(),
        "joint_drift": joint,
        "estimated_performance": {"method": "cbpe", "metrics": cbpe},
        "quality": {q.feature: q.to_json() for q in quality.feature_quality(rows, kinds, vocabularies)},
        "store_defaults": quality.rows_with_store_defaults(rows, quality.store_groups(config)),
        "tfdv": tfdv_checks,
    }
    version = result["version"]
    plots = {f"{version}/{name}": R.feature_plot(kind, reference[name], rows[name]) for name, kind in kinds.items()}
    plots[f"{version}/{PREDICTION}"] = R.feature_plot(D.NUMERIC, reference[PREDICTION], predictions)
    return result, plots, serving_stats


# ---- the run ---------------------------------------------------------------------------------
def read_window(config: PlatformConfig, name: str, start, end) -> pd.DataFrame:
    from serving.payload_log import payload_log_root, read_payload_logs

    root = payload_log_root(config)
    rows = read_payload_logs(root, name, start, end)
    if rows.empty:
        raise EmptyWindow(
            f"no payload logs of model {name} in the window {start.isoformat()} .. {end.isoformat()} "
            f"under {join_uri(root, name)}; log predictions (serving.payload_log.enabled) or widen --window/--last"
        )
    rows["version"] = rows["version"].astype(str)
    return rows


def _check_columns(selector: str, rows: pd.DataFrame, ref: TrainingReference) -> None:
    missing = [n for n in ref.features if n not in rows.columns]
    if missing:
        logged = sorted(c for c in rows.columns if c not in FIXED_COLUMNS)
        raise ForeignPayloads(
            f"payload logs of {selector} lack the feature column(s) {missing} the version takes "
            f"(they have {logged}): "
            "written for another schema"
        )
    if PREDICTION not in rows.columns or not np.isfinite(pd.to_numeric(rows[PREDICTION], errors="coerce")).all():
        raise ForeignPayloads(f"payload logs of {selector}: the prediction column is missing or not all numbers")


def monitor(
    config: PlatformConfig,
    model: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    out_dir: str,
    *,
    pipeline: str,
    run_id: str,
    log=print,
) -> dict:
    """Runs the monitoring of `model` (NAME, NAME@ALIAS or NAME@VERSION) over [start, end)."""
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import ModelRegistry

    t0 = time.perf_counter()
    registry = ModelRegistry.from_config(config)
    selected = registry.resolve(model or config.project)
    rows = read_window(config, selected.name, start, end)
    present = sorted(rows["version"].unique(), key=lambda v: (len(v), v))
    if str(selected.version) not in present:
        raise EmptyWindow(
            f"no payload logs of {selected.selector} (selected by {model or config.project}) in the window "
            f"{start.isoformat()} .. {end.isoformat()}: it holds rows of version(s) {', '.join(present)} only"
        )
    versions, plots, statistics, refs = [], {}, {}, {}
    for version in present:
        part = rows[rows["version"] == version].reset_index(drop=True)
        is_selected = version == str(selected.version)
        try:
            mv = registry.get(selected.name, version)
            ref = training_reference(config, mv)
            _check_columns(mv.selector, part, ref)
        except (RegistryNotFound, NoTrainingReference, ForeignPayloads) as e:
            if is_selected:
                raise
            versions.append(
                {"version": version, "model": f"{selected.name}@{version}", "rows": len(part), "skipped": e.message}
            )
            continue
        if len(part) < config.monitoring.min_rows:
            versions.append(
                {
                    "version": version,
                    "model": mv.selector,
                    "rows": len(part),
                    "skipped": f"{len(part)} rows, fewer than monitoring.min_rows={config.monitoring.min_rows}",
                }
            )
            continue
        log(f"monitor: {mv.selector}: {len(part):,} rows vs its training reference")
        result, version_plots, stats = assess_version(config, ref, part, seed=config.split.seed)
        result["selected"] = is_selected
        versions.append(result)
        plots.update(version_plots)
        statistics[version] = stats
        refs[version] = mv
    finished = time.time()
    result = {
        "model": selected.selector,
        "model_name": selected.name,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "detector": config.monitoring.detector,
        "thresholds": config.monitoring.model_dump(mode="json", exclude={"pushgateway_url"}),
        "rows": len(rows),
        "versions": versions,
        "drifted": any(v.get("verdict", {}).get("drifted") for v in versions),
        "run_id": run_id,
        "finished_at": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "finished_at_epoch": finished,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    publish(config, result, plots, statistics, refs, out_dir, pipeline=pipeline, run_id=run_id, rows=rows)
    return result


def _staging_dir(out_dir: str) -> str:
    parent, name = out_dir.rstrip("/").rsplit("/", 1)
    return f"{parent}/.tmp-{name}-{uuid.uuid4().hex[:8]}"


def _move_into_place(staging: str, out_dir: str) -> None:
    if storage.is_local(out_dir):
        target = storage.local_path(out_dir)
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)  # KFP creates the output directory empty
        if os.path.exists(target):
            raise Refused(f"monitoring output {out_dir} already exists: a run id writes once")
        os.rename(storage.local_path(staging), target)
    else:
        fs, src = storage.fs_and_path(staging)
        fs.copy(src, storage.fs_and_path(out_dir)[1], recursive=True)
        storage.remove(staging, recursive=True)


def publish(config, result, plots, statistics, refs, out_dir, *, pipeline, run_id, rows) -> None:
    """Files (staged, then moved), metrics, then the MLMD record: a failure leaves none of them."""
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step
    from mlops.validation.statistics import write_statistics

    staging = _staging_dir(out_dir)
    storage.makedirs(staging)
    try:
        for version, stats in statistics.items():
            write_statistics(stats, join_uri(staging, f"v{version}", STATS_FILE))
        body = json.dumps(result, indent=2, default=str, sort_keys=True)
        storage.write_bytes_atomic(join_uri(staging, RESULT_FILE), body.encode())
        storage.write_bytes_atomic(join_uri(staging, REPORT_FILE), R.render(result, plots).encode())
        pushgateway = config.monitoring.pushgateway_url
        if not pushgateway:
            prometheus.export(result, None, join_uri(staging, METRICS_FILE))
        _move_into_place(staging, out_dir)
    except BaseException:
        storage.remove(staging, recursive=True)
        raise
    try:
        if pushgateway:
            result["metrics"] = prometheus.export(result, pushgateway, "")
        span = f"{result['window']['start']}/{result['window']['end']}"
        name = result["model_name"]
        from serving.payload_log import payload_log_root

        window = result["window"]
        window_uri = f"{join_uri(payload_log_root(config), name)}?start={window['start']}&end={window['end']}"
        inputs = {
            "payload_window": [
                ArtifactRef(
                    "PayloadWindow",
                    window_uri,
                    properties={
                        "model": name,
                        "start": result["window"]["start"],
                        "end": result["window"]["end"],
                        "row_count": len(rows),
                    },
                )
            ],
            "model": [
                ArtifactRef(
                    "PushedModel", mv.uri, name=mv.selector, properties={"name": mv.name, "version": str(mv.version)}
                )
                for mv in refs.values()
            ],
        }
        outputs = {
            "serving_statistics": [
                ArtifactRef(
                    "Statistics",
                    join_uri(out_dir, f"v{version}", STATS_FILE),
                    properties={
                        "split": SERVING_SPLIT,
                        "span": span,
                        "model": refs[version].selector,
                        "row_count": int((rows["version"] == version).sum()),
                    },
                )
                for version in statistics
            ],
            "drift_result": [
                ArtifactRef(
                    "DriftResult",
                    out_dir,
                    properties={
                        "model": result["model"],
                        "start": result["window"]["start"],
                        "end": result["window"]["end"],
                        "drifted": int(result["drifted"]),
                        "content_hash": hashlib.sha256(body.encode()).hexdigest()[:16],
                    },
                )
            ],
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
    except BaseException:
        storage.remove(out_dir, recursive=True)  # no result without its record
        raise


def default_out_dir(config: PlatformConfig, model_name: str, run_id: str) -> str:
    return join_uri(config.artifact_root, "monitoring", model_name, run_id)


def new_run_id() -> str:
    return f"monitor-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def execute(
    config: PlatformConfig,
    inputs: dict[str, Location],
    outputs: dict[str, Location],
    context: RunContext,
    *,
    model: str = "",
    window: str = "",
    last: str = "",
    now=None,
) -> StepResult:
    """The step contract (mlops.steps): no inputs (the payload logs and the registry are found
    from the config); outputs {"result"}: the directory described in the module doc."""
    start, end = parse_window(window, last, config.monitoring.window, now=now)
    out = outputs["result"]
    result = monitor(config, model, start, end, out.path, pipeline=context.pipeline, run_id=context.run_id)
    return StepResult(
        values={
            "model": result["model"],
            "rows": result["rows"],
            "drifted": result["drifted"],
            "result_path": join_uri(out.path, RESULT_FILE),
            "report_path": join_uri(out.path, REPORT_FILE),
            "versions": [
                {
                    "version": v["version"],
                    "rows": v["rows"],
                    "drifted": v.get("verdict", {}).get("drifted"),
                    "skipped": v.get("skipped", ""),
                }
                for v in result["versions"]
            ],
        }
    )
