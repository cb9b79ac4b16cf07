"""The monitoring proof on real flights, full size, as JSON (tests/integration/test_monitoring_real_data.py
is the small version the suite runs).

    .venv/pipeline/bin/python bench/monitoring_real_data.py [--train-rows 4000] [--window-rows 3000] [--out DIR]

A model trained on January-March 2013 (tests.support.monitoring_data.train_q1_model: the training
steps' own code, lineage in ML Metadata, registered and promoted); flights replayed through the
prediction path with payload logging at their scheduled hour: a held-out slice of January-March
(flights the training sample did not contain), April and July (`--window-rows` each; 0 = every
flight of the window). Each window is monitored (`mlops monitor run`'s code) and then evaluated
with the ingested spans' labels joined by request id (`mlops monitor evaluate`'s code). Printed
per window: rows, the drifted features, effect size and p-value per feature, prediction and joint
drift, and the CBPE estimate with its band beside the realised metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-rows", type=int, default=20000)
    ap.add_argument("--window-rows", type=int, default=3000, help="rows replayed per window (0: all)")
    ap.add_argument("--out", default="", help="artifact root to keep (default: a temporary directory)")
    a = ap.parse_args()
    from tests.support import monitoring_data as M

    root = a.out or tempfile.mkdtemp(prefix="monitoring-real-data-")
    t0 = time.perf_counter()
    trained = M.train_q1_model(f"{root}/artifacts", rows=a.train_rows)
    config = M.proof_config(trained)
    trained_s = time.perf_counter() - t0
    windows = M.replay_windows(config, trained, rows=a.window_rows or None)
    out = {
        "model": trained.selector,
        "train_rows": a.train_rows,
        "offline_auc": trained.metrics["auc"],
        "train_seconds": round(trained_s, 1),
        "artifact_root": trained.artifact_root,
        "windows": {},
    }
    for name, window in windows.items():
        t = time.perf_counter()
        out["windows"][name] = M.summary(*M.monitor_and_evaluate(config, window, run_id=f"bench-{name}"))
        out["windows"][name]["seconds"] = round(time.perf_counter() - t, 1)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
