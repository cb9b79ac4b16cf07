"""Benchmark: the fixed cost of short commands, `mlops predict batch` first, as JSON.

    .venv/pipeline/bin/python bench/cli_fixed_cost.py [--work DIR] [--rounds 3] [--checkout DIR]
        [--out bench/results/cli_fixed_cost.json]

Set-up: bench/serving.py's (reused when --work already holds it): a real flights model registered as
flights@production, January-February 2013 in the dataset repository, February in the SQLite online
store. Inputs: February flights, 100 and 10,000 rows, in two forms: "full" (every model input: no
feature lookup) and "lookup" (the dataset's own columns: the feature-store features come from the
Feast online store, as for `--input flights@2013-02`).

Each round runs, one after the other (so load from other jobs hits them alike), each as a new
process:
  floor    a bare `python -c "import tensorflow"`
  raw      the raw batch call: a bare script that imports TensorFlow, loads the same SavedModel
           (tf.saved_model.load), reads the 100-row "full" parquet, calls the serving signature and
           writes the predictions parquet: what any batch prediction with TensorFlow costs at least
  cli      `python -m cli predict batch ...` per form and size (INFO logging on so its phases show)
  short    other short commands: `mlops --help`, `mlops models list`, `mlops metadata runs`, and
           `mlops monitor run` over a window without payload logs (everything up to its first read;
           it exits 1 saying so)
Measured per process: wall time from spawn to exit, CPU time (user + system, from wait4: on a
loaded machine it moves far less than wall time), the command's own work (the summary's `seconds`:
read, enrich, predict, write; the raw script times the same), and, for the CLI, a breakdown from
its stderr lines, time-stamped as they arrive.

Fixed cost of a form = the 100-row run's wall time minus its work; the same for the raw call. In
the same round: fixed cost / the TensorFlow import floor and / the raw call's fixed cost (ratios,
comparable across loads), the fixed cost by the slope between 100 and 10,000 rows (the wall time of
a run of no rows; on a loaded machine the noise of two processes can make it exceed the wall time),
and what is left once the TensorFlow import and the model load timed inside that run are taken out
(the part this project's code decides). Reported per round and as min/median/max; a target passes
only if it passes in every round. `--checkout` runs another checkout's code with the same
interpreters (a before/after comparison: e.g. `git archive REV | tar -x -C DIR`).
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

# The raw batch call: bare TensorFlow, the same SavedModel, parquet in and out (argv: model dir,
# input, output); prints the seconds of its own work (read, predict, write), as the CLI's summary.
RAW = """
import json, sys, time
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

fn = tf.saved_model.load(sys.argv[1] + "/serving_model").signatures["serving_default"]
started = time.perf_counter()
specs = fn.structured_input_signature[1]
table = pq.read_table(sys.argv[2], columns=sorted(specs))
cols = {}
for name, spec in specs.items():
    col = table.column(name)
    if spec.dtype == tf.float32:
        cols[name] = tf.constant(col.to_numpy().astype(np.float32))
    else:
        cols[name] = tf.constant(col.fill_null("").to_numpy().astype(object), dtype=tf.string)
out = next(iter(fn(**cols).values())).numpy().reshape(-1)
pq.write_table(pa.table({"row_id": np.arange(len(out)), "prediction": out}), sys.argv[3])
print(json.dumps({"rows": len(out), "seconds": time.perf_counter() - started}))
"""

# Other short commands: name -> (arguments, exit codes that are the expected outcome).
SHORT = {
    "help": (["--help"], (0,)),
    "models_list": (["models", "list", "flights"], (0,)),
    "metadata_runs": (["metadata", "runs"], (0,)),
    # no payload logs in the bench's artifact root: fails with one line after its imports and config
    "monitor_run_empty_window": (["monitor", "run", "--window", "2013-07-01:2013-07-02"], (1,)),
}


def timed_run(argv: list[str], env: dict, cwd: str, ok: tuple[int, ...] = (0,)) -> dict:
    """Runs `argv`; wall seconds, CPU seconds (user + system of the process and its children),
    stdout, and each stderr line with the seconds since spawn at which it arrived."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_stderr():
        for line in proc.stderr:
            lines.append((time.monotonic() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    if proc.returncode not in ok:
        tail = "\n".join(line for _, line in lines[-20:])
        shown = argv[3:] if argv[1:3] == ["-c", COMMAND] else argv  # the command's own arguments
        raise RuntimeError(f"{' '.join(shown)} exited with {proc.returncode}:\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "stdout": stdout, "stderr": lines}


def breakdown(run: dict) -> dict:
    """Where a run's wall time went, from its time-stamped stderr and its summary."""
    out: dict = {"wall_s": round(run["wall_s"], 2), "cpu_s": round(run["cpu_s"], 2)}
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

    short_env = {**env, "MLOPS_ARTIFACT_ROOT": str(ctx["root"])}
    raw_out = work / "raw-out-full-100.parquet"
    raw_argv = [sys.executable, "-c", RAW, ctx["model_dir"], str(inputs["full"][SIZES[0]]), str(raw_out)]

    rounds: list[dict] = []
    for r in range(args.rounds):
        load_before = [round(x, 2) for x in os.getloadavg()]
        floor_run = timed_run([sys.executable, "-c", "import tensorflow"], env, args.checkout)
        floor = floor_run["wall_s"]
        raw_run = timed_run(raw_argv, env, args.checkout)
        raw_work = json.loads(raw_run["stdout"])["seconds"]
        raw = {
            "wall_s": round(raw_run["wall_s"], 2),
            "cpu_s": round(raw_run["cpu_s"], 2),
            "work_s": round(raw_work, 3),
            "fixed_s": round(raw_run["wall_s"] - raw_work, 2),
        }
        runs = {form: {n: breakdown(timed_run(command(form, n), env, args.checkout)) for n in SIZES} for form in FORMS}
        short = {}
        for name, (cmd_args, ok) in SHORT.items():
            run = timed_run([sys.executable, "-c", COMMAND, *cmd_args], short_env, args.checkout, ok=ok)
            short[name] = {"wall_s": round(run["wall_s"], 2), "cpu_s": round(run["cpu_s"], 2)}
        this = {
            "loadavg_before": load_before,
            "tf_import_floor_s": round(floor, 2),
            "tf_import_floor_cpu_s": round(floor_run["cpu_s"], 2),
            "raw": raw,
            "runs": runs,
            "short": short,
        }
        for form in FORMS:
            walls = [runs[form][n]["wall_s"] for n in SIZES]
            fixed = runs[form][SIZES[0]]["fixed_s"]
            this[f"{form}_fixed_s"] = fixed
            this[f"{form}_fixed_by_slope_s"] = round(fixed_cost(*walls), 2)
            this[f"{form}_fixed_over_floor_s"] = round(fixed - floor, 2)
            this[f"{form}_fixed_per_floor"] = round(fixed / floor, 2)
            this[f"{form}_fixed_per_raw_fixed"] = round(fixed / raw["fixed_s"], 2)
            this[f"{form}_cpu_per_floor_cpu"] = round(runs[form][SIZES[0]]["cpu_s"] / floor_run["cpu_s"], 2)
        rounds.append(this)
        shorts = ", ".join(f"{k} {v['wall_s']} s" for k, v in short.items())
        log(
            f"round {r + 1}/{args.rounds}: import tensorflow {floor:.1f} s, raw call fixed {raw['fixed_s']} s; "
            f"fixed cost full {this['full_fixed_s']} s, lookup {this['lookup_fixed_s']} s; "
            f"short commands: {shorts} (load {load_before})"
        )
    result["rounds"] = rounds
    first = SIZES[0]
    result["summary"] = {
        "tf_import_floor_s": spread([r["tf_import_floor_s"] for r in rounds]),
        "tf_import_floor_cpu_s": spread([r["tf_import_floor_cpu_s"] for r in rounds]),
        "raw_call_fixed_s": spread([r["raw"]["fixed_s"] for r in rounds]),
        "raw_call_cpu_s": spread([r["raw"]["cpu_s"] for r in rounds]),
        **{
            f"{form}_{n}_rows_wall_s": spread([r["runs"][form][n]["wall_s"] for r in rounds])
            for form in FORMS
            for n in SIZES
        },
        **{f"{form}_{first}_rows_cpu_s": spread([r["runs"][form][first]["cpu_s"] for r in rounds]) for form in FORMS},
        **{
            f"{form}_{key}": spread([r[f"{form}_{key}"] for r in rounds])
            for form in FORMS
            for key in (
                "fixed_s",
                "fixed_by_slope_s",
                "fixed_over_floor_s",
                "fixed_per_floor",
                "fixed_per_raw_fixed",
                "cpu_per_floor_cpu",
            )
        },
        **{
            f"{form}_fixed_beyond_tf_and_model_s": spread(
                [r["runs"][form][first].get("fixed_beyond_tf_and_model_s") for r in rounds]
            )
            for form in FORMS
        },
        **{
            f"short_{name}_{key}": spread([r["short"][name][key] for r in rounds])
            for name in SHORT
            for key in ("wall_s", "cpu_s")
        },
    }
    result["targets"] = [
        {
            "target": f"{form}: fixed cost of `mlops predict batch` < {TARGET_FIXED_S:.0f} s, in every round",
            "per_round": [r[f"{form}_fixed_s"] for r in rounds],
            "limit": TARGET_FIXED_S,
            "pass": all(r[f"{form}_fixed_s"] < TARGET_FIXED_S for r in rounds),
        }
        for form in FORMS
    ] + [
        {
            "target": f"{name}: wall time < {TARGET_FIXED_S:.0f} s, in every round",
            "per_round": [r["short"][name]["wall_s"] for r in rounds],
            "limit": TARGET_FIXED_S,
            "pass": all(r["short"][name]["wall_s"] < TARGET_FIXED_S for r in rounds),
        }
        for name in SHORT
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
