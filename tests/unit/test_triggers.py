"""Continuous training triggers: one record per cause, claimed atomically in the artifact store, so
no cause starts two runs, whether the triggers race in two processes, repeat, or retry a Job.

The run-starting part is real: kfp.local runs of the small `slow` test pipeline, and submissions
through the real kfp.Client to the fake KFP v2beta1 API (tests/support/fake_kfp_api.py) with the
committed training IR; ML Metadata is real (SQLite under the artifact root)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from mlops.config import load_config
from mlops.errors import InvalidInput, Unavailable
from mlops.triggers import (
    ABANDONED,
    SUBMITTED,
    StartedRun,
    TriggerRecord,
    TriggerRecords,
    fire,
    idempotency_key,
)
from pipelines import runner
from tests.support.fake_kfp_api import FakeKfpServer
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

TRAINING_IR = runner.COMPILED_DIR / "training.yaml"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def mlops(*args: str):
    from cli.main import cli

    return CliRunner().invoke(cli, list(args))


def records_of(result) -> list[dict]:
    assert result.stdout.strip(), result.output
    return json.loads(result.stdout)


@pytest.fixture
def kfp_api(monkeypatch, tmp_path):
    monkeypatch.delenv("MLOPS_KFP_TOKEN", raising=False)
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", "")
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with FakeKfpServer() as served:
        yield served


@pytest.fixture
def slow_pipeline(monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.setitem(runner.PIPELINES, "slow", "tests.support.slow_pipeline:slow_pipeline")


def trigger_contexts(artifact_root) -> dict[str, dict]:
    """Run id -> properties of the ML Metadata run contexts that carry a trigger."""
    from mlops.metadata import types as T
    from mlops.metadata.store import open_store

    config = load_config(FLIGHTS_CONFIG)
    assert config.artifact_root == str(artifact_root)
    contexts = open_store(config).list_contexts(T.RUN_CONTEXT)
    return {c.name: c.properties for c in contexts if "trigger_key" in c.properties}


def record(key: str = "code-change.training.abc1234", **fields) -> TriggerRecord:
    return TriggerRecord(
        key=key, kind="code-change", reason="test", cause={}, pipeline="training", parameters={}, mode="kfp", **fields
    )


# ---- keys and records ----------------------------------------------------------------------------


def test_keys_are_readable_file_names_and_distinct_per_cause():
    assert idempotency_key("new-data", "training", "flights@2013-03") == "new-data.training.flights@2013-03"
    odd = idempotency_key("alert", "training", 'a{alertname="Drift"}', "flights@3")
    assert "/" not in odd and '"' not in odd and odd.startswith("alert.training.a_alertname__Drift__.flights@3-")
    # causes that read alike once sanitized still get different keys
    assert idempotency_key("alert", "training", "a/b") != idempotency_key("alert", "training", "a:b")
    assert len(idempotency_key("schedule", "training", "x" * 500)) <= 180
    with pytest.raises(InvalidInput, match="trigger kind 'cron'"):
        idempotency_key("cron", "training", "x")


def _race(root: str, barrier, started_log: str) -> None:
    """One racing trigger process: all claim the same cause at the same moment."""

    def start(r):
        with open(started_log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        return StartedRun(SUBMITTED, f"run-{os.getpid()}", "name")

    barrier.wait()
    outcome = fire(TriggerRecords(root), record(), start)
    print(json.dumps({"pid": os.getpid(), "started": outcome.started, "run": outcome.record.run_id}), flush=True)


def test_racing_processes_start_one_run_for_one_cause(tmp_path):
    root, log = str(tmp_path / "artifacts"), tmp_path / "started.log"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(root, barrier, str(log))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    [starter] = log.read_text().split()  # exactly one process started a run
    stored = TriggerRecords(root).get("code-change.training.abc1234")
    assert stored.run_id == f"run-{starter}" and stored.state == SUBMITTED
    assert os.listdir(tmp_path / "artifacts" / "triggers") == ["code-change.training.abc1234.json"]  # no temp left


def test_a_start_that_fails_releases_the_cause_and_a_run_keeps_it(tmp_path):
    records = TriggerRecords(str(tmp_path))

    def unreachable(r):
        raise Unavailable("KFP API at http://127.0.0.1:1 is unreachable")

    with pytest.raises(Unavailable):
        fire(records, record(), unreachable)
    assert records.find("code-change.training.abc1234") is None  # released: the next trigger retries
    [released] = records.list(include_released=True)
    assert released.state == "RELEASED" and "unreachable" in released.error

    calls = []
    ok = fire(records, record(), lambda r: calls.append(r.key) or StartedRun("FAILED", None, "n", "step x failed"))
    again = fire(records, record(), lambda r: calls.append(r.key) or StartedRun(SUBMITTED, "r2"))
    assert ok.started and not again.started and calls == ["code-change.training.abc1234"]
    assert again.record.state == "FAILED" and again.record.error == "step x failed"


def test_a_claim_whose_process_died_is_abandoned_not_retried(tmp_path):
    from mlops.metadata.store import this_process

    dead = subprocess.run(
        [sys.executable, "-c", "from mlops.metadata.store import this_process; print(this_process())"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    records = TriggerRecords(str(tmp_path))
    assert records.claim(record(driver=dead)) is None
    outcome = fire(records, record(), lambda r: pytest.fail("started a second run"))
    assert not outcome.started and outcome.record.shown_state == ABANDONED
    assert record(driver=this_process()).shown_state == "STARTING"  # a live claim is not abandoned
    records.forget("code-change.training.abc1234")
    assert fire(records, record(), lambda r: StartedRun(SUBMITTED, "r3")).started  # re-armed


# ---- locally, with kfp.local ---------------------------------------------------------------------


def test_schedule_runs_locally_once_per_slot_and_records_in_mlmd(artifact_root, slow_pipeline):
    first = mlops("trigger", "schedule", "--pipeline", "slow", "--slot", "2024-05-01T0300Z", "--param", "seconds=0")
    assert first.exit_code == 0, first.output
    [started] = records_of(first)
    assert started["started"] and started["state"] == "SUCCEEDED" and started["mode"] == "local"
    assert started["key"] == "schedule.slow.nightly.2024-05-01T0300Z" and started["metadata"] == "recorded"
    context = trigger_contexts(artifact_root)[started["run_id"]]
    assert context["trigger"] == "schedule" and context["trigger_key"] == started["key"]
    assert context["state"] == "COMPLETE"  # the run the trigger started, recorded by kfp.local's driver

    again = mlops("trigger", "schedule", "--pipeline", "slow", "--slot", "2024-05-01T0300Z", "--param", "seconds=0")
    assert again.exit_code == 0, again.output
    [kept] = records_of(again)
    assert not kept["started"] and kept["run_id"] == started["run_id"] and "nothing started" in again.stderr

    failed = mlops("trigger", "schedule", "--pipeline", "slow", "--slot", "s2", "--param", "fail_with=no data")
    assert failed.exit_code == 1 and "the run failed: pipeline slow failed at step slow-step" in failed.output
    assert records_of(failed)[0]["state"] == "FAILED"

    listed = mlops("trigger", "list")
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("schedule", "SUCCEEDED", "schedule.slow.nightly.2024-05-01T0300Z"),
        ("schedule", "FAILED", "schedule.slow.nightly.s2"),
    ]
    assert rows[0][3] == started["run_id"] and rows[0][5] == "schedule nightly: slot 2024-05-01T0300Z"


def test_bad_input_fails_in_one_line_and_records_nothing(artifact_root, slow_pipeline):
    for args, message in (
        (["code-change", "--commit", "HEAD"], "--commit 'HEAD': a git commit SHA"),
        (["schedule", "--pipeline", "slow", "--param", "epochs=3"], "pipeline slow has no parameter(s) epochs"),
        (["new-data", "--since", "March"], "--since 'March': a span"),
        (["new-data", "--param", "dataset_selector=latest"], "the new-data trigger sets it"),
        (["schedule", "--local", "--host", "http://127.0.0.1:1"], "--local and --host"),
    ):
        result = mlops("trigger", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output
    assert not (artifact_root / "triggers").exists()


# ---- on a KFP API --------------------------------------------------------------------------------


def test_code_change_submits_once_per_commit(artifact_root, kfp_api):
    url, fake = kfp_api
    argv = ["trigger", "code-change", "--commit", COMMIT, "--host", url, "--package", str(TRAINING_IR)]
    first = mlops(*argv, "--param", "epochs=2", "--experiment", "ci")
    assert first.exit_code == 0, first.output
    [started] = records_of(first)
    [run] = fake.runs.values()
    assert started["started"] and started["state"] == SUBMITTED and started["run_id"] == run["run_id"]
    assert run["display_name"] == f"training code-change.training.{COMMIT}"
    assert run["runtime_config"]["parameters"] == {"epochs": 2}
    context = trigger_contexts(artifact_root)[run["run_id"]]
    assert context["git_commit"] == COMMIT and context["trigger"] == "code-change"

    again = mlops(*argv, "--param", "epochs=2", "--experiment", "ci")  # CI re-runs the job
    assert again.exit_code == 0 and not records_of(again)[0]["started"]
    assert len(fake.runs) == 1


def test_new_data_submits_one_run_per_new_span(artifact_root, kfp_api):
    from mlops.datasets.repository import DatasetRepository

    url, fake = kfp_api
    repo = DatasetRepository(str(artifact_root))

    def ingest(span: str):
        repo.write("flights", pd.DataFrame({"month": [int(span[-2:])], "dep_delay": [1.0]}), source="t", span=span)

    def sensor(*extra: str):
        result = mlops("trigger", "new-data", "--host", url, "--package", str(TRAINING_IR), *extra)
        assert result.exit_code == 0, result.output
        return records_of(result)

    assert sensor() == []  # no spans yet
    for span in ("2013-01", "2013-02"):
        ingest(span)
    first = sensor()
    assert [(r["started"], r["key"]) for r in first] == [
        (True, "new-data.training.flights@2013-01"),
        (True, "new-data.training.flights@2013-02"),
    ]
    selectors = [run["runtime_config"]["parameters"]["dataset_selector"] for run in fake.runs.values()]
    assert selectors == ["2013-01", "2013-01:2013-02"]  # every span up to the new one

    assert [r["started"] for r in sensor()] == [False, False] and len(fake.runs) == 2
    ingest("2013-03")
    ingest("2013-04")
    latest = sensor("--window", "2", "--since", "2013-03")
    assert [(r["started"], r["cause"]["span"]) for r in latest] == [(True, "2013-04")]
    assert list(fake.runs.values())[-1]["runtime_config"]["parameters"]["dataset_selector"] == "2013-03:2013-04"
    assert sensor("--since", "2013-02")[0]["started"]  # 2013-03: not triggered yet
    assert len(fake.runs) == 4


def test_an_unreachable_kfp_api_starts_nothing_and_the_next_tick_retries(artifact_root, kfp_api):
    url, fake = kfp_api
    down = mlops("trigger", "schedule", "--slot", "s1", "--host", "http://127.0.0.1:9", "--package", str(TRAINING_IR))
    assert down.exit_code == 75 and "unreachable" in down.output
    assert TriggerRecords(str(artifact_root)).find("schedule.training.nightly.s1") is None
    up = mlops("trigger", "schedule", "--slot", "s1", "--host", url, "--package", str(TRAINING_IR))
    assert up.exit_code == 0 and records_of(up)[0]["started"] and len(fake.runs) == 1
    everything = json.loads(mlops("trigger", "list", "--all", "--json").stdout)
    assert sorted(r["state"] for r in everything) == ["RELEASED", SUBMITTED]


def test_alert_trigger_starts_one_run_per_group_and_model_version(artifact_root, kfp_api):
    from pipelines.triggers import Launcher, trigger_for_alert

    url, fake = kfp_api
    launcher = Launcher(str(FLIGHTS_CONFIG), load_config(FLIGHTS_CONFIG), host=url, package=str(TRAINING_IR))
    group = '{}/{severity="page"}:{alertname="MlopsDrift"}'
    first = trigger_for_alert(group, "flights@3", launcher=launcher, parameters={"epochs": 1})
    repeat = trigger_for_alert(group, "flights@3", launcher=launcher, parameters={"epochs": 1})
    newer_model = trigger_for_alert(group, "flights@4", launcher=launcher)
    assert (first.started, repeat.started, newer_model.started) == (True, False, True)
    assert repeat.record.run_id == first.record.run_id and len(fake.runs) == 2
    assert first.record.cause == {"group_key": group, "model_version": "flights@3"}
    with pytest.raises(InvalidInput, match="not NAME@VERSION"):
        trigger_for_alert(group, "flights", launcher=launcher)
    assert trigger_contexts(artifact_root)[first.record.run_id]["trigger"] == "alert"
