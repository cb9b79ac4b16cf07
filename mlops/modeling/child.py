"""Running TensorFlow work (TFT/Beam, Keras) in a child process, and trusting its result.

Why: processes that ran TFT (and processes that ran TFT analysis and Keras) crash with SIGSEGV
in interpreter teardown after all their outputs are written; inside a KFP component that would
fail the step after the work succeeded. So the component's own process never imports TF: it
starts `python -m <worker module> REQUEST_JSON`, and the worker

  * runs the work, then writes a marker JSON atomically: {"ok": true, "nonce": ..., <result>} or
    {"ok": false, "error": ..., "traceback": ...},
  * flushes and leaves with os._exit(), skipping the teardown that crashes.

The parent trusts the marker (with the nonce of this request) and then checks the declared
outputs itself, not the exit status alone: an exit status != 0 after a valid marker is logged
and tolerated, a missing or failed marker is an error whatever the exit status.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from mlops.errors import MlopsError

log = logging.getLogger(__name__)


class ChildError(MlopsError):
    """The child process did not report success."""


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A subprocess `preexec_fn` by which the kernel sends the child `signum` when the process that
    started it dies, however it dies (SIGKILL included), so a killed step leaves no worker running.
    Linux prctl(PR_SET_PDEATHSIG); elsewhere a no-op. It survives exec but not fork: grandchildren
    need the same, or a process group that is killed whole."""
    parent = os.getpid()

    def preexec() -> None:
        import ctypes

        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return  # not Linux
        pr_set_pdeathsig = 1
        if prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) != 0:
            return
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os._exit(1)

    return preexec


def run_child(
    module: str, request: dict[str, Any], *, what: str, timeout: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Runs `python -m module REQUEST_JSON` and returns its marker (ok == True) or raises."""
    with tempfile.TemporaryDirectory(prefix=f"mlops-{what}-") as tmp:
        nonce = uuid.uuid4().hex
        marker = os.path.join(tmp, "result.json")
        req_path = os.path.join(tmp, "request.json")
        with open(req_path, "w") as f:
            json.dump({**request, "nonce": nonce, "marker": marker}, f)
        child_env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        started = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", module, req_path], env=child_env, timeout=timeout, preexec_fn=die_with_parent()
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            raise ChildError(f"{what}: the worker ({module}) did not finish within {timeout:.0f} s") from None
        wall = time.monotonic() - started
        if not os.path.exists(marker):
            raise ChildError(
                f"{what}: the worker ({module}) exited with status {code} after {wall:.1f} s "
                "without reporting a result (see its log above)"
            )
        with open(marker) as f:
            result = json.load(f)
        if result.get("nonce") != nonce:
            raise ChildError(f"{what}: the worker's marker does not belong to this request")
        if not result.get("ok"):
            raise ChildError(f"{what} failed in the worker: {result.get('error')}\n{result.get('traceback', '')}")
        if code != 0:
            log.warning(
                "%s: worker exited with status %s after reporting success (known TF/TFT teardown "
                "crash); its outputs are verified next",
                what,
                code,
            )
        result["worker_exit_code"] = code
        result["worker_wall_seconds"] = round(wall, 3)
        return result


def child_main(argv: list[str], work: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The worker side: read the request, run `work`, write the marker, os._exit()."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(argv[0]) as f:
        request = json.load(f)
    code = 0
    try:
        result = {"ok": True, **work(request)}
    except BaseException as e:  # noqa: BLE001 - reported to the parent through the marker
        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        code = 1
    result["nonce"] = request.get("nonce")
    try:
        rusage_kb = __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss
        result["worker_peak_rss_mb"] = round(rusage_kb / 1024, 1)
    except Exception:  # noqa: BLE001 - informational only
        pass
    tmp = request["marker"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, request["marker"])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: TF/TFT crash there (SIGSEGV) after all work is done.
    os._exit(code)
