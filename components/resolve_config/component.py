"""KFP interface: merge and validate the run's config overrides (implementation: executor.py)."""

from typing import NamedTuple

from kfp import dsl

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def resolve_config(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    epochs: int,
    learning_rate: float,
    min_auc: float,
    max_auc_drop: float,
) -> NamedTuple("ResolvedConfig", [("overrides", str), ("config_hash", str)]):
    """Validates the config with this run's parameters; outputs the overrides every step uses.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty.
        epochs: Training epochs (0: as configured).
        learning_rate: Learning rate (0: as configured).
        min_auc: Blessing threshold on AUC (negative: as configured).
        max_auc_drop: Allowed AUC drop versus production (negative: as configured).

    Returns:
        overrides: the merged overrides (JSON); config_hash: content hash of the resolved config.
    """
    from collections import namedtuple

    from components.resolve_config.executor import resolve

    overrides, config_hash = resolve(
        config_path,
        config_overrides,
        artifact_root,
        epochs=epochs,
        learning_rate=learning_rate,
        min_auc=min_auc,
        max_auc_drop=max_auc_drop,
    )
    return namedtuple("ResolvedConfig", ["overrides", "config_hash"])(overrides, config_hash)
