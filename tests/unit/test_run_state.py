"""A run's state in ML Metadata (real SQLite MLMD), and the parent-death signal of step children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from mlops.config import MetadataSpec
from mlops.metadata.store import MetadataStore, RunClosed, connection_config, driver_alive, run_state, this_process


@pytest.fixture
def store(tmp_path) -> MetadataStore:
    return MetadataStore(connection_config(MetadataSpec(), str(tmp_path / "mlmd.sqlite")))


def test_run_goes_from_running_to_its_end_state_and_steps_keep_it(store):
    run = store.start_run("training", "r1", {"runner": "kfp.local"})
    assert run_state(run) == "RUNNING" and driver_alive(run.properties["driver"]) is True
    # a step records itself (record_step passes config hash and commit): the state stays
    run = store.run_context("training", "r1", {"config_hash": "abc"})
    store.record_execution(run, "Trainer", {}, {})
    done = store.finish_run("r1", "COMPLETE")
    assert run_state(done) == "COMPLETE" and done.properties["ended_at"] and done.properties["config_hash"] == "abc"


@pytest.mark.parametrize("end", ["CANCELED", "FAILED"])
def test_a_step_of_a_closed_run_cannot_record_a_result(store, end):
    run = store.start_run("training", "r1")
    store.finish_run("r1", end, "cancelled by SIGTERM during step trainer")
    with pytest.raises(RunClosed, match=f"Trainer: run r1 is {end}"):
        store.record_execution(run, "Trainer", {}, {})
    store.record_execution(run, "Trainer", {}, {}, state="FAILED")  # saying it failed is allowed
    assert [e.state for e in store.list_executions("r1")] == ["FAILED"]


def test_a_running_run_whose_driver_is_gone_reads_abandoned_and_takes_no_results(store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, _, _ = this_process().split(" ")
    run = store.run_context("training", "r1", {"state": "RUNNING", "driver": f"{host} {gone.pid} 12345"})
    assert driver_alive(run.properties["driver"]) is False and run_state(run) == "ABANDONED"
    with pytest.raises(RunClosed, match="ABANDONED"):
        store.record_execution(run, "Trainer", {}, {})
    elsewhere = store.run_context("training", "r2", {"state": "RUNNING", "driver": "other-host 1 1"})
    assert run_state(elsewhere) == "RUNNING"  # cannot be told from here: not called abandoned
    assert run_state(store.run_context("training", "r3")) == ""  # a cluster run: no driver, no state


def test_finish_run_rejects_a_state_that_is_not_an_end(store):
    store.start_run("training", "r1")
    with pytest.raises(Exception, match="must be one of COMPLETE, FAILED, CANCELED"):
        store.finish_run("r1", "RUNNING")


def test_worker_child_dies_with_its_parent_even_by_sigkill():
    """mlops.modeling.child starts TF workers with die_with_parent(): a worker in its own session
    (out of reach of any process-group kill) still dies when the step process that started it is
    SIGKILLed."""
    parent_code = (
        "import subprocess, sys, time; from mlops.modeling.child import die_with_parent; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
        "start_new_session=True, preexec_fn=die_with_parent()); print(c.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    child = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    try:
        child.wait(timeout=5)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the worker outlived its parent")
