"""Evaluator logic without TensorFlow: thresholds, the blessing, calibration; TFMA on a frame, and
the NumPy slice metrics against real TFMA, slice by slice."""

import numpy as np
import pandas as pd
import pytest

from components.evaluator.executor import (
    BASELINE,
    CANDIDATE,
    METRIC_NAMES,
    METRICS,
    EvaluationInputError,
    EvaluatorError,
    _analyze_raw_data,
    _value,
    binary_metrics,
    calibration_bins,
    check_parity,
    judge,
    slice_metrics,
    tfma_overall,
)
from mlops.config import load_config
from tests.support.fixtures import FLIGHTS_CONFIG


@pytest.fixture
def config(artifact_root):
    return load_config(FLIGHTS_CONFIG, overrides={"evaluation.min_auc": 0.65, "evaluation.max_auc_drop": 0.01})


def test_value_threshold(config):
    [check, no_baseline] = judge(config, {CANDIDATE: {"auc": 0.70}}, "")
    assert check.passed and no_baseline.passed and "no production model" in no_baseline.detail
    [check, _] = judge(config, {CANDIDATE: {"auc": 0.60}}, "")
    assert not check.passed and "0.6000 < 0.65" in check.detail


def test_change_threshold_against_production(config):
    checks = judge(config, {CANDIDATE: {"auc": 0.700}, BASELINE: {"auc": 0.705}}, "flights@2")
    assert all(c.passed for c in checks)  # a drop of 0.005 <= 0.01 is allowed
    checks = judge(config, {CANDIDATE: {"auc": 0.700}, BASELINE: {"auc": 0.720}}, "flights@2")
    drop = [c for c in checks if c.name == "max_auc_drop"][0]
    assert not drop.passed and "flights@2" in drop.detail and "-0.0200" in drop.detail


def test_undefined_auc_is_not_blessed(config):
    [check] = judge(config, {CANDIDATE: {"auc": None}}, "")
    assert not check.passed and "undefined" in check.detail


def test_calibration_bins():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.95])
    bins = calibration_bins(y, p)
    assert [b["count"] for b in bins] == [1, 1, 1, 1]
    assert bins[0]["mean_label"] == 0 and bins[-1]["mean_label"] == 1


def test_binary_metrics_definitions():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.7, 0.9], dtype=np.float32)
    m = binary_metrics(y, p)
    assert m["example_count"] == 5 and m["mean_label"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["binary_accuracy"] == pytest.approx(3 / 5)
    assert m["calibration"] == pytest.approx(float(p.astype(np.float64).sum()) / 3)
    assert m["auc"] == pytest.approx(5 / 6, abs=1e-3)  # 5 of the 6 (positive, negative) pairs ranked right
    one_class = binary_metrics(np.zeros(3), np.array([0.2, 0.3, 0.4]))
    # TFMA's rules: no positive label -> calibration and recall undefined, AUC sums NaN rates as 0;
    # no positive prediction -> precision undefined
    assert one_class["calibration"] is None and one_class["recall"] is None and one_class["precision"] is None
    assert one_class["auc"] == 0.0 and one_class["binary_accuracy"] == 1.0


def test_binary_metrics_rejects_bad_inputs():
    with pytest.raises(EvaluationInputError, match="NaN"):
        binary_metrics(np.array([0, 1]), np.array([0.5, np.nan]))
    with pytest.raises(EvaluationInputError, match=r"labels must be in \[0, 1\]"):
        binary_metrics(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(EvaluationInputError, match="2 labels but 3 predictions"):
        binary_metrics(np.array([0, 1]), np.array([0.5, 0.5, 0.5]))


def test_check_parity_names_the_disagreeing_metric():
    tfma = {CANDIDATE: {"auc": 0.75, "precision": None, "example_count": 10.0}}
    assert check_parity(tfma, {CANDIDATE: {"auc": 0.75, "precision": None, "example_count": 10.0}}) == 0.0
    with pytest.raises(EvaluatorError, match="candidate auc: TFMA 0.75, NumPy 0.76"):
        check_parity(tfma, {CANDIDATE: {"auc": 0.76, "precision": None, "example_count": 10.0}})
    with pytest.raises(EvaluatorError, match="candidate precision: TFMA None, NumPy 0.5"):
        check_parity(tfma, {CANDIDATE: {"auc": 0.75, "precision": 0.5, "example_count": 10.0}})


def test_slice_metrics_groups_like_a_slicing_spec():
    df = pd.DataFrame(
        {
            "label": [0, 1, 1, 0, 1],
            "carrier": ["AA", "AA", None, "UA", "UA"],
            "hour": np.array([5, 5, 6, 6, np.nan], dtype=np.float32),
            "p": np.array([0.2, 0.8, 0.6, 0.3, 0.9], dtype=np.float32),
        }
    )
    out = slice_metrics(df, "label", {CANDIDATE: "p"}, [["carrier"], ["carrier", "hour"]])
    keys = [s["slice"] for s in out]
    assert keys == [
        {"carrier": "AA", "hour": 5.0},
        {"carrier": "AA"},
        {"carrier": "UA", "hour": 6.0},
        {"carrier": "UA"},
    ]  # sorted by JSON; rows with a missing slice value are in no slice
    assert [s["metrics"]["example_count"] for s in out] == [2, 2, 1, 2]
    with pytest.raises(EvaluationInputError, match="'dest'"):
        slice_metrics(df, "label", {CANDIDATE: "p"}, [["dest"]])


def _tfma_sliced(df: pd.DataFrame, label: str, predictions: dict[str, str], slices: list[list[str]]) -> dict:
    """Real TFMA with one SlicingSpec per slice (what the Evaluator ran before the NumPy slices):
    (slice items, model) -> metrics."""
    import tempfile

    import tensorflow_model_analysis as tfma

    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(name=n, label_key=label, prediction_key=c) for n, c in predictions.items()],
        metrics_specs=[
            tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name=m) for m in METRICS], model_names=list(predictions))
        ],
        slicing_specs=[tfma.SlicingSpec(feature_keys=s) for s in slices],
    )
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        _analyze_raw_data(df, eval_config, tmp)
        for model in predictions:
            for slice_key, by_output in tfma.load_eval_result(tmp, model_name=model).slicing_metrics:
                key = tuple(sorted((k, v.decode() if isinstance(v, bytes) else v) for k, v in slice_key))
                out[key, model] = {k: _value(v) for k, v in by_output[""][""].items()}
    return out


@pytest.mark.integration
def test_numpy_slice_metrics_equal_tfma_per_slice():
    """Parity with TFMA 0.47 on every metric of every slice, edge cases included: predictions on
    TFMA's histogram bucket edges (k/10000) and AUC thresholds (k/9999), exactly 0, 0.5 and 1; a
    slice with one class only, one with a single example, one with no prediction above 0.5
    (undefined precision); missing slice values (None strings, NaN floats); a numeric and a
    two-column slice; two models."""
    rng = np.random.default_rng(7)
    n = 3000
    carrier = rng.choice(["AA", "UA", "DL", "B6"], n).astype(object)
    y = (rng.random(n) < np.where(carrier == "DL", 0.35, 0.2)).astype(np.int64)
    good = np.clip(0.15 + 0.35 * y + rng.normal(0, 0.2, n), 0, 1)
    edges = np.concatenate(
        [rng.integers(0, 10001, 60) / 10000, rng.integers(0, 10000, 60) / 9999, [0.0, 0.5, 1.0, 0.5, 0.0001, 0.9999]]
    )
    good[rng.choice(n, edges.size, replace=False)] = edges
    coin = rng.random(n)
    carrier[:40], y[:40] = "HA", 0  # one class only
    carrier[40] = "OO"  # a single example
    carrier[41:90], coin[41:90], good[41:90] = "9E", coin[41:90] * 0.5, good[41:90] * 0.5  # nothing above 0.5
    origin = rng.choice(["JFK", "LGA", "EWR"], n).astype(object)
    origin[rng.choice(n, 50, replace=False)] = None
    engines = rng.choice([1.0, 2.0, 4.0], n).astype(np.float32)
    engines[rng.choice(n, 50, replace=False)] = np.nan
    df = pd.DataFrame(
        {
            "label": y,
            "carrier": carrier,
            "origin": origin,
            "engines": engines,
            "good": good.astype(np.float32),
            "coin": coin.astype(np.float32),
        }
    )
    predictions = {CANDIDATE: "good", BASELINE: "coin"}
    slices = [["carrier"], ["origin"], ["engines"], ["carrier", "origin"]]

    expected = _tfma_sliced(df, "label", predictions, slices)
    got = {
        (tuple(sorted(s["slice"].items())), s["model"]): s["metrics"]
        for s in slice_metrics(df, "label", predictions, slices)
    }
    assert set(got) == set(expected)
    assert {k[0] for k in got} >= {(("carrier", "HA"),), (("carrier", "OO"),), (("engines", 4.0),)}
    assert all(v is not None and v == v for k in got for _, v in k[0])  # no None/NaN slice value
    assert expected[(("carrier", "9E"),), CANDIDATE]["precision"] is None  # the edge cases are exercised
    assert expected[(("carrier", "HA"),), CANDIDATE]["calibration"] is None
    for key, tfma_metrics in expected.items():
        assert set(tfma_metrics) == set(METRIC_NAMES), key
        for name in METRIC_NAMES:
            want, have = tfma_metrics[name], got[key][name]
            if want is None:
                assert have is None, (key, name, have)
            else:  # measured: equal to the last bit; the tolerance only allows summation order
                assert have == pytest.approx(want, abs=1e-9, rel=1e-12), (key, name)


@pytest.mark.integration
def test_tfma_overall_two_models():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "label": y,
            "carrier": rng.choice(["AA", "UA"], n),
            "good": np.clip(y * 0.5 + rng.random(n) * 0.5, 0, 1).astype("float32"),
            "coin": rng.random(n).astype("float32"),
        }
    )
    overall = tfma_overall(df, "label", {CANDIDATE: "good", BASELINE: "coin"})
    assert overall[CANDIDATE]["auc"] > 0.9 and 0.4 < overall[BASELINE]["auc"] < 0.6
    assert overall[CANDIDATE]["example_count"] == n and set(overall[BASELINE]) == set(METRIC_NAMES)
    numpy = {m: binary_metrics(y, df[c].to_numpy()) for m, c in ((CANDIDATE, "good"), (BASELINE, "coin"))}
    assert check_parity(overall, numpy) <= 1e-12
