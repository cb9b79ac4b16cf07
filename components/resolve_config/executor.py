"""Turns pipeline parameters (what a KFP UI user edits) into one validated config override set.

The pipeline exposes the values that matter per run (epochs, learning rate, thresholds); a
zero/negative/empty value means "as in the config file". Validating here makes a bad value fail
the run in its first second, with the config error, instead of deep inside a later step.
"""

from __future__ import annotations

import json

from mlops.config import ConfigError
from mlops.steps import load_step_config


def merged_overrides(
    config_overrides: str,
    *,
    epochs: int = 0,
    learning_rate: float = 0.0,
    min_auc: float = -1.0,
    max_auc_drop: float = -1.0,
) -> dict:
    overrides = json.loads(config_overrides) if config_overrides else {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"config_overrides must be a JSON object of dotted keys, got {config_overrides!r}")
    if epochs > 0:
        overrides["model.epochs"] = epochs
    if learning_rate > 0:
        overrides["model.learning_rate"] = learning_rate
    if min_auc >= 0:
        overrides["evaluation.min_auc"] = min_auc
    if max_auc_drop >= 0:
        overrides["evaluation.max_auc_drop"] = max_auc_drop
    return overrides


def resolve(config_path: str, config_overrides: str, artifact_root: str, **params) -> tuple[str, str]:
    """Returns (overrides as JSON, config content hash); raises ConfigError on a bad value."""
    overrides = json.dumps(merged_overrides(config_overrides, **params), sort_keys=True)
    config = load_step_config(config_path, overrides, artifact_root)
    return overrides, config.content_hash()
