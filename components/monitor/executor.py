"""The monitoring run: the payload logs of one model in a window, split by model version, each
version against its own training reference (components/monitor/reference.py).

Per version with at least monitoring.min_rows rows:
  * serving statistics (TFDV, mlops.validation.statistics: the same code as StatisticsGen), their
    TFDV skew comparators against the training statistics (the schema's L-inf / JS comparators:
    the schema-level verdict) and their anomalies in the schema's SERVING environment;
  * feature drift with effect sizes and p-values (mlops.monitoring.drift; or alibi-detect, by
    monitoring.detector), prediction drift (the model's outputs vs its outputs on the reference
    sample), one joint-space check (a domain classifier's AUC; alibi: MMD);
  * CBPE estimates of AUC, precision, recall and the positive rate with their band (cbpe.py);
  * data quality: missing and out-of-vocabulary rates, rows served with feature-store defaults.

The window is read in chunks (serving.payload_log.iter_payload_logs, CHUNK_ROWS rows at a time),
twice: a first pass counts each version's rows (version and prediction columns only), a second one
feeds each assessed version's accumulators (mlops.monitoring.window: exact counts for data quality,
categorical drift and TFDV's merged statistics; a fixed-size uniform row sample for the tests that
need rows), so memory does not grow with the window (bench/monitoring.py --end-to-end measures it).

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
import re
import time
import uuid
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from components.monitor import cbpe as C
from components.monitor import estimates, output
from components.monitor.reference import (
    PREDICTION,
    SERVING_SPLIT,
    NoTrainingReference,
    TrainingReference,
    reference_frame,
    training_reference,
)
from mlops.config import PlatformConfig, join_uri
from mlops.errors import InvalidInput, NotFound
from mlops.monitoring import drift as D
from mlops.monitoring import prometheus, quality
from mlops.monitoring import report as R
from mlops.monitoring.window import CHUNK_ROWS, SAMPLE_ROWS, ChunkedStatistics, VersionWindow, accumulate
from mlops.steps import Location, RunContext, StepResult, source_version
from mlops.validation import anomalies as A
from serving.payload_log import FIXED_COLUMNS

COMPONENT = "monitor"
PIPELINE = "monitoring"
CODE_VERSION = source_version(COMPONENT, __name__)
RESULT_FILE, REPORT_FILE = "result.json", "report.html"
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
def _vocabularies(schema, kinds: dict[str, str], reference: pd.DataFrame) -> dict[str, set[str]]:
    """Per categorical feature: the schema's domain, else the reference's categories."""
    out = {
        f.name: set(f.string_domain.value) or {v for d in schema.string_domain if d.name == f.domain for v in d.value}
        for f in schema.feature
        if f.HasField("string_domain") or f.domain
    }
    for name, kind in kinds.items():
        if kind == D.CATEGORICAL and not out.get(name):
            out[name] = set(D.value_counts(reference[name].to_numpy()))
    return out


def _tfdv_checks(ref: TrainingReference, schema, serving_stats) -> dict:
    import tensorflow_data_validation as tfdv

    from mlops.validation.schema import SERVING, TRAINING
    from mlops.validation.statistics import read_statistics

    envs = set(schema.default_environment)
    training = read_statistics(ref.statistics_uri)
    skew = tfdv.validate_statistics(
        training, schema, environment=TRAINING if TRAINING in envs else None, serving_statistics=serving_stats
    )
    serving = tfdv.validate_statistics(serving_stats, schema, environment=SERVING if SERVING in envs else None)
    return {
        "skew": [{**m.__dict__, "exceeded": m.exceeded} for m in A.measurements(skew, A.SKEW, "train")],
        "anomalies": [a.__dict__ for a in A.rows(serving, A.SERVING, SERVING_SPLIT, exclude_comparators=True)],
    }


@dataclass
class Assessed:
    """A version to assess: its training reference, schema, reference sample and window accumulator."""

    model: object  # the registry's ModelVersion
    ref: TrainingReference
    schema: object
    reference: pd.DataFrame
    window: VersionWindow


def prepare_version(config: PlatformConfig, mv, ref: TrainingReference, sample_rows: int = SAMPLE_ROWS) -> Assessed:
    from mlops.validation.schema import load_schema

    schema = load_schema(ref.schema_uri)
    reference = reference_frame(config, ref)
    window = VersionWindow(
        ref.features,
        _vocabularies(schema, ref.features, reference),
        quality.store_groups(config),
        extra=(PREDICTION,),
        statistics=ChunkedStatistics(config, SERVING_SPLIT),
        sample_rows=sample_rows,
    )
    return Assessed(mv, ref, schema, reference, window)


def _feature_drift(reference: pd.DataFrame, window: VersionWindow, sample: pd.DataFrame, m) -> list[D.Drift]:
    """Per feature: numeric on the window's sample (its exact present count reported), categorical
    on the window's exact category counts."""
    out = []
    for name, kind in window.kinds.items():
        if kind == D.CATEGORICAL:
            out.append(
                D.categorical_drift_of_counts(
                    name, D.value_counts(reference[name]), window.categories[name], m.categorical_js, m.p_value
                )
            )
            continue
        d = D.numeric_drift(name, reference[name], sample[name], m.numeric_wasserstein, m.p_value)
        if d.window_values < window.present[name]:
            note = f"KS and Wasserstein on a random sample of {len(sample):,} rows ({d.window_values:,} values)"
            d = replace(d, window_values=window.present[name], note=note if d.effect is not None else d.note)
        out.append(d)
    return out


def assess_version(config: PlatformConfig, version: Assessed, seed: int = 0) -> tuple[dict, dict, object]:
    """(the version's result, its per-feature plots, its serving statistics), from its accumulated window."""
    m = config.monitoring
    ref, reference, window = version.ref, version.reference, version.window
    kinds = ref.features
    sample = window.sample.frame()
    serving_stats = window.statistics.result()
    tfdv_checks = _tfdv_checks(ref, version.schema, serving_stats)
    features = _feature_drift(reference, window, sample, m)
    predictions = sample[PREDICTION].to_numpy(dtype=np.float64)
    prediction = D.numeric_drift(PREDICTION, reference[PREDICTION], predictions, m.prediction_wasserstein, m.p_value)
    if m.detector == "alibi":
        from components.monitor import alibi

        features = alibi.feature_drift(reference, sample, features, m.p_value)
        joint = alibi.mmd(reference, sample, kinds, m.p_value, seed=seed)
    else:
        joint = estimates.domain_classifier(reference, sample, kinds, seed=seed)
        joint["threshold"] = m.domain_auc
        joint["drifted"] = joint["score"] is not None and joint["score"] > m.domain_auc and joint["p_value"] < m.p_value
    fitted = C.fit_reference(config, ref)  # NannyML's CBPE: calibrator and sampling errors from labelled data
    cbpe = C.estimate(fitted, predictions)
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
        "rows": window.rows,
        "sources": dict(sorted(window.sources.items())),
        "sample": {"rows": len(sample), "method": "bottom-k (uniform, without replacement)", "seed": seed},
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
        "estimated_performance": {
            "method": "cbpe",
            "rows": len(predictions),
            "reference": fitted.describe(),
            "metrics": cbpe,
        },
        "quality": {q.feature: q.to_json() for q in window.quality.features()},
        "store_defaults": window.quality.store_defaults(),
        "tfdv": tfdv_checks,
    }
    number = result["version"]
    plots = {f"{number}/{name}": R.feature_plot(kind, reference[name], sample[name]) for name, kind in kinds.items()}
    plots[f"{number}/{PREDICTION}"] = R.feature_plot(D.NUMERIC, reference[PREDICTION], predictions)
    return result, plots, serving_stats


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class WindowScan:
    """The first pass over a window: its files, their columns, and per version its rows and how
    many of them have no numeric prediction (only the version and prediction columns are read)."""

    root: str
    files: list[str]
    columns: list[str]
    rows: dict[str, int]
    bad_predictions: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def scan_window(config: PlatformConfig, name: str, start, end, chunk_rows: int = CHUNK_ROWS) -> WindowScan:
    from serving.payload_log import iter_payload_logs, payload_log_fields, payload_log_files, payload_log_root

    root = payload_log_root(config)
    files = payload_log_files(root, name, start, end)
    columns = list(payload_log_fields(files))
    rows: dict[str, int] = {}
    bad: dict[str, int] = {}
    wanted = ["version", PREDICTION] if PREDICTION in columns else ["version"]
    for batch in iter_payload_logs(files, start, end, columns=wanted, batch_rows=chunk_rows):
        versions = batch["version"].astype(str)
        if PREDICTION in batch:
            finite = np.isfinite(pd.to_numeric(batch[PREDICTION], errors="coerce").to_numpy(dtype=np.float64))
        else:
            finite = np.zeros(len(batch), dtype=bool)
        for version, n in versions.value_counts().items():
            rows[version] = rows.get(version, 0) + int(n)
        for version, n in versions[~finite].value_counts().items():
            bad[version] = bad.get(version, 0) + int(n)
    if not rows:
        raise EmptyWindow(
            f"no payload logs of model {name} in the window {start.isoformat()} .. {end.isoformat()} "
            f"under {join_uri(root, name)}; log predictions (serving.payload_log.enabled) or widen --window/--last"
        )
    return WindowScan(root, files, columns, rows, bad)


def read_window(config: PlatformConfig, name: str, start, end) -> pd.DataFrame:
    """The whole window as one frame (a live evaluation joins it with labels)."""
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


def _check_columns(selector: str, scan: WindowScan, version: str, ref: TrainingReference) -> None:
    missing = [n for n in ref.features if n not in scan.columns]
    if missing:
        logged = sorted(c for c in scan.columns if c not in FIXED_COLUMNS)
        raise ForeignPayloads(
            f"payload logs of {selector} lack the feature column(s) {missing} the version takes "
            f"(they have {logged}): "
            "written for another schema"
        )
    if scan.bad_predictions.get(version):
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
    chunk_rows: int = CHUNK_ROWS,
    sample_rows: int = SAMPLE_ROWS,
) -> dict:
    """Runs the monitoring of `model` (NAME, NAME@ALIAS or NAME@VERSION) over [start, end), reading
    the window `chunk_rows` payload-log rows at a time (two passes: the versions' row counts, then
    every assessed version's accumulators, mlops.monitoring.window)."""
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import ModelRegistry
    from serving.payload_log import iter_payload_logs

    t0 = time.perf_counter()
    registry = ModelRegistry.from_config(config)
    selected = registry.resolve(model or config.project)
    scan = scan_window(config, selected.name, start, end, chunk_rows)
    present = sorted(scan.rows, key=lambda v: (len(v), v))
    if str(selected.version) not in present:
        raise EmptyWindow(
            f"no payload logs of {selected.selector} (selected by {model or config.project}) in the window "
            f"{start.isoformat()} .. {end.isoformat()}: it holds rows of version(s) {', '.join(present)} only"
        )
    skipped, assessed = {}, {}
    for version in present:
        n = scan.rows[version]
        is_selected = version == str(selected.version)
        try:
            mv = registry.get(selected.name, version)
            ref = training_reference(config, mv)
            _check_columns(mv.selector, scan, version, ref)
        except (RegistryNotFound, NoTrainingReference, ForeignPayloads) as e:
            if is_selected:
                raise
            skipped[version] = {
                "version": version,
                "model": f"{selected.name}@{version}",
                "rows": n,
                "skipped": e.message,
            }
            continue
        if n < config.monitoring.min_rows:
            skipped[version] = {
                "version": version,
                "model": mv.selector,
                "rows": n,
                "skipped": f"{n} rows, fewer than monitoring.min_rows={config.monitoring.min_rows}",
            }
            continue
        log(f"monitor: {mv.selector}: {n:,} rows vs its training reference")
        assessed[version] = prepare_version(config, mv, ref, sample_rows)
    columns = ["version", "source", PREDICTION, quality.DEFAULTS_MARK]
    columns += sorted({name for a in assessed.values() for name in a.ref.features})
    batches = iter_payload_logs(scan.files, start, end, columns=columns, batch_rows=chunk_rows)
    accumulate(batches, {v: a.window for v, a in assessed.items()}, seed=config.split.seed)
    versions, plots, statistics, refs = [], {}, {}, {}
    for version in present:
        if version in skipped:
            versions.append(skipped[version])
            continue
        result, version_plots, stats = assess_version(config, assessed[version], seed=config.split.seed)
        result["selected"] = version == str(selected.version)
        versions.append(result)
        plots.update(version_plots)
        statistics[version] = stats
        refs[version] = assessed[version].model
    finished = time.time()
    result = {
        "model": selected.selector,
        "model_name": selected.name,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "detector": config.monitoring.detector,
        "thresholds": config.monitoring.model_dump(mode="json", exclude={"pushgateway_url"}),
        "rows": scan.total,
        "versions": versions,
        "drifted": any(v.get("verdict", {}).get("drifted") for v in versions),
        "run_id": run_id,
        "finished_at": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "finished_at_epoch": finished,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    publish(config, result, plots, statistics, refs, out_dir, pipeline=pipeline, run_id=run_id, rows=scan.rows)
    return result


def publish(config, result, plots, statistics, refs, out_dir, *, pipeline, run_id, rows: dict[str, int]) -> None:
    """Files, metrics, then the MLMD record, all or nothing (components/monitor/output.py).
    `rows`: the window's rows per version."""
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step

    body = output.result_json(result)
    files = {f"v{version}/{STATS_FILE}": stats.SerializeToString() for version, stats in statistics.items()}
    files[RESULT_FILE] = body.encode()
    files[REPORT_FILE] = R.render(result, plots).encode()

    def record() -> None:
        window = result["window"]
        span = f"{window['start']}/{window['end']}"
        inputs = {
            "payload_window": [output.payload_window_ref(config, result["model_name"], window, sum(rows.values()))],
            "model": [output.pushed_model_ref(mv) for mv in refs.values()],
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
                        "row_count": rows[version],
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
                        "start": window["start"],
                        "end": window["end"],
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

    where = output.publish(
        config,
        out_dir,
        files,
        prometheus.registry_for(result),
        job=prometheus.JOB,
        model=result["model_name"],
        record=record,
    )
    if config.monitoring.pushgateway_url:
        result["metrics"] = where


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
