"""Confidence-based performance estimation (CBPE), as NannyML defines it: the performance of a
window estimated from the model's probabilities before its labels arrive, with the sampling error
of the estimate, then held against the realised metrics once they do.

Fit on a reference: the labelled rows of the version's examples its weights were not fit on (the
test split the Evaluator scored and the eval split early stopping watched: the bigger the
reference, the less an isotonic fit follows its noise; the training split only when neither
exists, recorded as such), with the version's own predictions on them (computed once per
version, kept under <artifact_root>/monitoring/reference/<name>/<version>/evaluation.parquet).
  * Calibrator: isotonic regression of the labels on the scores, used only when NannyML's
    `needs_calibration` check says it helps: 10 stratified 90/10 splits of the reference, the
    calibrator fitted on each 90 % and the expected calibration error (10 equal-count bins) of
    the pooled held-out 10 % compared with and without it.
  * Sampling-error components (NannyML's sampling_error.binary_classification): for AUC the
    standard deviation of the positives' normalised Mann-Whitney ranks and the positive share;
    for precision, recall and the positive rate the standard deviation of the observation-level
    metric and the share of rows it is defined on.
Estimate on a window of n scores p, calibrated q: the expected confusion matrix at the decision
threshold (TP = sum q | p > t, ...) and the expected ROC curve (the model's ranking, fractional
labels q): the Evaluator's binary_metrics(label=q, prediction=p), so one definition of every
metric. `mean_label` is the expected positive rate ((TP + FN) / n). The sampling error is
std / sqrt(n * share) and the band is the estimate +/- 3 sampling errors (NannyML's confidence
band: where the realised metric lands in ~99 % of windows when CBPE's assumptions hold).

CBPE assumes the probabilities stay calibrated on the window: covariate shift into regions
where the model is calibrated, no concept shift. It cannot see a change of P(label | features),
or a model extrapolating out of its training support, by design. Once labels arrive `compare`
checks the assumption: a realised metric outside its band refutes the estimate and raises the
signal "CBPE unreliable: concept drift suspected".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from components.evaluator.executor import DECISION_THRESHOLD, binary_metrics

CBPE_METRICS = ("auc", "precision", "recall", "mean_label")
SAMPLING_ERROR_RANGE = 3  # NannyML: the confidence band is the estimate +/- 3 standard errors
EVALUATION_FILE = "evaluation.parquet"
HELD_OUT_SPLITS = ("test", "eval")  # labelled rows the model's weights were not fit on
LABEL, SCORE = "label", "prediction"
CALIBRATION_SPLITS, CALIBRATION_BINS = 10, 10  # NannyML's needs_calibration defaults
UNRELIABLE = "CBPE unreliable: concept drift suspected"


@dataclass
class Reference:
    """What CBPE learns from the labelled reference."""

    split: str | None
    rows: int
    calibrated: bool = False
    ece: dict = field(default_factory=dict)  # {"uncalibrated", "calibrated"}: needs_calibration's check
    components: dict = field(default_factory=dict)  # metric -> (std, share) or None
    calibrator: object = None

    def describe(self) -> dict:
        return {"split": self.split, "rows": self.rows, "calibrated": self.calibrated, "ece": self.ece}

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        return self.calibrator.predict(scores) if self.calibrator is not None else scores


# ---- the reference ---------------------------------------------------------------------------
def evaluation_frame(config, ref) -> tuple[pd.DataFrame, str | None]:
    """(label, prediction) of the version on the labelled rows of its held-out splits (test + eval;
    train when neither exists) and their names ("test+eval"); cached per version. An empty frame
    when the lineage's Examples hold no labelled row."""
    from components.monitor.reference import predict
    from mlops import artifacts, storage
    from mlops.config import join_uri

    name, version = ref.selector.split("@")
    cached = join_uri(config.artifact_root, "monitoring", "reference", name, version, EVALUATION_FILE)
    if storage.exists(cached):
        fs, path = storage.fs_and_path(cached)
        with fs.open(path, "rb") as f:
            frame = pd.read_parquet(f)
        return frame[[LABEL, SCORE]], _split_of(frame)
    label = config.dataset.label.column
    present = [s for s in HELD_OUT_SPLITS if storage.exists(artifacts.split_path(ref.examples_dir, s))]
    if not present and storage.exists(artifacts.split_path(ref.examples_dir, "train")):
        present = ["train"]  # no held-out split: the training split, recorded as such
    columns = [*ref.features, label]
    rows = pd.concat([artifacts.read_split(ref.examples_dir, s, columns=columns) for s in present] or [pd.DataFrame()])
    rows = rows[rows[label].notna()].reset_index(drop=True) if len(rows) else rows
    if not len(rows):
        return pd.DataFrame({LABEL: [], SCORE: []}), None
    split = "+".join(present)
    frame = pd.DataFrame({LABEL: rows[label].to_numpy(dtype=np.float64), SCORE: predict(ref, rows)})
    import io

    buffer = io.BytesIO()
    frame.assign(split=split).to_parquet(buffer, index=False)
    storage.write_bytes_atomic(cached, buffer.getvalue())
    return frame, split


def _split_of(frame: pd.DataFrame) -> str | None:
    return str(frame["split"].iloc[0]) if "split" in frame and len(frame) else None


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """NannyML's ECE: equal-count bins of the sorted scores, |mean score - mean label| weighted."""
    order = np.argsort(scores, kind="stable")
    y, p = labels[order], scores[order]
    edges = np.linspace(0, len(p), min(bins, max(len(p) // 2, 1)) + 1).astype(int)
    return float(sum((hi - lo) / len(p) * abs(p[lo:hi].mean() - y[lo:hi].mean()) for lo, hi in zip(edges, edges[1:])))


def _isotonic():
    from sklearn.isotonic import IsotonicRegression

    return IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)


def needs_calibration(labels: np.ndarray, scores: np.ndarray) -> tuple[bool, dict]:
    """NannyML's needs_calibration: does isotonic calibration lower the cross-validated ECE?"""
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(labels)) < 2 or min(np.bincount(labels.astype(np.int64))) < CALIBRATION_SPLITS:
        return False, {}
    if binary_metrics(labels, scores)["auc"] > 0.999:
        return False, {}
    folds = StratifiedShuffleSplit(n_splits=CALIBRATION_SPLITS, test_size=0.1, random_state=42)
    y, raw, cal = [], [], []
    for fit_rows, held_out in folds.split(scores, labels):
        y.append(labels[held_out])
        raw.append(scores[held_out])
        cal.append(_isotonic().fit(scores[fit_rows], labels[fit_rows]).predict(scores[held_out]))
    y, raw, cal = np.concatenate(y), np.concatenate(raw), np.concatenate(cal)
    ece = {"uncalibrated": expected_calibration_error(y, raw), "calibrated": expected_calibration_error(y, cal)}
    return ece["calibrated"] < ece["uncalibrated"], ece


def auc_components(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float] | None:
    """NannyML's auroc_sampling_error_components: AUC as a Mann-Whitney statistic, the standard
    deviation of each positive's share of negatives ranked below it, and the positive share (the
    minority class taken as positive)."""
    y, p = labels, scores
    if y.mean() > 0.5:
        y, p = 1.0 - y, 1.0 - p
    y = y[np.argsort(p, kind="stable")]
    positives = np.flatnonzero(y == 1)
    negatives = len(y) - len(positives)
    if not len(positives) or not negatives:
        return None
    below = positives - np.arange(len(positives))  # negatives ranked below each positive
    return float(np.std(below / negatives)), len(positives) / len(y)


def _components_of(observations: np.ndarray, share: float) -> tuple[float, float] | None:
    return (float(np.std(observations)), share) if len(observations) and share > 0 else None


def fit(labels, scores, split: str | None = None) -> Reference:
    """CBPE fitted on a labelled reference (see the module doc)."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if not y.size:
        return Reference(split=None, rows=0)
    calibrate, ece = needs_calibration(y, p)
    positive = p > DECISION_THRESHOLD  # the Evaluator's decision: predicted positive when p > 0.5
    n = float(y.size)
    return Reference(
        split=split,
        rows=int(y.size),
        calibrated=calibrate,
        ece=ece,
        calibrator=_isotonic().fit(p, y) if calibrate else None,
        components={
            "auc": auc_components(y, p),
            "precision": _components_of(y[positive], positive.sum() / n),
            "recall": _components_of(positive[y == 1].astype(np.float64), (y == 1).sum() / n),
            "mean_label": _components_of(y, 1.0),
        },
    )


def fit_reference(config, ref) -> Reference:
    """CBPE fitted on a registered version's labelled held-out rows (ref: a TrainingReference)."""
    frame, split = evaluation_frame(config, ref)
    return fit(frame[LABEL].to_numpy(), frame[SCORE].to_numpy(), split)


# ---- the estimate ----------------------------------------------------------------------------
def sampling_error(reference: Reference, metric: str, rows: int) -> float | None:
    """NannyML's sampling error of `metric` on a window of `rows` rows: std / sqrt(rows * share)."""
    components = reference.components.get(metric)
    if components is None or rows <= 0:
        return None
    std, share = components
    return std / math.sqrt(rows * share)


def estimate(reference: Reference, probabilities) -> dict:
    """{metric: {value, sampling_error, low, high}} for AUC, precision, recall and the positive
    rate of a window, estimated without its labels."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if not p.size:
        return {m: {"value": None, "sampling_error": None, "low": None, "high": None} for m in CBPE_METRICS}
    expected = binary_metrics(reference.calibrate(p), p)
    out = {}
    for m in CBPE_METRICS:
        value, error = expected[m], sampling_error(reference, m, p.size)
        band = (None, None)
        if value is not None and error is not None:
            band = (max(0.0, value - SAMPLING_ERROR_RANGE * error), min(1.0, value + SAMPLING_ERROR_RANGE * error))
        out[m] = {"value": value, "sampling_error": error, "low": band[0], "high": band[1]}
    return out


# ---- once labels arrive ----------------------------------------------------------------------
def compare(live: dict, estimated: dict) -> dict:
    """The realised metrics (binary_metrics of the labelled window) against the estimates:
    {metrics: {m: {live, estimate, low, high, within_band}}, outside_band: [...], reliable, signal}.
    A realised metric outside its band refutes the estimate: CBPE's assumptions (calibrated
    probabilities, no concept shift) do not hold on the window."""
    metrics = {}
    for m, e in estimated.items():
        value, low, high = live.get(m), e.get("low"), e.get("high")
        within = None if None in (value, low, high) else bool(low <= value <= high)
        metrics[m] = {"live": value, "estimate": e.get("value"), "low": low, "high": high, "within_band": within}
    outside = [m for m, c in metrics.items() if c["within_band"] is False]
    checked = any(c["within_band"] is not None for c in metrics.values())
    return {
        "metrics": metrics,
        "outside_band": outside,
        "reliable": (not outside) if checked else None,
        "signal": f"{UNRELIABLE} ({', '.join(outside)} outside the band)" if outside else None,
    }
