"""The alibi-detect detector (monitoring.detector: alibi). alibi-detect 0.13 is licensed under the
Business Source License 1.1: no production use without a licence from Seldon (README, "Continuous
monitoring"). The default detector (mlops.monitoring.drift) is NumPy/SciPy only.

Per feature, on its present values (alibi-detect's detectors take no missing values): KSDrift for
numeric and ChiSquareDrift for categorical features (integer codes over both sides' categories),
each at p_val = monitoring.p_value / number of features (Bonferroni, as TabularDrift corrects).
The verdict is alibi-detect's `is_drift`; the default detector's effect sizes are reported beside
it. The joint-space check is MMDDrift (TensorFlow backend, Gaussian kernel, permutation test) on
standardised numeric features and one-hot top categories, on a subsample of each side.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from mlops.monitoring.drift import NUMERIC, Drift, present_categorical, present_numeric

MMD_MAX_ROWS = 1000  # per side: the kernel matrix is (2n)^2 and each permutation recomputes a sum over it
MMD_PERMUTATIONS = 100
MMD_TOP_CATEGORIES = 10


def feature_drift(reference: pd.DataFrame, window: pd.DataFrame, default: list[Drift], p_value: float) -> list[Drift]:
    """alibi-detect's verdict per feature, on top of the default detector's results `default`."""
    from alibi_detect.cd import ChiSquareDrift, KSDrift

    level = p_value / max(len(default), 1)
    out = []
    for d in default:
        if d.effect is None:
            out.append(d)
            continue
        if d.kind == NUMERIC:
            ref = present_numeric(reference[d.feature]).astype(np.float32).reshape(-1, 1)
            cur = present_numeric(window[d.feature]).astype(np.float32).reshape(-1, 1)
            detector = KSDrift(ref, p_val=level)
        else:
            r, c = (
                present_categorical(reference[d.feature].to_numpy()),
                present_categorical(window[d.feature].to_numpy()),
            )
            categories = {v: i for i, v in enumerate(np.union1d(r, c))}
            ref = np.array([categories[v] for v in r], dtype=np.int64).reshape(-1, 1)
            cur = np.array([categories[v] for v in c], dtype=np.int64).reshape(-1, 1)
            detector = ChiSquareDrift(ref, p_val=level, categories_per_feature={0: len(categories)})
        found = detector.predict(cur)["data"]
        out.append(
            replace(
                d,
                test="alibi_ks" if d.kind == NUMERIC else "alibi_chi2",
                statistic=float(np.ravel(found["distance"])[0]),
                p_value=float(np.ravel(found["p_val"])[0]),
                drifted=bool(found["is_drift"]),
            )
        )
    return out


def joint_matrix(frame: pd.DataFrame, kinds: dict[str, str], reference: pd.DataFrame) -> np.ndarray:
    """Numeric features standardised by the reference (missing -> 0, the mean), categorical as
    one-hot over the reference's most frequent categories."""
    columns = []
    for name, kind in kinds.items():
        if kind == NUMERIC:
            ref = pd.to_numeric(reference[name], errors="coerce")
            mean, std = float(ref.mean()), float(ref.std()) or 1.0
            x = (pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64) - mean) / std
            columns.append(np.nan_to_num(x, nan=0.0))
        else:
            top = reference[name].astype(str).value_counts().index[:MMD_TOP_CATEGORIES]
            text = frame[name].astype(str).to_numpy()
            columns.extend((text == category).astype(np.float64) for category in top)
    return np.column_stack(columns).astype(np.float32)


def mmd(reference: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str], p_value: float, seed: int = 0) -> dict:
    from alibi_detect.cd import MMDDrift

    ref = reference.sample(n=min(len(reference), MMD_MAX_ROWS), random_state=seed)
    cur = window.sample(n=min(len(window), MMD_MAX_ROWS), random_state=seed)
    detector = MMDDrift(
        joint_matrix(ref, kinds, reference), backend="tensorflow", p_val=p_value, n_permutations=MMD_PERMUTATIONS
    )
    found = detector.predict(joint_matrix(cur, kinds, reference))["data"]
    return {
        "method": "alibi_mmd",
        "score": float(found["distance"]),
        "p_value": float(found["p_val"]),
        "threshold": float(found["distance_threshold"]),
        "drifted": bool(found["is_drift"]),
    }
