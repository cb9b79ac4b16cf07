"""`mlops run` as a process: its steps die with it (SIGKILL or SIGTERM of the driver), its state is
in ML Metadata, and what it prints is short: one line per step, a summary, one line on failure.

The runs use tests.support.slow_pipeline (one step whose work sleeps in a TF-style worker child,
like Transform and Trainer), registered in the driver process under the name "slow"."""

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.fixtures import FLIGHTS_CONFIG, REPO

pytestmark = pytest.mark.integration

# `mlops ...` with the test pipeline registered (the CLI's own entry point, in this environment).
DRIVER = (
    "import sys; from pipelines import runner; "
    "runner.PIPELINES['slow'] = 'tests.support.slow_pipeline:slow_pipeline'; "
    "from cli.main import main; main()"
)
# The slow step's work: long enough to kill the run mid-step, short enough that waiting for an
# orphaned worker to have finished (and recorded its step) costs the suite little.
WORK_S = 3


def mlops(*args, **popen):
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_worker(driver: subprocess.Popen, timeout: float = 90) -> list[psutil.Process]:
    """The driver's descendants once the step's worker child runs (sh -> executor -> worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        procs = psutil.Process(driver.pid).children(recursive=True)
        if any("tests.support.slow_worker" in " ".join(_cmdline(p)) for p in procs):
            return procs
        time.sleep(0.2)
    driver.kill()
    raise AssertionError(f"the slow step's worker did not start: {driver.communicate()}")


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def survivors(procs: list[psutil.Process], timeout: float = 10) -> list[str]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:  # do not leak them into the next test
        p.kill()
    return [" ".join(_cmdline(p))[:120] for p in alive]


def the_run(store):
    [run] = [r for r in store.list_contexts("mlops.PipelineRun") if r.properties.get("pipeline_name") == "slow"]
    return run


def test_sigkill_of_the_driver_kills_every_step_process_and_the_run_reads_abandoned(artifact_root):
    from mlops.config import load_config
    from mlops.metadata.store import open_store, run_state

    driver = mlops("run", "slow", "--param", f"seconds={WORK_S}")
    descendants = wait_for_worker(driver)
    driver.kill()
    driver.wait()
    assert survivors(descendants) == []
    time.sleep(WORK_S + 1)  # an orphaned worker would have finished by now and its step recorded COMPLETE
    store = open_store(load_config(FLIGHTS_CONFIG))
    run = the_run(store)
    assert run.properties["state"] == "RUNNING" and run_state(run) == "ABANDONED"
    assert store.list_executions(run.name) == []
    assert not list(artifact_root.glob("kfp-local/slow-*/slow-step/done"))
    listed = subprocess.run(
        [sys.executable, "-m", "cli", "metadata", "runs"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert f"\tslow\t{run.name}\tABANDONED\t" in listed.stdout, listed


def test_sigterm_cancels_the_run_in_one_line_and_marks_it_canceled(artifact_root):
    from mlops.config import load_config
    from mlops.metadata.store import open_store

    driver = mlops("run", "slow", "--param", f"seconds={WORK_S}")
    descendants = wait_for_worker(driver)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=30)
    assert driver.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert "cancelled (SIGTERM) during step slow-step" in last and "Traceback" not in err, err
    assert survivors(descendants, timeout=5) == []
    time.sleep(WORK_S + 1)
    store = open_store(load_config(FLIGHTS_CONFIG))
    run = the_run(store)
    assert run.properties["state"] == "CANCELED" and "SIGTERM" in run.properties["state_reason"]
    assert store.list_executions(run.name) == []


def test_failed_step_is_named_with_its_error_on_the_last_line(artifact_root):
    from mlops.config import load_config
    from mlops.metadata.store import open_store

    driver = mlops("run", "slow", "--param", "fail_with=span 2013-02 has no rows")
    out, err = driver.communicate(timeout=180)
    assert driver.returncode == 1
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"Error: pipeline slow failed at step slow-step: InvalidInput: span 2013-02 has no rows "
        r"\(full log: .*/logs/slow-step\.log\)",
        last,
    ), err
    assert len(err.strip().splitlines()) <= 4 and "Traceback" not in err, err  # root line, progress, error
    run = the_run(open_store(load_config(FLIGHTS_CONFIG)))
    assert run.properties["state"] == "FAILED" and "InvalidInput: span 2013-02" in run.properties["state_reason"]


def test_a_run_prints_progress_and_summary_and_keeps_the_full_log_in_a_file(artifact_root):
    driver = mlops("run", "slow")
    out, err = driver.communicate(timeout=180)
    assert driver.returncode == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == f"artifact root: {artifact_root} (from $MLOPS_ARTIFACT_ROOT via configs/flights.yaml)"
    assert re.fullmatch(r"  slow-step +\d+\.\d s  ok", lines[1]), err
    assert lines[2].startswith("pipeline slow finished in ") and lines[-1].endswith("/logs/")
    assert len(lines) < 10 and "executor_input" not in out + err and "Warning" not in err, err
    [log] = artifact_root.glob("kfp-local/slow-*/logs/slow-step.log")
    assert "executor_input" in log.read_text() and "finished with status" in log.read_text()
    verbose = mlops("run", "slow", "-v")
    _, err = verbose.communicate(timeout=180)
    assert verbose.returncode == 0 and "executor_input" in err


def test_bad_parameter_value_is_one_line_naming_it():
    out = subprocess.run(
        [sys.executable, "-m", "cli", "run", "training", "--param", "epochs=abc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "Error: pipeline training: parameter epochs must be an integer, got 'abc'"
    ], out.stderr
