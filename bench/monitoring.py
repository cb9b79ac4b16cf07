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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

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
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
