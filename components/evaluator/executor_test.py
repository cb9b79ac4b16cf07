"""Evaluator logic without TensorFlow: thresholds, the blessing, calibration; TFMA on a frame."""

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_config

from components.evaluator.executor import BASELINE, CANDIDATE, calibration_bins, judge, tfma_metrics
from tests.conftest import FLIGHTS_CONFIG


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


@pytest.mark.integration
def test_tfma_metrics_overall_slices_and_two_models():
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"label": y, "carrier": rng.choice(["AA", "UA"], n),
                       "good": np.clip(y * 0.5 + rng.random(n) * 0.5, 0, 1).astype("float32"),
                       "coin": rng.random(n).astype("float32")})
    overall, sliced = tfma_metrics(df, "label", {CANDIDATE: "good", BASELINE: "coin"}, [["carrier"]])
    assert overall[CANDIDATE]["auc"] > 0.9 and 0.4 < overall[BASELINE]["auc"] < 0.6
    assert overall[CANDIDATE]["example_count"] == n
    counts = {s["slice"]["carrier"]: s["metrics"]["example_count"] for s in sliced if s["model"] == CANDIDATE}
    assert sum(counts.values()) == n and set(counts) == {"AA", "UA"}
