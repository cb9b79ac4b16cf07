"""Evaluator: TFMA metrics overall and per slice, thresholds, and the ModelBlessing.

The candidate and the current production model (the baseline, when there is one) predict the
same held-out split; TFMA computes AUC, precision, recall, calibration, mean label/prediction
and example counts for both, overall and on the configured slices. The candidate is blessed
when it meets the value threshold (min AUC) and the change threshold (its AUC is no worse than
the baseline's by more than max_auc_drop). Predictions come from the exported serving signature,
so what is evaluated is exactly what will be served.

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
from mlops.steps import source_version
from mlops.config import PlatformConfig, TaskType, join_uri

CODE_VERSION = source_version("evaluator", __name__)
CANDIDATE, BASELINE = "candidate", "baseline"
METRICS = ["ExampleCount", "AUC", "Precision", "Recall", "Calibration", "MeanLabel", "MeanPrediction",
           "BinaryAccuracy"]


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


def predict(serving_model_dir: str, df: pd.DataFrame, features: list[artifacts.RawFeature], output_key: str,
            batch_size: int = 16384) -> np.ndarray:
    """Calls the exported raw-feature signature in batches."""
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    fn = tf.saved_model.load(storage.local_path(serving_model_dir)).signatures[artifacts.SERVING_SIGNATURE]
    out = []
    for start in range(0, len(df), batch_size):
        chunk = df.iloc[start:start + batch_size]
        inputs = {f.name: tf.constant(chunk[f.name].to_numpy(dtype=np.float32 if f.dtype == "float32" else object),
                                      dtype=tf.float32 if f.dtype == "float32" else tf.string) for f in features}
        out.append(fn(**inputs)[output_key].numpy().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def calibration_bins(label: np.ndarray, prediction: np.ndarray, bins: int = 10) -> list[dict]:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(prediction, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(m.sum()),
                        "mean_prediction": float(prediction[m].mean()), "mean_label": float(label[m].mean())})
    return out


def _value(v) -> float | None:
    """A TFMA metric value as a float; None when undefined (e.g. precision with no positive
    prediction is NaN), so reports and KFP metadata stay valid JSON."""
    value = float(v["doubleValue"]) if "doubleValue" in v else float("nan")  # NaN may come as "NaN"
    return value if np.isfinite(value) else None


def _analyze_raw_data(df: pd.DataFrame, eval_config, output_path: str) -> None:
    """tfma.analyze_raw_data with an explicit in-process runner. TFMA's own version uses Beam's
    default DirectRunner, which in Beam 2.71 first tries the Prism runner, downloading its binary
    from the internet at run time; the FnApiRunner is what DirectRunner falls back to anyway."""
    import apache_beam as beam
    import pyarrow as pa
    import tensorflow_model_analysis as tfma
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from tfx_bsl.arrow import table_util

    for spec in eval_config.model_specs:
        for col in (spec.prediction_key, spec.label_key):
            if col not in df.columns:
                raise KeyError(f"column {col!r} not in the evaluation frame: {list(df.columns)}")
    batch = table_util.CanonicalizeRecordBatch(pa.RecordBatch.from_pandas(df, preserve_index=False))
    writers = tfma.default_writers(output_path, eval_config=eval_config)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (p | beam.Create([batch])
             | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
                 writers=writers, eval_config=eval_config, output_path=output_path))


def tfma_metrics(df: pd.DataFrame, label: str, predictions: dict[str, str], slices: list[list[str]]):
    """Runs TFMA once over a DataFrame holding the label and one prediction column per model.
    Returns (overall: model -> metrics, slices: [{"slice", "model", "metrics"}])."""
    import tempfile

    import tensorflow_model_analysis as tfma

    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(name=name, label_key=label, prediction_key=col) for name, col in predictions.items()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name=m) for m in METRICS],
                                        model_names=list(predictions))],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=s) for s in slices])
    overall: dict[str, dict[str, float]] = {}
    sliced = []
    with tempfile.TemporaryDirectory(prefix="tfma-") as out:
        _analyze_raw_data(df, eval_config, out)
        for model in predictions:  # a multi-model result is read back one model at a time
            # TFMA names results by model only when there are several models
            result = tfma.load_eval_result(out, model_name=model if len(predictions) > 1 else None)
            for slice_key, by_output in result.slicing_metrics:
                metrics = {k: _value(v) for k, v in by_output.get("", {}).get("", {}).items()}
                if not slice_key:
                    overall[model] = metrics
                else:
                    sliced.append({"slice": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in slice_key},
                                   "model": model, "metrics": metrics})
    sliced.sort(key=lambda s: (json.dumps(s["slice"], sort_keys=True, default=str), s["model"]))
    return overall, sliced


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
            checks.append(Check("max_auc_drop", ok,
                                f"AUC {cand_auc:.4f} vs production {baseline_version} {base_auc:.4f} "
                                f"(change {cand_auc - base_auc:+.4f}, allowed >= {-ev.max_auc_drop})"))
        else:
            checks.append(Check("max_auc_drop", True, "no production model yet: change threshold not applicable"))
    return checks


def evaluate(config: PlatformConfig, examples_dir: str, model_dir: str, out_dir: str, *,
             baseline_model_dir: str | None = None, baseline_version: str = "", split: str = "test") -> Evaluation:
    if config.dataset.label.task != TaskType.binary_classification:
        raise NotImplementedError(f"Evaluator supports binary_classification, got {config.dataset.label.task.value}")
    t0 = time.perf_counter()
    label = config.dataset.label.column
    features = artifacts.model_features(config)
    output_key = artifacts.OUTPUT_KEY[config.dataset.label.task]
    df = pd.read_parquet(artifacts.split_path(examples_dir, split))
    if df.empty and split == "test":  # split.test = 0: evaluate on eval
        split = "eval"
        df = pd.read_parquet(artifacts.split_path(examples_dir, split))
    if df.empty:
        raise ValueError(f"split {split!r} of {examples_dir} is empty: nothing to evaluate")
    preds = {CANDIDATE: predict(join_uri(model_dir, artifacts.SERVING_MODEL), df, features, output_key)}
    if baseline_model_dir:
        preds[BASELINE] = predict(join_uri(baseline_model_dir, artifacts.SERVING_MODEL), df, features, output_key)
    t_pred = time.perf_counter()
    slice_cols = sorted({c for s in config.evaluation.slices for c in s})
    frame = df[[label] + slice_cols].copy()
    for name, p in preds.items():
        frame[f"prediction_{name}"] = p.astype(np.float32)
    overall, sliced = tfma_metrics(frame, label, {n: f"prediction_{n}" for n in preds}, config.evaluation.slices)
    t_tfma = time.perf_counter()
    y = df[label].to_numpy()
    result = Evaluation(split=split, overall=overall, slices=sliced,
                        calibration={n: calibration_bins(y, p) for n, p in preds.items()},
                        baseline_version=baseline_version)
    result.checks = judge(config, overall, baseline_version)
    result.blessed = all(c.passed for c in result.checks)
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.passed]
    result.reason = "; ".join(failed) if failed else "all thresholds met"
    result.seconds = {"predict": round(t_pred - t0, 3), "tfma": round(t_tfma - t_pred, 3)}
    storage.makedirs(out_dir)
    storage.write_json_atomic(join_uri(out_dir, artifacts.METRICS_FILE), asdict(result))
    storage.write_bytes_atomic(join_uri(out_dir, "index.html"), render_html(config, result).encode())
    return result


def blessing_of(result: Evaluation) -> dict:
    return {"blessed": result.blessed, "reason": result.reason, "baseline_version": result.baseline_version,
            "checks": [asdict(c) for c in result.checks]}


def render_html(config: PlatformConfig, r: Evaluation) -> str:
    def fmt(v):
        return "" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4f}")

    models = list(r.overall)
    metric_names = sorted({k for m in r.overall.values() for k in m})
    rows = "".join(f"<tr><th>{html.escape(m)}</th>" + "".join(f"<td>{fmt(r.overall[n].get(m))}</td>" for n in models)
                   + "</tr>" for m in metric_names)
    checks = "".join(f"<li class={'ok' if c.passed else 'bad'}>{html.escape(c.name)}: {html.escape(c.detail)}</li>"
                     for c in r.checks)
    slice_rows = "".join(
        f"<tr><td>{html.escape(', '.join(f'{k}={v}' for k, v in s['slice'].items()))}</td><td>{s['model']}</td>"
        f"<td>{fmt(s['metrics'].get('example_count'))}</td><td>{fmt(s['metrics'].get('auc'))}</td>"
        f"<td>{fmt(s['metrics'].get('calibration'))}</td></tr>" for s in r.slices)
    cal = "".join(f"<tr><td>{n}</td><td>{b['bin'][0]:.1f}-{b['bin'][1]:.1f}</td><td>{b['count']}</td>"
                  f"<td>{b['mean_prediction']:.3f}</td><td>{b['mean_label']:.3f}</td></tr>"
                  for n, bins in r.calibration.items() for b in bins)
    verdict = "BLESSED" if r.blessed else "NOT BLESSED"
    return f"""<!doctype html><meta charset=utf-8><title>{config.project} evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}
.ok{{color:#060}}.bad{{color:#b00}}table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style>
<h1>{html.escape(config.project)}: {verdict}</h1><p>{html.escape(r.reason)}</p><ul>{checks}</ul>
<h2>Overall ({r.split} split)</h2><table><tr><th></th>{''.join(f'<th>{m}</th>' for m in models)}</tr>{rows}</table>
<h2>Slices</h2><table><tr><th>slice</th><th>model</th><th>examples</th><th>AUC</th><th>calibration</th></tr>{slice_rows}</table>
<h2>Calibration</h2><table><tr><th>model</th><th>bin</th><th>n</th><th>mean prediction</th><th>mean label</th></tr>{cal}</table>"""


def production_baseline(config: PlatformConfig):
    """The model currently serving production (None before the first promotion)."""
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import ModelRegistry

    try:
        return ModelRegistry(config.artifact_root).resolve(f"{config.project}@production")
    except RegistryNotFound:
        return None


def run_step(config: PlatformConfig, *, examples_dir: str, examples_uri: str, model_dir: str, model_uri: str,
             evaluation_dir: str, evaluation_uri: str, blessing_dir: str, blessing_uri: str, pipeline: str,
             run_id: str, enable_cache: bool = True, log=print) -> dict:
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step, run_cached

    baseline = production_baseline(config)
    if baseline is not None and [f["name"] for f in baseline.features] != [f.name for f in artifacts.model_features(config)]:
        # Production was trained on other inputs: it cannot score these examples, so the change
        # threshold does not apply (the value threshold still does).
        log(f"evaluator: production {baseline.selector} has other input features; not used as baseline")
        baseline = None
    baseline_dir = baseline.uri if baseline else None
    baseline_version = baseline.selector if baseline else ""

    def work() -> dict:
        result = evaluate(config, examples_dir, model_dir, evaluation_dir, baseline_model_dir=baseline_dir,
                          baseline_version=baseline_version)
        storage.write_json_atomic(join_uri(blessing_dir, artifacts.BLESSING_FILE), blessing_of(result))
        return {"blessing": blessing_of(result), "overall": result.overall, "seconds": result.seconds}

    result, cached = run_cached(
        config, "evaluator", CODE_VERSION, sections=["dataset", "evaluation"],
        inputs={"examples": examples_dir, "model": model_dir},
        outputs={"evaluation": evaluation_dir, "blessing": blessing_dir},
        params={"baseline": baseline_version}, work=work, enabled=enable_cache, log=log)
    blessing = result["blessing"]
    log(f"evaluator: {'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}: {blessing['reason']}")
    record_step(
        config, pipeline=pipeline, run_id=run_id, component="evaluator",
        inputs={"examples": [ArtifactRef("Examples", examples_uri)], "model": [ArtifactRef("Model", model_uri)]},
        outputs={"evaluation": [ArtifactRef("ModelEvaluation", evaluation_uri, properties={
                     "metrics": json.dumps(result["overall"].get(CANDIDATE, {})), "baseline_version": baseline_version})],
                 "blessing": [ArtifactRef("ModelBlessing", blessing_uri, properties={
                     "blessed": int(blessing["blessed"]), "reason": blessing["reason"],
                     "baseline_version": baseline_version})]},
        properties={"code_version": CODE_VERSION}, state="CACHED" if cached else "COMPLETE")
    return {**result, "cached": cached}
