"""What every pipeline step does around its work: load the config it was given, and record its
execution with inputs and outputs in ML Metadata under the run's context.

KFP components call these from their (tiny) function bodies; the same functions serve a plain
Python caller, so a step's implementation never depends on KFP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mlops.config import PlatformConfig, load_config
from mlops.envs import REPO_ROOT


def load_step_config(config_path: str, overrides_json: str = "", artifact_root: str = "") -> PlatformConfig:
    """Config as a KFP step receives it: a path (relative to the project root, which is the
    image's install dir in a container), JSON overrides from pipeline parameters, and an
    optional artifact root (e.g. s3://bucket/mlops on a cluster)."""
    path = Path(config_path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    overrides: dict[str, Any] = json.loads(overrides_json) if overrides_json else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"config overrides must be a JSON object of dotted keys, got {overrides_json!r}")
    if artifact_root:
        overrides["artifact_root"] = artifact_root
    return load_config(path, overrides=overrides)


def git_commit() -> str:
    """The code version: $MLOPS_GIT_COMMIT (baked into images), else the checkout's HEAD."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return os.environ["MLOPS_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def record_step(config: PlatformConfig, *, pipeline: str, run_id: str, component: str,
                inputs: dict | None = None, outputs: dict | None = None, properties: dict | None = None,
                state: str = "COMPLETE"):
    """Records one step execution in MLMD (idempotent per run and component)."""
    from mlops.metadata.store import open_store

    store = open_store(config)
    run = store.run_context(pipeline, run_id, {"config_hash": config.content_hash(), "git_commit": git_commit()})
    return store.record_execution(
        run, component, inputs or {}, outputs or {},
        properties={"config_hash": config.content_hash(), "git_commit": git_commit(), **(properties or {})},
        state=state)
