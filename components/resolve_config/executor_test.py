import json

import pytest

from components.resolve_config.executor import merged_overrides, resolve
from mlops.config import ConfigError


def test_sentinels_keep_config_values():
    assert merged_overrides("") == {}
    assert merged_overrides('{"split.seed": 3}', epochs=2, min_auc=0.7) == {
        "split.seed": 3,
        "model.epochs": 2,
        "evaluation.min_auc": 0.7,
    }


def test_resolve_validates_early(artifact_root):
    overrides, config_hash = resolve("configs/flights.yaml", "", "", epochs=1)
    assert json.loads(overrides) == {"model.epochs": 1} and len(config_hash) == 16
    with pytest.raises(ConfigError, match=r"evaluation\.min_auc"):
        resolve("configs/flights.yaml", "", "", min_auc=3.0)
    with pytest.raises(ConfigError, match="JSON object"):
        resolve("configs/flights.yaml", "[1]", "")
