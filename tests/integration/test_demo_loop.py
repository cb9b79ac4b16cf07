"""`mlops demo` end to end on a tiny sample (1 flight in 8, two epochs, a few hundred requests): every
phase completes, the decision is in ML Metadata, the aliases moved as decided, no server outlives
the command, and a second run is served from the caches (step cache, dataset versions, registry).
A stop by SIGTERM in the middle of serving leaves no server either.

Opt-in (`pytest -m demo`): two training pipeline runs, two model servers and the splitter, twice,
take ~10 minutes on 2 cores; the phases' own tests (training pipeline, monitoring, triggers, the
local rollout) run by default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO

pytestmark = [pytest.mark.integration, pytest.mark.demo, pytest.mark.timeout(1800)]

SETTINGS = [
    "--set", 'dataset.row_filter="dep_delay.notna() and flight % 8 == 0"',
    "--set", 'validation.on_anomaly="warn"',  # a sparse sample leaves rolling aggregates often empty
    "--set", "model.learning_rate=0.01",
    "--set", "evaluation.min_auc=0.0",  # the story needs a registered model, not a good one
    "--set", "evaluation.max_auc_drop=1.0",
]  # fmt: skip
TINY = ["--epochs", "2", "--requests", "150", "--canary-requests", "400", "--canary-percent", "50", *SETTINGS]
PHASES = ["ingest", "train", "register", "serve", "replay", "monitor", "retrain", "canary", "compare"]


def mlops_demo(root: Path, *extra: str, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "cli", "demo", "--config", str(FLIGHTS_CONFIG), *TINY]
    argv += ["--set", f"artifact_root={json.dumps(str(root))}", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(argv, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def servers_with(root: Path) -> list[int]:
    """Live `python -m serving` / `python -m serving.splitter` processes working on this artifact root."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        try:
            cmd = [c.decode(errors="replace") for c in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        module = cmd[cmd.index("-m") + 1] if "-m" in cmd[:-1] else ""
        if module in ("serving", "serving.splitter") and any(str(root) in c for c in cmd):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "artifacts"
    proc = mlops_demo(root)
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err.decode()[-5000:]
    return root, json.loads(out.decode().strip().splitlines()[-1]), err.decode()


def test_every_phase_runs_and_the_decision_is_recorded(first_run):
    root, summary, err = first_run
    assert [p["phase"] for p in summary["phases"]] == PHASES, err[-3000:]
    assert summary["monitor"]["drifted"] and summary["alert"]["state"] == "SUCCEEDED"
    assert summary["replay"]["answered"] == summary["replay"]["requests"] > 100
    assert set(summary["canary"]["served"]) == {"1", "2"}
    for key in ("cbpe_auc", "realised_auc"):
        assert 0 < summary["monitor"][key] < 1
    for report in (summary["monitor"]["report"], summary["monitor"]["live_report"], summary["history"]):
        assert Path(report).is_file()

    from mlops.config import load_config
    from mlops.metadata.store import open_store
    from mlops.registry.store import ModelRegistry

    decision = summary["decision"]
    assert decision["action"] in ("promote", "rollback")
    store = open_store(load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root)}))
    (execution,) = [e for e in store.list_executions(decision["run_id"]) if e.component == "online_comparison"]
    assert execution.properties["action"] == decision["action"]
    aliases = ModelRegistry(str(root)).aliases("flights")
    if decision["action"] == "promote":
        assert aliases["production"] == 2
    else:  # production stays, staging went back from the challenger
        assert aliases["production"] == 1 and aliases["staging"] == 1
    assert not servers_with(root)  # every server and the splitter stopped


def test_the_readme_examples_read_what_it_leaves(first_run, tmp_path):
    """README, Command line: "After `make demo` these run as written": the batch prediction of span
    2013-02 with the staging model, its store features from the online store the demo materialized."""
    root, _, _ = first_run
    out_path = tmp_path / "flights-2013-02.parquet"
    argv = [sys.executable, "-m", "cli", "predict", "batch", "--config", str(FLIGHTS_CONFIG), *SETTINGS]
    argv += ["--set", f"artifact_root={json.dumps(str(root))}"]
    argv += ["--model", "flights@staging", "--input", "flights@2013-02", "--output", str(out_path)]
    out = subprocess.run(argv, cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    import pyarrow.parquet as pq

    from mlops.datasets.repository import DatasetRepository

    repo = DatasetRepository(str(root))
    rows = len(repo.load(repo.resolve("flights", "2013-02")))
    predictions = pq.read_table(out_path)
    assert predictions.num_rows == rows > 0 and "prediction" in predictions.column_names


def test_a_second_run_reuses_the_caches(first_run):
    root, summary, _ = first_run
    proc = mlops_demo(root)
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err.decode()[-5000:]
    again = json.loads(out.decode().strip().splitlines()[-1])
    assert all("unchanged" in line for line in again["ingest"])
    # example-gen .. evaluator (the steps with a step cache) served from it; the same registry versions
    assert again["first_model"]["cache_hits"] >= 3 and again["retrained"]["cache_hits"] >= 3, err.decode()[-3000:]
    assert (again["first_model"]["version"], again["retrained"]["version"]) == (1, 2)
    # deterministic: the same replay sample, the same canary split, the same AUCs on it
    assert again["monitor"]["realised_auc"] == pytest.approx(summary["monitor"]["realised_auc"], abs=1e-9)
    assert again["canary"]["served"] == summary["canary"]["served"]
    for key in ("champion_auc", "challenger_auc", "difference"):
        assert again["decision"][key] == pytest.approx(summary["decision"][key], abs=1e-9), key
    assert not servers_with(root)


def test_sigterm_stops_the_servers_it_started(first_run, tmp_path):
    root, _, _ = first_run
    proc = mlops_demo(root)
    deadline = time.monotonic() + 900
    seen = []
    while time.monotonic() < deadline and proc.poll() is None:
        seen = servers_with(root)
        if seen:
            break
        time.sleep(0.5)
    assert seen, "no model server started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-3000:]
    assert "interrupted" in err.decode()
    time.sleep(1)
    assert not [p for p in seen if _alive(p)]
    assert not servers_with(root)


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False
