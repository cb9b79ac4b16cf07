"""Benchmark: the monitoring run's drift checks on a 10,000-row window with 20 features, as JSON.

    .venv/pipeline/bin/python bench/monitoring.py [--rows 10000] [--features 20] [--repeat 5]

Reference and window are synthetic (12 numeric, 8 categorical features; half of them shifted in
the window). Timed, each the median of --repeat runs after one warm-up:
  * default_drift: mlops.monitoring.drift.feature_drift (normalised Wasserstein + KS, Jensen-Shannon
    + chi-square + PSI per feature): the per-window check, target under 1 s;
  * prediction_drift: the same on the model's outputs;
  * domain_classifier: the default joint-space check (HistGradientBoosting, 2-fold, AUC);
  * cbpe: estimated AUC/precision/recall/positive rate with its band (cbpe.fit on a labelled
    reference timed apart as fit_seconds);
  * alibi_features: alibi-detect KSDrift/ChiSquareDrift per feature (BSL-1.1, selectable);
  * alibi_mmd: alibi-detect MMDDrift on the joint space (TensorFlow backend, 1,000 rows per side,
    100 permutations): reported beside the default check, as the issue asks.
Import times are not counted (reported apart: TensorFlow for alibi-detect costs seconds once).

End to end (`end_to_end`, skipped with --e2e-rows 0): one day of payload logs, --e2e-rows (1,000,000)
July flights from the synthetic generator (mlops.datasets.synthetic, the temperature from its
weather; seats, which it leaves to the planes table, drawn at random), predicted by the tiny test
model (tests.support.serving_models) and written by serving's PayloadLogger (100 calls over the day,
a file per 10,000 rows), monitored against a reference of 20,000 January-March flights (the model
registered with its training lineage, tests.support.monitored_model). Each monitoring run
(components.monitor.executor.monitor: chunked reads, TFDV statistics, drift, CBPE, domain
classifier, report, metrics, ML Metadata) runs in a fresh process that reports its seconds and its
peak RSS during the run (the kernel's high-water mark VmHWM, reset after the imports, which peak
higher: TensorFlow) and its RSS before the run: a warm-up window (10,000 rows: the
reference's predictions are computed and cached), then --small-rows (100,000) and the whole day.
Memory flat in the window size: `rss_ratio` (peak of the day / peak of the small window) near 1,
and `rss_growth_mb` (peak - RSS before the run) alike; target: the day under 30 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frames(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(seed)
    numeric, categorical = int(features * 0.6), features - int(features * 0.6)
    kinds, ref, cur = {}, {}, {}
    for i in range(numeric):
        name, shift = f"num_{i}", (0.5 if i % 2 else 0.0)
        kinds[name] = "numeric"
        ref[name] = rng.normal(0, 1, rows).astype(np.float32)
        cur[name] = rng.normal(shift, 1, rows).astype(np.float32)
        cur[name][rng.random(rows) < 0.01] = np.nan
    for i in range(categorical):
        name = f"cat_{i}"
        kinds[name] = "categorical"
        values = np.array([f"v{k}" for k in range(20)])
        p = rng.dirichlet(np.ones(20))
        q = rng.dirichlet(np.ones(20)) if i % 2 else p
        ref[name] = rng.choice(values, rows, p=p).astype(object)
        cur[name] = rng.choice(values, rows, p=q).astype(object)
    ref_df, cur_df = pd.DataFrame(ref), pd.DataFrame(cur)
    ref_df["prediction"] = rng.beta(2, 5, rows)
    cur_df["prediction"] = rng.beta(2.5, 5, rows)
    return ref_df, cur_df, kinds


def timed(fn, repeat: int) -> tuple[float, object]:
    fn()  # warm-up: first-call imports and caches
    seconds, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), out


# ---- end to end ------------------------------------------------------------------------------
DAY = pd.Timestamp("2013-07-02T00:00:00Z")
CALLS = 100  # logged calls over the day


def tiny_inputs(flights: pd.DataFrame, weather: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    """The tiny model's inputs of synthetic flights: the temperature at the origin's scheduled hour."""
    temp = flights.merge(weather[["origin", "time_hour", "temp"]], on=["origin", "time_hour"], how="left")["temp"]
    rng = np.random.default_rng(seed)
    return {
        "hour": flights["hour"].to_numpy(np.float32),
        "distance": flights["distance"].to_numpy(np.float32),
        "temp": temp.to_numpy(np.float32),
        "seats": rng.choice([55.0, 140.0, 180.0, 200.0], len(flights)).astype(np.float32),
        "carrier": flights["carrier"].to_numpy(object),
        "origin": flights["origin"].to_numpy(object),
        "dest": flights["dest"].to_numpy(object),
        "month": flights["month"].astype(str).to_numpy(object),
    }


def synthetic_inputs(rows: int, seed: int, start: str, months: int) -> dict[str, np.ndarray]:
    from mlops.datasets import synthetic

    calibration = synthetic.default_calibration()
    flights = pd.concat(list(synthetic.generate(calibration, rows, seed=seed, start=start, months=months)))
    weather = synthetic.generate_weather(calibration, seed=seed, start=start, months=months)
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return tiny_inputs(flights.reset_index(drop=True), weather, seed)


def config_for(root: str):
    from mlops.config import load_config

    return load_config(str(REPO / "configs" / "flights.yaml"), overrides={"artifact_root": root})


def prepare(root: str, rows: int) -> dict:
    """The registered model with its reference, and one day of payload logs; returns setup seconds."""
    from tests.support.monitored_model import log_window, train_reference
    from tests.support.serving_models import build_tiny_model

    t0 = time.perf_counter()
    config = config_for(f"{root}/artifacts")
    model_dir = build_tiny_model(f"{root}/model")
    reference = pd.DataFrame(synthetic_inputs(20_000, 1, "2013-01-01", 3))
    train_reference(config, config.artifact_root, model_dir, reference)
    trained = time.perf_counter() - t0
    window = synthetic_inputs(rows, 7, "2013-07-01", 1)
    t1 = time.perf_counter()
    log_window(config, "1", window, DAY, calls=CALLS, seconds=86_400, flush_rows=10_000)
    return {"reference_s": round(trained, 1), "log_s": round(time.perf_counter() - t1, 1)}


def proc_status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak) of this process, from /proc/self/status (kB)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


def reset_peak_rss() -> float:
    """Resets this process's peak RSS to its current RSS (Linux: "5" to /proc/self/clear_refs), so
    the peak read after the run is the run's, not the imports' (TensorFlow's import peaks above a
    monitoring run); returns the RSS before the run."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status_mb("VmRSS")


def child(root: str, window: str, run_id: str) -> None:
    """One monitoring run in this process: its seconds and peak RSS, as JSON on stdout."""
    import components.monitor.executor as executor

    config = config_for(f"{root}/artifacts")
    start, end = executor.parse_window(window)
    import sklearn.ensemble  # noqa: F401  (imports: in the baseline, not in the run)
    import tensorflow_data_validation  # noqa: F401

    imports_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = reset_peak_rss()
    t0 = time.perf_counter()
    out = executor.default_out_dir(config, "flights", run_id)
    result = executor.monitor(
        config, "flights@production", start, end, out, pipeline=executor.PIPELINE, run_id=run_id, log=lambda *_: None
    )
    seconds = time.perf_counter() - t0
    [version] = result["versions"]
    print(
        json.dumps(
            {
                "rows": result["rows"],
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(proc_status_mb("VmHWM"), 1),
                "rss_before_run_mb": round(baseline, 1),
                "imports_peak_rss_mb": round(imports_peak, 1),
                "sample_rows": version["sample"]["rows"],
                "drifted_features": version["verdict"]["drifted_features"],
            }
        )
    )


def end_to_end(rows: int, small_rows: int) -> dict:
    root = tempfile.mkdtemp(prefix="bench-monitoring-")
    setup = prepare(root, rows)
    per_call = 86_400 / CALLS

    def run(calls: int, run_id: str) -> dict:
        end = DAY + pd.Timedelta(seconds=calls * per_call - 1)
        argv = [sys.executable, __file__, "--child", root, "--window", f"{DAY.isoformat()}:{end.isoformat()}"]
        done = subprocess.run([*argv, "--run-id", run_id], capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"monitoring run {run_id} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    calls_per_row = CALLS / rows
    warm = run(max(1, round(10_000 * calls_per_row)), "bench-warm-up")
    small = run(max(1, round(small_rows * calls_per_row)), "bench-small")
    day = run(CALLS, "bench-day")
    return {
        "artifact_root": f"{root}/artifacts",
        "setup": setup,
        "warm_up": warm,
        "small_window": small,
        "day": day,
        "rows_ratio": round(day["rows"] / small["rows"], 1),
        "seconds_ratio": round(day["seconds"] / small["seconds"], 2),
        "rss_ratio": round(day["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "rss_growth_mb": {
            "small_window": round(small["peak_rss_mb"] - small["rss_before_run_mb"], 1),
            "day": round(day["peak_rss_mb"] - day["rss_before_run_mb"], 1),
        },
        "target_s": 30.0,
        "day_under_target": day["seconds"] < 30.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--e2e-rows", type=int, default=1_000_000, help="payload-log rows of the day (0: skip)")
    parser.add_argument("--small-rows", type=int, default=100_000, help="rows of the small end-to-end window")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--window", default="", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.window, args.run_id)
        return
    # first: importing alibi-detect puts IPython's extensions (a `tests` package) on sys.path
    e2e = end_to_end(args.e2e_rows, args.small_rows) if args.e2e_rows else None

    t0 = time.perf_counter()
    from components.monitor import estimates
    from mlops.monitoring import drift

    imports_default = time.perf_counter() - t0
    ref, cur, kinds = frames(args.rows, args.features)
    thresholds = dict(numeric_threshold=0.1, categorical_threshold=0.1, p_value=0.01)
    results: dict[str, dict] = {}

    seconds, found = timed(lambda: drift.feature_drift(ref, cur, kinds, **thresholds), args.repeat)
    results["default_drift"] = {"seconds": seconds, "drifted": sum(d.drifted for d in found), "target_s": 1.0}
    seconds, _ = timed(
        lambda: drift.numeric_drift("prediction", ref["prediction"], cur["prediction"], 0.1, 0.01), args.repeat
    )
    results["prediction_drift"] = {"seconds": seconds}
    seconds, found = timed(lambda: estimates.domain_classifier(ref, cur, kinds), max(1, args.repeat // 2))
    results["domain_classifier"] = {"seconds": seconds, "auc": found["score"]}
    from components.monitor import cbpe

    scores = ref["prediction"].to_numpy()  # a labelled reference: labels drawn from its probabilities
    labels = (np.random.default_rng(1).random(scores.size) < scores).astype(np.float64)
    seconds_fit, fitted = timed(lambda: cbpe.fit(labels, scores), max(1, args.repeat // 2))
    seconds, _ = timed(lambda: cbpe.estimate(fitted, cur["prediction"].to_numpy()), max(1, args.repeat // 2))
    results["cbpe"] = {"seconds": seconds, "fit_seconds": seconds_fit}

    t0 = time.perf_counter()
    import alibi_detect.cd  # noqa: F401  (TensorFlow comes with it)

    from components.monitor import alibi

    imports_alibi = time.perf_counter() - t0
    default = drift.feature_drift(ref, cur, kinds, **thresholds)
    seconds, found = timed(lambda: alibi.feature_drift(ref, cur, default, 0.01), 1)
    results["alibi_features"] = {"seconds": seconds, "drifted": sum(d.drifted for d in found)}
    seconds, found = timed(lambda: alibi.mmd(ref, cur, kinds, 0.01), 1)
    results["alibi_mmd"] = {"seconds": seconds, "drifted": found["drifted"], "rows_per_side": alibi.MMD_MAX_ROWS}

    default_s = results["default_drift"]["seconds"]
    print(
        json.dumps(
            {
                "rows": args.rows,
                "features": args.features,
                "expected_drifted_features": sum(1 for i in range(int(args.features * 0.6)) if i % 2)
                + sum(1 for i in range(args.features - int(args.features * 0.6)) if i % 2),
                "results": results,
                "ratios": {k: round(v["seconds"] / default_s, 2) for k, v in results.items()},
                "imports_s": {"default": round(imports_default, 2), "alibi_detect": round(imports_alibi, 2)},
                "default_under_target": default_s < 1.0,
                "end_to_end": e2e,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
