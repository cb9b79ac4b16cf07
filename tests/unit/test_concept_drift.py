"""DDM on synthetic error streams with a known change point."""

from __future__ import annotations

import numpy as np
import pytest

from mlops.monitoring.concept_drift import DDM

CHANGE = 2000


def error_stream(seed: int, before: float = 0.1, after: float = 0.3, n_after: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(CHANGE) < before, rng.random(n_after) < after]).astype(np.float64)


@pytest.mark.parametrize("seed", range(5))
def test_ddm_fires_after_a_known_change_and_not_before(seed):
    result = DDM().run(error_stream(seed))
    assert result.detected and result.samples == CHANGE + 2000
    assert all(c >= CHANGE for c in result.changes), result.changes  # no false alarm on the stable part
    assert result.changes[0] < CHANGE + 600, result.changes  # found within a few hundred errors
    assert result.warnings and result.warnings[0] >= CHANGE


@pytest.mark.parametrize("seed", range(5))
def test_ddm_stays_quiet_on_a_stable_stream(seed):
    result = DDM().run(error_stream(seed, after=0.1))
    assert not result.detected and result.changes == []
    assert abs(result.error_rate - 0.1) < 0.02


def test_ddm_an_error_free_start_is_not_a_drift_at_the_first_error():
    stream = np.zeros(1000)
    stream[[400, 700]] = 1.0  # two errors in 1,000 after an error-free start: no change of concept
    assert not DDM().run(stream).detected


def test_ddm_an_improving_model_is_not_a_drift_and_empty_streams_are_fine():
    assert not DDM().run(error_stream(0, before=0.3, after=0.05)).detected
    empty = DDM().run([])
    assert empty.to_json() == {
        "method": "ddm",
        "samples": 0,
        "error_rate": None,
        "changes": [],
        "warnings": [],
        "parameters": {"warning_level": 3.5, "drift_level": 4.5, "min_samples": 300},
        "detected": False,
    }
