"""A second dataset for onboarding tests: sensor readings with unix-second timestamps and two
columns present in about 1 row in 1,000 (tests/configs/sensor_events.yaml)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.support.fixtures import REPO

CONFIG = REPO / "tests" / "configs" / "sensor_events.yaml"
ROWS = 2000
START = 1_609_459_200  # 2021-01-01T00:00:00Z
SPARSE_ROWS = (150, 1700)  # gust and fault_code are present in these rows only (in the train and eval periods)


def sensor_events(rows: int = ROWS, seed: int = 3) -> pd.DataFrame:
    """Readings every 30 minutes (+ a few seconds of jitter, so some times are not multiples of
    1000 s), shuffled as an export would be; gust and fault_code only in SPARSE_ROWS."""
    rng = np.random.default_rng(seed)
    temperature = rng.normal(12.0, 6.0, rows).round(1)
    df = pd.DataFrame(
        {
            "reading_id": np.arange(rows),
            "observed_at": START + np.arange(rows) * 1800 + rng.integers(0, 30, rows),
            "station": rng.choice(["north", "south", "east", "west"], rows),
            "temperature": temperature,
            "pressure": rng.normal(1013.0, 8.0, rows).round(1),
            "gust": np.nan,
            "fault_code": None,
            "alarm": (temperature + rng.normal(0, 4.0, rows) > 18).astype(int),
        }
    )
    df.loc[list(SPARSE_ROWS), "gust"] = [21.5, 30.0]
    df.loc[list(SPARSE_ROWS), "fault_code"] = ["E7", "E2"]
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
