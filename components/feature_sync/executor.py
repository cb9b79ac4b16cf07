"""Feature sync: rebuild the Feast sources from the dataset repository (weather with its day key,
rolling aggregates from past data only), apply the feature repo, optionally materialize.

The sources are rebuilt every time (content-addressed: unchanged inputs give the same versions);
the apply (Feast's import and registry update: most of this step's time) is skipped when its
inputs and the registry are exactly as the last apply left them (store.apply_if_changed).

Runs in the serving environment, whose Feast owns the feature repo's writes (the pipeline
environment's Feast 0.48.1 only reads the registry). In the serving image it runs in process;
anywhere else (kfp.local in the pipeline environment) it hands the work to the serving
interpreter, exactly as the `mlops` CLI does. It records nothing in MLMD (the serving image has
no ML Metadata client): ExampleGen records the source versions it read as its inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys

from mlops import envs
from mlops.errors import MlopsError
from mlops.steps import load_step_config


class FeatureSyncError(MlopsError):
    """The serving environment's feature sync failed; the message carries its error output."""


def sync(config_path: str, config_overrides: str, artifact_root: str, materialize: bool) -> dict:
    if load_step_config(config_path, config_overrides, artifact_root).features is None:
        return {"sources": {}, "applied": {}, "materialized": False}  # a dataset without a feature store
    if envs.current_env() != envs.SERVING:
        cmd = [
            envs.interpreter(envs.SERVING),
            "-m",
            "components.feature_sync.executor",
            json.dumps([config_path, config_overrides, artifact_root, materialize]),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise FeatureSyncError(f"feature sync failed in the serving environment:\n{out.stderr[-4000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])  # the child's own log is captured
        _log_skip(result)
        return result
    from mlops.features import store

    config = load_step_config(config_path, config_overrides, artifact_root)
    sources = store.build_feature_sources(config)
    applied, reapplied = store.apply_if_changed(config)
    if materialize:
        store.materialize(config)
    result = {
        "sources": {name: v.id for name, v in sources.items()},
        "applied": applied,
        "reapplied": reapplied,
        "materialized": materialize,
    }
    _log_skip(result)
    return result


def _log_skip(result: dict) -> None:
    if not result.get("reapplied", True):
        print(
            "feature_sync: feature repo, sources and registry unchanged since the last apply: not re-applied",
            file=sys.stderr,
        )


if __name__ == "__main__":
    result = sync(*json.loads(sys.argv[1]))
    print(json.dumps(result))
