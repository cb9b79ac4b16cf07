"""Evaluator: TFMA metrics overall, the same metrics per slice, thresholds, and the ModelBlessing.

The candidate and the current production model (the baseline, when there is one) predict the
same held-out split; the evaluation holds AUC, precision, recall, binary accuracy, calibration,
mean label/prediction and example counts for both, overall and on the configured slices. The
candidate is blessed when it meets the value threshold (min AUC) and the change threshold (its
AUC is no worse than the baseline's by more than max_auc_drop). Predictions come from the
exported serving signature, so what is evaluated is exactly what will be served.

TFMA computes the overall metrics (the system of record for the thresholds and the report). Its
metrics are per-example Python combiners, run once per slicing: on the full test split the three
slicings of the default config cost more than twice the overall pass. The slice metrics are
therefore computed by binary_metrics, a vectorised NumPy twin of TFMA's own definitions (the
10000-threshold histogram AUC, confusion matrices at 0.5, TFMA's NaN rules). It is
parity-tested against real TFMA per slice (executor_test.py), and every evaluation checks it
against TFMA's overall metrics on the real data before any slice metric is written.

TFMA's own change thresholds need a baseline EvalSharedModel; analyze_raw_data (predictions
already in a DataFrame: one Beam pipeline, no second model load through TFMA) has no baseline
path, so the change check is computed here from the two models' TFMA metrics.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlops import artifacts, storage
from mlops.config import BeamSpec, PlatformConfig, TaskType, join_uri
from mlops.errors import InvalidInput, MlopsError
from mlops.steps import Location, RunContext, StepResult, source_version

CODE_VERSION = source_version("evaluator", __name__)


class EvaluatorError(MlopsError):
    """The evaluation could not be computed (TFMA gave no result, the NumPy twin disagrees)."""


class EvaluationInputError(EvaluatorError, InvalidInput):
    """What the Evaluator was given cannot be evaluated (a missing column, NaN predictions, a
    label outside [0, 1], an unsupported task); the message names it."""


CANDIDATE, BASELINE = "candidate", "baseline"
METRICS = [
    "ExampleCount",
    "AUC",
    "Precision",
    "Recall",
    "Calibration",
    "MeanLabel",
    "MeanPrediction",
    "BinaryAccuracy",
]  # TFMA class names
METRIC_NAMES = [
    "example_count",
    "auc",
    "precision",
    "recall",
    "calibration",
    "mean_label",
    "mean_prediction",
    "binary_accuracy",
]  # the names TFMA reports them under


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Evaluation:
    split: str
    overall: dict[str, dict[str, float]]  # model -> metric -> value
    slices: list[dict]  # {"slice": {"carrier": "UA"}, "model": ..., "metrics": {...}}
    calibration: dict[str, list[dict]]  # model -> bins
    checks: list[Check] = field(default_factory=list)
    blessed: bool = False
    reason: str = ""
    baseline_version: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def predict(
    serving_model_dir: str,
    df: pd.DataFrame,
    features: list[artifacts.RawFeature],
    output_key: str,
    batch_size: int = 16384,
) -> np.ndarray:
    """Calls the exported raw-feature signature in batches."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from mlops.modeling.predictions import savedmodel_predict

    loaded = tf.saved_model.load(storage.local_path(serving_model_dir))
    out = []
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start : start + batch_size]
        rows = {f.name: chunk[f.name].to_numpy(dtype=np.float32 if f.dtype == "float32" else object) for f in features}
        out.append(savedmodel_predict(loaded, rows, artifacts.SERVING_SIGNATURE, output_key=output_key))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def calibration_bins(label: np.ndarray, prediction: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prediction, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "bin": [float(edges[b]), float(edges[b + 1])],
                    "count": int(m.sum()),
                    "mean_prediction": float(prediction[m].mean()),
                    "mean_label": float(label[m].mean()),
                }
            )
    return out


def _value(v) -> float | None:
    """A TFMA metric value as a float; None when undefined (e.g. precision with no positive
    prediction is NaN), so reports and KFP metadata stay valid JSON."""
    value = float(v["doubleValue"]) if "doubleValue" in v else float("nan")  # NaN may come as "NaN"
    return value if np.isfinite(value) else None


def _analyze_raw_data(df: pd.DataFrame, eval_config, output_path: str) -> None:
    """tfma.analyze_raw_data on mlops.beam's direct pipeline (TFMA's own version uses Beam's
    default DirectRunner, which in Beam 2.71 first tries the Prism runner, downloading its binary
    at run time). Always in-process, whatever config.beam says: its input is the predictions this
    step made, already in memory, and `output_path` a local directory; and on the DaskRunner
    TFMA's file sinks receive no elements (empty metrics files; README "Scale-out")."""
    import apache_beam as beam
    import pyarrow as pa
    import tensorflow_model_analysis as tfma
    from tfx_bsl.arrow import table_util

    from mlops import beam as mlops_beam

    for spec in eval_config.model_specs:
        for col in (spec.prediction_key, spec.label_key):
            if col not in df.columns:
                raise EvaluationInputError(f"column {col!r} not in the evaluation frame: {list(df.columns)}")
    batch = table_util.CanonicalizeRecordBatch(pa.RecordBatch.from_pandas(df, preserve_index=False))
    writers = tfma.default_writers(output_path, eval_config=eval_config)
    with mlops_beam.pipeline(BeamSpec()) as p:
        _ = (
            p
            | beam.Create([batch])
            | "ExtractEvaluateAndWriteResults"
            >> tfma.ExtractEvaluateAndWriteResults(writers=writers, eval_config=eval_config, output_path=output_path)
        )


def tfma_overall(df: pd.DataFrame, label: str, predictions: dict[str, str]) -> dict[str, dict[str, float | None]]:
    """Runs TFMA once, unsliced, over a DataFrame holding the label and one prediction column per
    model. Returns model -> metric -> value (METRICS, TFMA's names)."""
    import tempfile

    import tensorflow_model_analysis as tfma

    eval_config = tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(name=name, label_key=label, prediction_key=col) for name, col in predictions.items()
        ],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name=m) for m in METRICS], model_names=list(predictions))
        ],
        slicing_specs=[tfma.SlicingSpec()],
    )
    overall: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="tfma-") as out:
        _analyze_raw_data(df[[label, *predictions.values()]], eval_config, out)
        for model in predictions:  # a multi-model result is read back one model at a time
            # TFMA names results by model only when there are several models
            result = tfma.load_eval_result(out, model_name=model if len(predictions) > 1 else None)
            for slice_key, by_output in result.slicing_metrics:
                if not slice_key:
                    overall[model] = {k: _value(v) for k, v in by_output.get("", {}).get("", {}).items()}
    missing = [m for m in predictions if m not in overall]
    if missing:
        raise EvaluatorError(f"TFMA returned no overall metrics for {missing}")
    return overall


# TFMA's definitions of METRICS (tensorflow_model_analysis 0.47, unweighted examples), replicated
# by binary_metrics:
#   AUC: metrics/confusion_matrix_metrics.AUC (ROC, 'interpolation' summation) on the confusion
#     matrices that metrics/binary_confusion_matrices derives from a calibration histogram
#     (metrics/calibration_histogram: 10000 buckets on [0, 1] plus two edge buckets, rebinned
#     onto the 10000 interpolated thresholds -eps, 1/9999, ..., 9998/9999, 1+eps).
#   Precision, Recall, BinaryAccuracy: confusion matrix at 0.5, predicted positive when
#     prediction > 0.5; NaN when the denominator is 0.
#   Calibration = sum(prediction) / sum(label), MeanLabel = sum(label) / n,
#     MeanPrediction = sum(prediction) / n (metrics/calibration; NaN when the divisor is ~0).
#   ExampleCount = n.
# Labels may be fractional in [0, 1] (TFMA splits them into weights l and 1 - l); TFMA rejects others.
AUC_NUM_THRESHOLDS = 10000
DECISION_THRESHOLD = 0.5
_TFMA_EPSILON = 1e-7


def _auc_rebin_edges(num_thresholds: int = AUC_NUM_THRESHOLDS) -> np.ndarray:
    """The lower edges of TFMA's rebinned histogram: its interpolated thresholds, each + epsilon
    except 0 (binary_confusion_matrices.binary_confusion_matrices' result)."""
    thresholds = np.concatenate(
        [[-_TFMA_EPSILON], np.arange(1, num_thresholds - 1) * 1.0 / (num_thresholds - 1), [1.0 + _TFMA_EPSILON]]
    )
    return np.where(thresholds != 0, thresholds + _TFMA_EPSILON, thresholds)


def _auc(label: np.ndarray, prediction: np.ndarray, num_thresholds: int = AUC_NUM_THRESHOLDS) -> float:
    buckets = num_thresholds  # calibration_histogram.DEFAULT_NUM_BUCKETS == the AUC's threshold count
    # calibration_histogram._bucket_index: int(p * buckets + 1), clipped to [0, buckets + 1]
    index = np.clip(prediction * buckets + 1, 0, buckets + 1).astype(np.int64)
    # calibration_histogram.rebin: a bucket stands for its lower edge, the edge buckets for -inf/+inf
    value = np.where(index == 0, -np.inf, np.where(index >= buckets + 1, np.inf, (index - 1) / buckets))
    rebinned = np.searchsorted(_auc_rebin_edges(num_thresholds)[1:], value, side="right")
    pos = np.bincount(rebinned, weights=label, minlength=num_thresholds)
    neg = np.bincount(rebinned, weights=np.ones_like(label), minlength=num_thresholds) - pos
    # _histogram_to_binary_confusion_matrices: positives at or above each threshold's bucket
    tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]
    fn, tn = np.concatenate([[0.0], np.cumsum(pos)[:-1]]), np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    tp[-1], fp[-1], fn[-1], tn[-1] = 0.0, 0.0, tp[0], fp[0]  # the 1 + eps threshold
    with np.errstate(invalid="ignore", divide="ignore"):  # one class only: NaN rates, summed as 0 (as TFMA)
        fpr, tpr = fp / (fp + tn), tp / (tp + fn)
        return float(np.nansum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0))


def binary_metrics(label, prediction) -> dict[str, float | None]:
    """METRICS of one model on one set of examples, as TFMA defines them (see above); undefined
    values are None, as _value reports TFMA's."""
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    p = np.asarray(prediction, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise EvaluationInputError(f"{y.size} labels but {p.size} predictions")
    if not np.isfinite(p).all():
        raise EvaluationInputError(f"{int((~np.isfinite(p)).sum())} predictions are NaN or infinite")
    if not ((y >= 0) & (y <= 1)).all():
        raise EvaluationInputError("labels must be in [0, 1] for binary classification metrics (TFMA's rule)")

    def ratio(num: float, den: float, zero) -> float | None:
        return None if zero(den) else num / den

    n = float(y.size)
    sum_label, sum_prediction = float(np.sum(y)), float(np.sum(p))
    above = p > DECISION_THRESHOLD
    tp, fp = float(np.sum(y[above])), float(np.sum(1.0 - y[above]))
    fn, tn = float(np.sum(y[~above])), float(np.sum(1.0 - y[~above]))
    near_zero, not_positive = (lambda d: bool(np.isclose(d, 0.0))), (lambda d: not d > 0)
    values = {
        "example_count": n,
        "auc": _auc(y, p) if n else None,
        "precision": ratio(tp, tp + fp, not_positive),
        "recall": ratio(tp, tp + fn, not_positive),
        "binary_accuracy": ratio(tp + tn, tp + fp + tn + fn, not_positive),
        "calibration": ratio(sum_prediction, sum_label, near_zero),
        "mean_label": ratio(sum_label, n, near_zero),
        "mean_prediction": ratio(sum_prediction, n, near_zero),
    }
    return {k: (v if v is None or np.isfinite(v) else None) for k, v in values.items()}


def _slice_value(v):
    """A slice value as TFMA reports it: str, int or float."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v


def slice_metrics(df: pd.DataFrame, label: str, predictions: dict[str, str], slices: list[list[str]]) -> list[dict]:
    """METRICS per slice value (per combination for a multi-column slice) and model, like a TFMA
    SlicingSpec(feature_keys=...): a row with a missing value in a slice column is in no slice
    of that spec. Returns [{"slice": {column: value}, "model", "metrics"}], sorted."""
    missing = sorted({c for s in slices for c in s} - set(df.columns)) + [
        c for c in (label, *predictions.values()) if c not in df.columns
    ]
    if missing:
        raise EvaluationInputError(f"columns {missing} not in the evaluation frame: {list(df.columns)}")
    y = df[label].to_numpy(dtype=np.float64)
    preds = {model: df[col].to_numpy(dtype=np.float64) for model, col in predictions.items()}
    out = []
    for columns in slices:
        if not columns:
            continue
        groups = df.groupby(list(columns), dropna=True, sort=False).indices
        for key, rows in groups.items():
            key = key if isinstance(key, tuple) else (key,)
            named = {c: _slice_value(v) for c, v in zip(columns, key)}
            for model, p in preds.items():
                out.append({"slice": named, "model": model, "metrics": binary_metrics(y[rows], p[rows])})
    out.sort(key=lambda s: (json.dumps(s["slice"], sort_keys=True, default=str), s["model"]))
    return out


PARITY_TOLERANCE = 1e-6  # binary_metrics vs TFMA on the same rows; measured: equal to the last bit


def check_parity(
    tfma: dict[str, dict[str, float | None]],
    numpy: dict[str, dict[str, float | None]],
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Raises when binary_metrics disagrees with TFMA on the overall metrics (the slice metrics
    would not mean what TFMA's mean); returns the largest absolute difference."""
    worst, problems = 0.0, []
    for model, metrics in tfma.items():
        for name in METRIC_NAMES:
            a, b = metrics.get(name), numpy.get(model, {}).get(name)
            if (a is None) != (b is None):
                problems.append(f"{model} {name}: TFMA {a}, NumPy {b}")
            elif a is not None:
                worst = max(worst, abs(a - b))
                if abs(a - b) > tolerance:
                    problems.append(f"{model} {name}: TFMA {a!r}, NumPy {b!r}")
    if problems:
        raise EvaluatorError(
            "the NumPy slice metrics no longer match TFMA's definitions (was TFMA upgraded?): " + "; ".join(problems)
        )
    return worst


def judge(config: PlatformConfig, overall: dict[str, dict[str, float]], baseline_version: str) -> list[Check]:
    ev = config.evaluation
    cand_auc = overall[CANDIDATE].get("auc")
    checks = []
    if cand_auc is None:  # e.g. a split with one class only
        return [Check("auc_defined", False, "AUC is undefined on the evaluation split (one class only?)")]
    if ev.min_auc is not None:
        ok = cand_auc >= ev.min_auc
        checks.append(Check("min_auc", ok, f"AUC {cand_auc:.4f} {'>=' if ok else '<'} {ev.min_auc}"))
    if ev.max_auc_drop is not None:
        base_auc = overall.get(BASELINE, {}).get("auc")
        if BASELINE in overall and base_auc is None:
            checks.append(Check("max_auc_drop", True, f"production {baseline_version}: AUC undefined, not compared"))
        elif BASELINE in overall:
            ok = cand_auc >= base_auc - ev.max_auc_drop
            checks.append(
                Check(
                    "max_auc_drop",
                    ok,
                    f"AUC {cand_auc:.4f} vs production {baseline_version} {base_auc:.4f} "
                    f"(change {cand_auc - base_auc:+.4f}, allowed >= {-ev.max_auc_drop})",
                )
            )
        else:
            checks.append(Check("max_auc_drop", True, "no production model yet: change threshold not applicable"))
    return checks


def evaluate(
    config: PlatformConfig,
    examples_dir: str,
    model_dir: str,
    out_dir: str,
    *,
    baseline_model_dir: str | None = None,
    baseline_version: str = "",
    split: str = "test",
) -> Evaluation:
    if config.dataset.label.task != TaskType.binary_classification:
        raise EvaluationInputError(f"Evaluator supports binary_classification, got {config.dataset.label.task.value}")
    t0 = time.perf_counter()
    label = config.dataset.label.column
    features = artifacts.model_features(config)
    output_key = artifacts.OUTPUT_KEY[config.dataset.label.task]
    df = artifacts.read_split(examples_dir, split)
    if df.empty and split == "test":  # split.test = 0: evaluate on eval
        split = "eval"
        df = artifacts.read_split(examples_dir, split)
    if df.empty:
        raise EvaluatorError(f"split {split!r} of {examples_dir} is empty: nothing to evaluate")
    preds = {CANDIDATE: predict(join_uri(model_dir, artifacts.SERVING_MODEL), df, features, output_key)}
    if baseline_model_dir:
        preds[BASELINE] = predict(join_uri(baseline_model_dir, artifacts.SERVING_MODEL), df, features, output_key)
    t_pred = time.perf_counter()
    slice_cols = sorted({c for s in config.evaluation.slices for c in s})
    frame = df[[label] + slice_cols].copy()
    for name, p in preds.items():
        frame[f"prediction_{name}"] = p.astype(np.float32)
    columns = {n: f"prediction_{n}" for n in preds}
    overall = tfma_overall(frame, label, columns)
    t_tfma = time.perf_counter()
    y = df[label].to_numpy()
    # the NumPy twin must reproduce TFMA's overall metrics on these rows before it slices them
    check_parity(overall, {n: binary_metrics(y, frame[c].to_numpy()) for n, c in columns.items()})
    sliced = slice_metrics(frame, label, columns, config.evaluation.slices)
    t_slices = time.perf_counter()
    result = Evaluation(
        split=split,
        overall=overall,
        slices=sliced,
        calibration={n: calibration_bins(y, p) for n, p in preds.items()},
        baseline_version=baseline_version,
    )
    result.checks = judge(config, overall, baseline_version)
    result.blessed = all(c.passed for c in result.checks)
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.passed]
    result.reason = "; ".join(failed) if failed else "all thresholds met"
    result.seconds = {
        "predict": round(t_pred - t0, 3),
        "tfma": round(t_tfma - t_pred, 3),
        "slices": round(t_slices - t_tfma, 3),
    }
    storage.makedirs(out_dir)
    storage.write_json_atomic(join_uri(out_dir, artifacts.METRICS_FILE), asdict(result))
    storage.write_bytes_atomic(join_uri(out_dir, "index.html"), render_html(config, result).encode())
    return result


def blessing_of(result: Evaluation) -> dict:
    return {
        "blessed": result.blessed,
        "reason": result.reason,
        "baseline_version": result.baseline_version,
        "checks": [asdict(c) for c in result.checks],
    }


def render_html(config: PlatformConfig, r: Evaluation) -> str:
    def fmt(v):
        return "" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}")

    models = list(r.overall)
    metric_names = sorted({k for m in r.overall.values() for k in m})
    rows = "".join(
        f"<tr><th>{html.escape(m)}</th>" + "".join(f"<td>{fmt(r.overall[n].get(m))}</td>" for n in models) + "</tr>"
        for m in metric_names
    )
    checks = "".join(
        f"<li class={'ok' if c.passed else 'bad'}>{html.escape(c.name)}: {html.escape(c.detail)}</li>" for c in r.checks
    )
    slice_rows = "".join(
        f"<tr><td>{html.escape(', '.join(f'{k}={v}' for k, v in s['slice'].items()))}</td><td>{s['model']}</td>"
        f"<td>{fmt(s['metrics'].get('example_count'))}</td><td>{fmt(s['metrics'].get('auc'))}</td>"
        f"<td>{fmt(s['metrics'].get('calibration'))}</td></tr>"
        for s in r.slices
    )
    cal = "".join(
        f"<tr><td>{n}</td><td>{b['bin'][0]:.1f}-{b['bin'][1]:.1f}</td><td>{b['count']}</td>"
        f"<td>{b['mean_prediction']:.3f}</td><td>{b['mean_label']:.3f}</td></tr>"
        for n, bins in r.calibration.items()
        for b in bins
    )
    verdict = "BLESSED" if r.blessed else "NOT BLESSED"
    return f"""<!doctype html><meta charset=utf-8><title>{config.project} evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}
.ok{{color:#060}}.bad{{color:#b00}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style>
<h1>{html.escape(config.project)}: {verdict}</h1><p>{html.escape(r.reason)}</p><ul>{checks}</ul>
<h2>Overall ({r.split} split)</h2><table><tr><th></th>{"".join(f"<th>{m}</th>" for m in models)}</tr>{rows}</table>
<h2>Slices</h2><table>
<tr><th>slice</th><th>model</th><th>examples</th><th>AUC</th><th>calibration</th></tr>{slice_rows}</table>
<h2>Calibration</h2><table>
<tr><th>model</th><th>bin</th><th>n</th><th>mean prediction</th><th>mean label</th></tr>{cal}</table>"""


def production_baseline(config: PlatformConfig):
    """The model currently serving production (None before the first promotion)."""
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import ModelRegistry

    try:
        return ModelRegistry(config.artifact_root).resolve(f"{config.project}@production")
    except RegistryNotFound:
        return None


def run_step(
    config: PlatformConfig,
    *,
    examples_dir: str,
    examples_uri: str,
    model_dir: str,
    model_uri: str,
    evaluation_dir: str,
    evaluation_uri: str,
    blessing_dir: str,
    blessing_uri: str,
    pipeline: str,
    run_id: str,
    enable_cache: bool = True,
    log=print,
) -> dict:
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step, run_cached

    baseline = production_baseline(config)
    if baseline is not None and [f["name"] for f in baseline.features] != [
        f.name for f in artifacts.model_features(config)
    ]:
        # Production was trained on other inputs: it cannot score these examples, so the change
        # threshold does not apply (the value threshold still does).
        log(f"evaluator: production {baseline.selector} has other input features; not used as baseline")
        baseline = None
    baseline_dir = baseline.uri if baseline else None
    baseline_version = baseline.selector if baseline else ""

    def work() -> dict:
        result = evaluate(
            config,
            examples_dir,
            model_dir,
            evaluation_dir,
            baseline_model_dir=baseline_dir,
            baseline_version=baseline_version,
        )
        storage.write_json_atomic(join_uri(blessing_dir, artifacts.BLESSING_FILE), blessing_of(result))
        return {"blessing": blessing_of(result), "overall": result.overall, "seconds": result.seconds}

    result, cached = run_cached(
        config,
        "evaluator",
        CODE_VERSION,
        sections=["dataset", "evaluation"],
        inputs={"examples": examples_dir, "model": model_dir},
        outputs={"evaluation": evaluation_dir, "blessing": blessing_dir},
        params={"baseline": baseline_version},
        work=work,
        enabled=enable_cache,
        log=log,
    )
    blessing = result["blessing"]
    log(f"evaluator: {'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}: {blessing['reason']}")
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component="evaluator",
        inputs={"examples": [ArtifactRef("Examples", examples_uri)], "model": [ArtifactRef("Model", model_uri)]},
        outputs={
            "evaluation": [
                ArtifactRef(
                    "ModelEvaluation",
                    evaluation_uri,
                    properties={
                        "metrics": json.dumps(result["overall"].get(CANDIDATE, {})),
                        "baseline_version": baseline_version,
                    },
                )
            ],
            "blessing": [
                ArtifactRef(
                    "ModelBlessing",
                    blessing_uri,
                    properties={
                        "blessed": int(blessing["blessed"]),
                        "reason": blessing["reason"],
                        "baseline_version": baseline_version,
                    },
                )
            ],
        },
        properties={"code_version": CODE_VERSION},
        state="CACHED" if cached else "COMPLETE",
    )
    return {**result, "cached": cached}


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"examples", "model"}; outputs {"evaluation",
    "blessing"}."""
    examples, model = inputs["examples"], inputs["model"]
    evaluation, blessing = outputs["evaluation"], outputs["blessing"]
    result = run_step(
        config,
        examples_dir=examples.path,
        examples_uri=examples.uri,
        model_dir=model.path,
        model_uri=model.uri,
        evaluation_dir=evaluation.path,
        evaluation_uri=evaluation.uri,
        blessing_dir=blessing.path,
        blessing_uri=blessing.uri,
        pipeline=context.pipeline,
        run_id=context.run_id,
        enable_cache=context.enable_cache,
    )
    cached = result.pop("cached")
    return StepResult(values=result, cached=cached)
