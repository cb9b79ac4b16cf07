"""Which of the two locked environments a piece of work runs in, and getting there.

The pipeline environment (TFX 1.16 family, ml-metadata, kfp 2.13; protobuf 4) and the serving
environment (TF 2.21, kserve 0.21, feast 0.67; protobuf 6) cannot be one interpreter. The user
types one `mlops` command: a subcommand that needs the other environment re-executes itself
under that environment's interpreter, with the same arguments, before doing any work.

Interpreters: $MLOPS_PIPELINE_PYTHON / $MLOPS_SERVING_PYTHON, else <repo>/.venv/<env>/bin/python.
In a container image only its own environment exists, and commands only ever ask for it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from mlops.errors import MlopsError

PIPELINE = "pipeline"
SERVING = "serving"
_REEXEC_GUARD = "MLOPS_REEXEC_FROM"

REPO_ROOT = Path(__file__).resolve().parents[1]


class EnvironmentMissing(MlopsError):
    """The interpreter of the environment a command needs is not there (run `make setup`)."""


def current_env() -> str | None:
    # find_spec does not import: deciding costs microseconds, not TensorFlow's start-up.
    if importlib.util.find_spec("ml_metadata") is not None:
        return PIPELINE
    if importlib.util.find_spec("kserve") is not None:
        return SERVING
    return None


def interpreter(env: str) -> str:
    override = os.environ.get(f"MLOPS_{env.upper()}_PYTHON")
    if override:
        return override
    return str(REPO_ROOT / ".venv" / env / "bin" / "python")


def run_in(env: str, argv: list[str], entry_module: str) -> None:
    """Continues this command in `env`: returns if already there, else replaces the process with
    `python -m entry_module argv...` under that environment's interpreter."""
    here = current_env()
    if here == env:
        return
    if os.environ.get(_REEXEC_GUARD):
        raise EnvironmentMissing(
            f"re-executed from the {os.environ[_REEXEC_GUARD]} environment but {sys.executable} "
            f"is not the {env} environment either"
        )
    python = interpreter(env)
    if not os.path.exists(python):
        raise EnvironmentMissing(
            f"this command needs the {env} environment, but {python} does not exist: run `make setup`, "
            f"or set MLOPS_{env.upper()}_PYTHON"
        )
    os.environ[_REEXEC_GUARD] = here or "unknown"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-m", entry_module, *argv])
