"""Continuous evaluation on synthetic payload logs (written by serving's PayloadLogger) and labels
that arrive late, twice or never; a tiny real SavedModel registered with its training lineage in
real ML Metadata (SQLite); one real monitoring run of the same window for the CBPE comparison.

Window 1 (00:00-01:00): 1,500 predictions, labels drawn from the model's own probabilities
(calibrated), 100 never labelled, 50 labelled twice (a wrong first label, corrected later), 200
labelled after the window closed, plus 30 labels of unknown requests and 5 without a value.
Window 2 (02:00-03:00): 3,000 predictions whose labels flip meaning half way (concept drift)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from components.monitor.executor_test import START, log_window, run_monitor, synthetic_rows, train_reference
from mlops.config import load_config
from tests.support.fixtures import FLIGHTS_CONFIG

HOUR = pd.Timedelta(hours=1)
DRIFT_START = START + 2 * HOUR


def request_ids(start: pd.Timestamp, n: int) -> np.ndarray:
    return np.array([f"r1-{start.value}-{j}" for j in range(n)], dtype=object)  # log_window's ids


def prediction_times(start: pd.Timestamp, n: int) -> list[pd.Timestamp]:
    return [start + pd.Timedelta(seconds=300 * i) for i, c in enumerate(np.array_split(np.arange(n), 10)) for _ in c]


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model_dirs):
    from tests.support.serving_models import tiny_probability

    root = str(tmp_path_factory.mktemp("live") / "artifacts")
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": root, "monitoring.reference_rows": 3000})
    train_reference(config, root, tiny_model_dirs[1])
    rows = synthetic_rows(1500, seed=11)
    log_window(config, "1", rows, START)
    drift_rows = synthetic_rows(3000, seed=13)
    log_window(config, "1", drift_rows, DRIFT_START, source="stream")

    rng = np.random.default_rng(5)
    p = np.asarray(tiny_probability(rows), dtype=np.float32)
    y = (rng.random(p.size) < p).astype(np.int64)
    ids, times = request_ids(START, p.size), prediction_times(START, p.size)
    order = rng.permutation(p.size)
    missing, duplicated, late = order[:100], order[100:150], order[150:350]
    label_time = np.array([t + pd.Timedelta(minutes=10) for t in times])
    label_time[late] = [times[i] + 2 * HOUR for i in late]
    keep = np.setdiff1d(np.arange(p.size), missing)
    labels = pd.DataFrame({"request_id": ids[keep], "is_delayed": y[keep], "label_time": label_time[keep]})
    earlier = pd.DataFrame(  # first labels of the duplicated requests: wrong, superseded by the later one
        {
            "request_id": ids[duplicated],
            "is_delayed": 1 - y[duplicated],
            "label_time": [times[i] + pd.Timedelta(minutes=5) for i in duplicated],
        }
    )
    strangers = pd.DataFrame(
        {"request_id": [f"unknown-{i}" for i in range(30)], "is_delayed": 1, "label_time": START + HOUR}
    )
    no_value = pd.DataFrame({"request_id": ids[keep[:5]], "is_delayed": np.nan, "label_time": START + 3 * HOUR})
    # the duplicates' corrections come first in the file: the rule is by label_time, not file order
    frame = pd.concat([labels, earlier, strangers, no_value], ignore_index=True)
    frame["label_time"] = pd.to_datetime(frame["label_time"], utc=True)
    labels_uri = f"{root}/labels/window1.parquet"
    os.makedirs(os.path.dirname(labels_uri))
    frame.to_parquet(labels_uri, index=False)

    dp = np.asarray(tiny_probability(drift_rows), dtype=np.float32)
    dy = (rng.random(dp.size) < dp).astype(np.int64)
    dy[1500:] = (rng.random(1500) >= dp[1500:]).astype(np.int64)  # the relation flips: concept drift
    drift_uri = f"{root}/labels/window2.csv"
    pd.DataFrame({"request_id": request_ids(DRIFT_START, dp.size), "is_delayed": dy}).to_csv(drift_uri, index=False)
    return {
        "config": config,
        "labels": labels_uri,
        "drift_labels": drift_uri,
        "expected": (y[keep], p[keep]),
        "carrier": rows["carrier"][keep],
        "dp": dp,
        "dy": dy,
    }


def evaluate(live, window=(0, 1), labels=None, run_id="live-1", **kw):
    from components.monitor.executor import default_out_dir
    from components.monitor.live_evaluation import evaluate as run

    config = live["config"]
    start, end = START + window[0] * HOUR, START + window[1] * HOUR
    out = default_out_dir(config, "flights", run_id)
    result = run(
        config,
        "flights@production",
        labels or live["labels"],
        start,
        end,
        out,
        run_id=run_id,
        log=lambda *_: None,
        **kw,
    )
    return result, out


def test_late_duplicate_and_missing_labels_are_counted_and_metrics_are_the_evaluators(live):
    from components.evaluator.executor import binary_metrics, slice_metrics

    result, out = evaluate(live, every="30m")
    assert result["labels"]["join_keys"] == ["request_id"]
    assert result["counts"] == {
        "predictions": 1500,
        "matched": 1400,
        "unmatched_predictions": 100,
        "labels": 1400 + 50 + 30 + 5,
        "duplicate_labels": 50,
        "labels_without_value": 5,
        "unmatched_labels": 30,
        "duplicate_prediction_keys": 0,
        "late_labels": 200,
    }
    y, p = live["expected"]
    assert result["metrics"] == binary_metrics(y, p)  # the last label won, the one definition of AUC
    assert result["metrics"]["auc"] > 0.55
    frame = pd.DataFrame({"label": y, "prediction": p, "carrier": live["carrier"]})
    expected = slice_metrics(frame, "label", {"live": "prediction"}, [["carrier"]])
    assert [s for s in result["slices"] if "carrier" in s["slice"]] == [
        {"slice": s["slice"], "metrics": s["metrics"]} for s in expected
    ]
    by_slice = {json.dumps(s["slice"]): s["metrics"] for s in result["slices"]}
    assert by_slice['{"carrier": "UA"}']["example_count"] > 0 and '{"origin": "EWR"}' in by_slice
    [first, second] = result["windows"]
    assert (first["start"], second["end"]) == (START.isoformat(), (START + HOUR).isoformat())
    assert first["matched"] + second["matched"] == 1400
    assert all("calibration" in s["metrics"] for s in first["slices"])  # calibration per slice over time
    lag = result["label_lag_seconds"]
    assert lag["known"] == 1400 and lag["q0.5"] == 600.0 and lag["q1"] == 7200.0
    assert result["offline"]["auc"] == {
        "live": result["metrics"]["auc"],
        "offline": 0.66,
        "delta": result["metrics"]["auc"] - 0.66,
    }
    assert not result["concept_drift"]["detected"]
    assert sorted(os.listdir(out)) == ["live.json", "metrics.prom", "report.html"]
    prom = open(f"{out}/metrics.prom").read()
    assert 'mlops_live_rows{kind="unmatched_predictions",model="flights",version="1"} 100.0' in prom
    assert 'mlops_live_label_lag_seconds{model="flights",quantile="0.95",version="1"}' in prom
    assert f'mlops_live_metric{{metric="auc",model="flights",version="1"}} {result["metrics"]["auc"]!r}' in prom
    page = open(f"{out}/report.html").read()
    assert "Calibration per slice over time" in page and "<script" not in page


def test_compared_with_the_cbpe_of_the_monitoring_run_of_the_same_window(live):
    run_monitor(live["config"], (0, 1), run_id="mon-live")
    result, _ = evaluate(live, run_id="live-cbpe")
    cbpe = result["cbpe"]
    assert cbpe["monitoring_run"].endswith("/mon-live")
    auc = cbpe["metrics"]["auc"]
    assert auc["live"] == result["metrics"]["auc"] and auc["low"] < auc["estimate"] < auc["high"]
    assert auc["within_band"] is True  # labels drawn from the calibrated probabilities


def test_concept_drift_fires_after_the_change_and_not_before(live):
    from components.evaluator.executor import binary_metrics

    result, out = evaluate(live, window=(2, 3), labels=live["drift_labels"], run_id="live-drift")
    assert result["counts"]["matched"] == 3000 and result["label_lag_seconds"] == {"known": 0}
    assert result["metrics"] == binary_metrics(live["dy"], live["dp"])
    drift = result["concept_drift"]
    assert drift["detected"] and all(c >= 1500 for c in drift["changes"]), drift
    assert pd.Timestamp(drift["changes_at"][0]) >= DRIFT_START + pd.Timedelta(minutes=25)  # the flip's chunk
    assert 'mlops_live_concept_drift_detected{model="flights",version="1"} 1.0' in open(f"{out}/metrics.prom").read()


def test_the_run_is_recorded_with_payload_window_labels_and_model(live):
    from mlops.metadata.store import open_store

    _, out = evaluate(live, run_id="live-mlmd")
    store = open_store(live["config"])
    [artifact] = [a for a in store.list_artifacts("LiveEvaluation") if a.uri == out]
    assert artifact.properties["matched_rows"] == 1400 and artifact.properties["model"] == "flights@1"
    steps = store.lineage(artifact.id)
    assert steps[0].execution.component == "live_evaluation"
    inputs = {(s.consumed_as, s.artifact.type_name, s.artifact.uri) for s in steps if s.depth == 1}
    assert {(c, t) for c, t, _ in inputs} == {
        ("payload_window", "mlops.PayloadWindow"),
        ("labels", "mlops.Dataset"),
        ("model", "mlops.PushedModel"),
    }
    assert ("labels", "mlops.Dataset", live["labels"]) in inputs
    assert any(s.execution and s.execution.component == "trainer" for s in steps)  # through the model to training


def test_an_ingested_span_is_a_label_source_joined_by_entity_keys_and_event_time(live, tmp_path):
    """A span's rows joined by the dataset's entity keys + event time, when the logs carry them."""
    from components.monitor.live_evaluation import join, join_keys, load_labels
    from mlops.datasets.repository import DatasetRepository

    config = live["config"]
    t = pd.date_range("2013-04-01", periods=6, freq="h", tz="UTC")
    span = pd.DataFrame(
        {
            "origin": ["EWR", "JFK", "LGA", "EWR", "JFK", "LGA"],
            "dest": ["ATL"] * 6,
            "carrier": ["UA"] * 6,
            "tailnum": ["N1", "N2", "N3", "N4", "N5", "N6"],
            "time_hour": t,
            "is_delayed": [1, 0, 1, 0, 1, 0],
        }
    )
    version, _ = DatasetRepository(config.artifact_root).write("flights", span, source="test", span="2013-04")
    labels, sources = load_labels(config, "flights@2013-04")
    assert sources[0]["version_id"] == version.id and (labels["label_time"] == pd.Timestamp(version.created_at)).all()
    logged = (
        span.drop(columns="is_delayed")
        .iloc[[0, 1, 2, 3]]
        .assign(
            prediction=np.float32(0.5),
            timestamp=t[:4],
            time_hour=[x.isoformat() for x in t[:4]],  # logged as text
        )
    )
    keys = join_keys(config, labels, logged, [])
    assert keys == ["origin", "dest", "carrier", "tailnum", "time_hour"]
    joined, counts = join(logged, labels, keys)
    assert list(joined["label"]) == [1, 0, 1, 0]
    assert (counts["matched"], counts["unmatched_labels"]) == (4, 2)


@pytest.mark.parametrize(
    "labels, message, exit_code",
    [
        ("nolabel", "no label column 'is_delayed' (dataset.label.column)", 2),
        ("nokey", "labels have no join key: no 'request_id' column and not the key column(s) ['origin', 'dest'", 2),
        ("other", "--labels other@2013-04: dataset 'other', but the model is trained on dataset 'flights'", 2),
        ("nomatch", "no label of --labels", 1),
    ],
)
def test_bad_labels_fail_in_one_line_with_nothing_recorded(live, tmp_path, labels, message, exit_code):
    from click.testing import CliRunner

    from cli.main import cli
    from mlops.datasets.repository import DatasetRepository
    from mlops.metadata.store import open_store

    config = live["config"]
    spec = str(tmp_path / f"{labels}.parquet")
    if labels == "nolabel":
        pd.DataFrame({"request_id": ["a"], "delayed": [1]}).to_parquet(spec)
    elif labels == "nokey":
        pd.DataFrame({"flight": ["a"], "is_delayed": [1]}).to_parquet(spec)
    elif labels == "nomatch":
        pd.DataFrame({"request_id": ["a", "b"], "is_delayed": [1, 0]}).to_parquet(spec)
    else:
        frame = pd.DataFrame({"request_id": ["a"], "is_delayed": [1]})
        DatasetRepository(config.artifact_root).write("other", frame, source="test", span="2013-04")
        spec = "other@2013-04"
    before = len(open_store(config).list_artifacts("LiveEvaluation"))
    out = tmp_path / "out"
    args = ["monitor", "evaluate", "--config", str(FLIGHTS_CONFIG), "--set", f"artifact_root={config.artifact_root}"]
    args += ["--model", "flights@production", "--labels", spec, "--window", "2013-07-01:2013-07-02", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error")]
    assert message in line
    assert not out.exists() and len(open_store(config).list_artifacts("LiveEvaluation")) == before


def test_mlops_monitor_evaluate_command(live, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    config = live["config"]
    args = ["monitor", "evaluate", "--config", str(FLIGHTS_CONFIG), "--set", f"artifact_root={config.artifact_root}"]
    args += [
        "--model",
        "flights@production",
        "--labels",
        live["labels"],
        "--window",
        "2013-07-01T00:00:2013-07-01T01:00",
    ]
    ok = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert summary["counts"]["matched"] == 1400 and summary["concept_drift"] is False
    assert os.path.exists(summary["report"])
    bad = CliRunner().invoke(cli, [*args, "--every", "half an hour", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--every: 'half an hour' is not a duration" in bad.output
