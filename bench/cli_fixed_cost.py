"""Benchmark: the fixed cost of a short command, `mlops predict batch`, as JSON.

    .venv/pipeline/bin/python bench/cli_fixed_cost.py [--work DIR] [--rounds 3] [--checkout DIR]
        [--out bench/results/cli_fixed_cost.json]

Set-up: bench/serving.py's (reused when --work already holds it): a real flights model registered as
flights@production, January-February 2013 in the dataset repository, February in the SQLite online
store. Inputs: February flights, 100 and 10,000 rows, in two forms: "full" (every model input: no
feature lookup) and "lookup" (the dataset's own columns: the feature-store features come from the
Feast online store, as for `--input flights@2013-02`).

Each round runs, one after the other (so load from other jobs hits them alike): the floor, a bare
`python -c "import tensorflow"`, then the command for each form and size, as a new process
(`python -m cli predict batch ...`, INFO logging on so its phases are visible). Measured per run:
wall time from spawn to exit, the command's own work (the summary's `seconds`: read, enrich,
predict, write), and a breakdown from its stderr lines, time-stamped as they arrive.

Fixed cost of a form = the 100-row run's wall time minus its work. Beside it: the same by the slope
between 100 and 10,000 rows (the wall time of a run of no rows; on a loaded machine the noise of two
processes can make it exceed the wall time), and what is left once the TensorFlow import and the
model load timed inside that run are taken out (the part this project's code decides). Reported per
round and as min/median/max; the target (under 10 s) passes only if it passes in every round.
`--checkout` runs another checkout's code with the same interpreters (a before/after comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # run as a script: the repository root, not bench/, is first on sys.path

# Before TensorFlow: importing it puts a package named `tests` (IPython's) ahead of this repository's.
import tests.support.serving_models  # noqa: E402, F401
from bench.serving import MODEL, february_flights, log, machine, request_sets, setup, spread  # noqa: E402

SIZES = (100, 10_000)
FORMS = ("full", "lookup")
TARGET_FIXED_S = 10.0

# `python -m cli` with the serving handle's phase lines (INFO) on stderr.
COMMAND = """
import logging, runpy, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
logging.getLogger("mlops.serving").setLevel(logging.INFO)
sys.argv[0] = "mlops"
runpy.run_module("cli", run_name="__main__")
"""

# stderr line -> the moment it marks; the handle's own timings of its phases.
MILESTONES = {
    "config_loaded_at_s": r"^artifact root: ",
    "tf_import_started_at_s": r"^importing TensorFlow$",
    "model_ready_at_s": r"^serving \S+ from ",
    "recorded_at_s": r"^batch_predict: [0-9,]+ rows in ",
}
PHASES = {
    "tf_import_s": r"imported TensorFlow in ([0-9.]+) s",
    "model_load_s": r"loaded \S+ in ([0-9.]+) s",
    "feast_store_s": r"built the Feast FeatureStore in ([0-9.]+) s",
    "feast_read_warmup_s": r"warmed up the Feast online read in ([0-9.]+) s",
}


def timed_run(argv: list[str], env: dict, cwd: str) -> dict:
    """Runs `argv`; wall seconds, stdout, and each stderr line with the seconds since spawn at
    which it arrived."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_stderr():
        for line in proc.stderr:
            lines.append((time.monotonic() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    wall = time.monotonic() - started
    reader.join(10)
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-20:])
        shown = argv[3:] if argv[1:3] == ["-c", COMMAND] else argv  # the command's own arguments
        raise RuntimeError(f"{' '.join(shown)} exited with {proc.returncode}:\n{tail}")
    return {"wall_s": wall, "stdout": stdout, "stderr": lines}


def breakdown(run: dict) -> dict:
    """Where a run's wall time went, from its time-stamped stderr and its summary."""
    out: dict = {"wall_s": round(run["wall_s"], 2)}
    for key, pattern in MILESTONES.items():
        at = next((t for t, line in run["stderr"] if re.search(pattern, line)), None)
        out[key] = None if at is None else round(at, 2)
    text = "\n".join(line for _, line in run["stderr"])
    for key, pattern in PHASES.items():
        m = re.search(pattern, text)
        out[key] = float(m.group(1)) if m else None
    summary = json.loads(run["stdout"])
    out["work_s"] = summary["seconds"]
    out["rows"] = summary["rows"]
    if out["model_ready_at_s"] is not None and out["recorded_at_s"] is not None:
        # plan, work, MLMD import + record, output hash: everything between the model and the last line
        out["after_model_s"] = round(out["recorded_at_s"] - out["model_ready_at_s"], 2)
        out["after_model_minus_work_s"] = round(out["after_model_s"] - out["work_s"], 2)
    if out["recorded_at_s"] is not None:
        out["exit_s"] = round(run["wall_s"] - out["recorded_at_s"], 2)
    out["fixed_s"] = round(run["wall_s"] - out["work_s"], 2)
    if out["tf_import_s"] is not None and out["model_load_s"] is not None:
        # what is left once TensorFlow's import and the model load (timed in the same process) are out
        out["fixed_beyond_tf_and_model_s"] = round(out["fixed_s"] - out["tf_import_s"] - out["model_load_s"], 2)
    return out


def make_inputs(ctx: dict, work: Path) -> dict:
    """{form: {rows: parquet path}}, written once per work directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {form: {n: work / f"cli-{form}-{n}.parquet" for n in SIZES} for form in FORMS}
    if all(p.exists() for sizes in paths.values() for p in sizes.values()):
        return paths
    from serving.handle import ModelHandle

    config = ctx["config"]
    flights = february_flights(config, max(SIZES))
    served = ModelHandle.from_config(config, f"{MODEL}@production", runtime="savedmodel").current
    full = request_sets(served, flights)["model"]
    full_table = pa.table({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in full.items()})
    lookup_table = pa.Table.from_pandas(flights, preserve_index=False)
    missing = [s.name for s in served.predictor.inputs if s.name not in lookup_table.column_names]
    if not missing:
        raise RuntimeError("the dataset's columns hold every model input: nothing would be looked up")
    for form, table in (("full", full_table), ("lookup", lookup_table)):
        for n, path in paths[form].items():
            pq.write_table(table.slice(0, n), str(path))
    return paths


def fixed_cost(wall_small: float, wall_large: float) -> float:
    """The wall time of a run of no rows, by the line through the two sizes."""
    small, large = SIZES
    per_row = (wall_large - wall_small) / (large - small)
    return wall_small - per_row * small


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="work directory; reused by a later run (default: a new temporary one)")
    ap.add_argument("--model-dir", help="a Trainer output (default: train one, ~1 min)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkout", default=str(REPO), help="the checkout whose CLI is measured (default: this one)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-cli-"))
    result: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "work": str(work),
        "checkout": args.checkout,
        "settings": {"rounds": args.rounds, "sizes": list(SIZES), "forms": list(FORMS)},
    }
    ctx = setup(work, args.model_dir, "sqlite")
    inputs = make_inputs(ctx, work)
    env = {**os.environ, "PYTHONPATH": args.checkout, "PYTHONWARNINGS": "ignore"}
    sets = [arg for k, v in ctx["overrides"].items() for arg in ("--set", f"{k}={json.dumps(v)}")]

    def command(form: str, n: int) -> list[str]:
        output = work / f"cli-out-{form}-{n}.parquet"
        return [sys.executable, "-c", COMMAND, "predict", "batch", "--model", f"{MODEL}@production"] + [
            "--input",
            str(inputs[form][n]),
            "--output",
            str(output),
            *sets,
        ]

    rounds: list[dict] = []
    for r in range(args.rounds):
        load_before = [round(x, 2) for x in os.getloadavg()]
        floor = timed_run([sys.executable, "-c", "import tensorflow"], env, args.checkout)["wall_s"]
        runs = {form: {n: breakdown(timed_run(command(form, n), env, args.checkout)) for n in SIZES} for form in FORMS}
        this = {"loadavg_before": load_before, "tf_import_floor_s": round(floor, 2), "runs": runs}
        for form in FORMS:
            walls = [runs[form][n]["wall_s"] for n in SIZES]
            this[f"{form}_fixed_s"] = runs[form][SIZES[0]]["fixed_s"]
            this[f"{form}_fixed_by_slope_s"] = round(fixed_cost(*walls), 2)
            this[f"{form}_fixed_over_floor_s"] = round(this[f"{form}_fixed_s"] - floor, 2)
        rounds.append(this)
        log(
            f"round {r + 1}/{args.rounds}: import tensorflow {floor:.1f} s; fixed cost full "
            f"{this['full_fixed_s']} s, lookup {this['lookup_fixed_s']} s (load {load_before})"
        )
    result["rounds"] = rounds
    result["summary"] = {
        "tf_import_floor_s": spread([r["tf_import_floor_s"] for r in rounds]),
        **{
            f"{form}_{n}_rows_wall_s": spread([r["runs"][form][n]["wall_s"] for r in rounds])
            for form in FORMS
            for n in SIZES
        },
        **{
            f"{form}_{key}": spread([r[f"{form}_{key}"] for r in rounds])
            for form in FORMS
            for key in ("fixed_s", "fixed_by_slope_s")
        },
        **{
            f"{form}_fixed_beyond_tf_and_model_s": spread(
                [r["runs"][form][SIZES[0]].get("fixed_beyond_tf_and_model_s") for r in rounds]
            )
            for form in FORMS
        },
        **{f"{form}_fixed_over_floor_s": spread([r[f"{form}_fixed_over_floor_s"] for r in rounds]) for form in FORMS},
    }
    result["targets"] = [
        {
            "target": f"{form}: fixed cost of `mlops predict batch` < {TARGET_FIXED_S:.0f} s, in every round",
            "per_round": [r[f"{form}_fixed_s"] for r in rounds],
            "limit": TARGET_FIXED_S,
            "pass": all(r[f"{form}_fixed_s"] < TARGET_FIXED_S for r in rounds),
        }
        for form in FORMS
    ]
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
