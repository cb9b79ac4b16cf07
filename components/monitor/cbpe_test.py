"""CBPE (cbpe.py) on synthetic scores whose truth is known: labels drawn from the probabilities
(CBPE's assumptions hold) or from another relation (they do not)."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluator.executor import binary_metrics
from components.monitor import cbpe as C

pytestmark = pytest.mark.pipeline_env


def _logit(p):
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def draw(n, seed, shift=0.0):
    """True probabilities of a flights-like model (mean ~0.3, some above 0.5) and labels drawn from
    them; `shift` moves the true log-odds away from what the scores say (concept shift)."""
    rng = np.random.default_rng(seed)
    p = _sigmoid(rng.normal(-1.0, 1.2, n))
    labels = (rng.random(n) < _sigmoid(_logit(p) + shift)).astype(np.float64)
    return p, labels


def test_realised_metrics_land_in_the_band_when_the_probabilities_are_calibrated():
    p_ref, y_ref = draw(4000, seed=1)
    reference = C.fit(y_ref, p_ref, "test")
    assert reference.rows == 4000 and set(reference.components) == set(C.CBPE_METRICS)
    checked = inside = 0
    for seed in range(20):
        p, labels = draw(2000, seed=100 + seed)
        estimated, realised = C.estimate(reference, p), binary_metrics(labels, p)
        for metric, e in estimated.items():
            assert e["low"] < e["value"] < e["high"], (metric, e)
            assert e["high"] - e["value"] == pytest.approx(C.SAMPLING_ERROR_RANGE * e["sampling_error"])
            checked += 1
            inside += e["low"] <= realised[metric] <= e["high"]
    # +/- 3 sampling errors: ~99 % coverage when CBPE's assumptions hold
    assert inside >= 0.95 * checked, f"{inside} of {checked} realised metrics inside their band"


def test_the_sampling_error_is_the_spread_of_the_realised_metric():
    """NannyML's sampling error from the reference matches the standard deviation of the realised
    metric over many windows of the same size (and shrinks with the window as 1 / sqrt(n))."""
    p_ref, y_ref = draw(20000, seed=2)
    reference = C.fit(y_ref, p_ref)
    for rows in (500, 4000):
        realised = {m: [] for m in C.CBPE_METRICS}
        for seed in range(200):
            p, labels = draw(rows, seed=1000 + seed)
            for m, v in binary_metrics(labels, p).items():
                if m in realised and v is not None:
                    realised[m].append(v)
        for m in ("auc", "recall", "mean_label"):
            error = C.sampling_error(reference, m, rows)
            assert np.std(realised[m]) == pytest.approx(error, rel=0.25), (m, rows)
    assert C.sampling_error(reference, "auc", 4000) == pytest.approx(C.sampling_error(reference, "auc", 1000) / 2)


def test_isotonic_calibration_on_the_reference_repairs_miscalibrated_scores():
    """(On calibrated scores NannyML's needs_calibration is a coin toss, measured 12 of 20 references
    of 2,000 rows: either way the band holds, see the first test.)"""
    p_ref, y_ref = draw(4000, seed=3)
    overconfident = lambda p: _sigmoid(2.5 * _logit(p) + 1.0)  # noqa: E731  same ranking, wrong probabilities
    fitted = C.fit(y_ref, overconfident(p_ref))
    assert fitted.calibrated is True
    assert fitted.ece["calibrated"] < fitted.ece["uncalibrated"]
    uncalibrated = C.Reference(split=None, rows=fitted.rows, components=fitted.components)
    p, labels = draw(3000, seed=4)
    scores = overconfident(p)
    realised = binary_metrics(labels, scores)
    with_calibrator, without = C.estimate(fitted, scores), C.estimate(uncalibrated, scores)
    for m in ("auc", "precision", "recall", "mean_label"):
        assert with_calibrator[m]["low"] <= realised[m] <= with_calibrator[m]["high"], (m, with_calibrator[m])
    assert C.compare(realised, with_calibrator)["reliable"] is True
    assert C.compare(realised, without)["reliable"] is False  # the raw scores' confidence is not a probability


def test_a_concept_shift_refutes_the_estimate_and_raises_the_signal():
    p_ref, y_ref = draw(4000, seed=5)
    reference = C.fit(y_ref, p_ref)
    p, labels = draw(2000, seed=6, shift=1.0)  # the same scores, delays far more likely than they say
    result = C.compare(binary_metrics(labels, p), C.estimate(reference, p))
    assert result["reliable"] is False and "mean_label" in result["outside_band"]
    assert result["signal"].startswith(C.UNRELIABLE)
    assert result["metrics"]["mean_label"]["live"] > result["metrics"]["mean_label"]["high"]

    p, labels = draw(2000, seed=6)  # the same window, labels as the scores say
    result = C.compare(binary_metrics(labels, p), C.estimate(reference, p))
    assert result["reliable"] is True and result["signal"] is None and result["outside_band"] == []


def test_edge_cases_give_no_band_rather_than_a_wrong_one():
    p_ref, y_ref = draw(1000, seed=7)
    reference = C.fit(y_ref, p_ref)
    assert all(e["value"] is None and e["low"] is None for e in C.estimate(reference, []).values())
    empty = C.fit([], [])
    assert empty.rows == 0 and all(e["low"] is None for e in C.estimate(empty, p_ref[:100]).values())
    low = C.estimate(reference, np.full(200, 0.1))  # nothing predicted positive: precision undefined
    assert low["precision"]["value"] is None and low["precision"]["low"] is None
    assert low["auc"]["low"] >= 0.0 and low["recall"]["low"] == 0.0  # clipped to [0, 1]
    assert C.compare({"auc": None}, {"auc": low["auc"]})["reliable"] is None  # nothing to check yet
