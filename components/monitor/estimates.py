"""What a monitoring run estimates with a model: drift in the joint feature space (a domain
classifier), measured with the Evaluator's binary_metrics: the project has one definition of AUC
(TFMA's, components/evaluator). Performance before labels arrive (CBPE) is in cbpe.py.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from components.evaluator.executor import binary_metrics

# ---- joint space: a domain classifier --------------------------------------------------------
DOMAIN_MAX_ROWS = 5000  # per side; the AUC's standard error at 5,000 + 5,000 rows is ~0.006
DOMAIN_MAX_CATEGORIES = 250  # HistGradientBoosting's limit is 255 per categorical feature


def _encode(reference: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str]) -> tuple[np.ndarray, list[bool]]:
    both = pd.concat([reference[list(kinds)], window[list(kinds)]], ignore_index=True)
    columns, categorical = [], []
    for name, kind in kinds.items():
        col = both[name]
        if kind == "categorical":
            text = col.where(col.notna(), "").astype(str)
            top = text.value_counts().index[:DOMAIN_MAX_CATEGORIES]
            codes = pd.Categorical(text.where(text.isin(top), "__other__")).codes.astype(np.float64)
            columns.append(codes)
            categorical.append(True)
        else:
            columns.append(pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64))  # NaN: a branch of its own
            categorical.append(False)
    return np.column_stack(columns), categorical


def domain_classifier(reference: pd.DataFrame, window: pd.DataFrame, kinds: dict[str, str], *, seed: int = 0) -> dict:
    """How well a classifier tells window rows from reference rows: the AUC of 2-fold out-of-fold
    predictions (0.5: indistinguishable), with a one-sided p-value against 0.5 (the Mann-Whitney
    normal approximation of the AUC under no difference)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    ref = reference.sample(n=min(len(reference), DOMAIN_MAX_ROWS), random_state=seed)
    cur = window.sample(n=min(len(window), DOMAIN_MAX_ROWS), random_state=seed)
    if min(len(ref), len(cur)) < 10:
        return {"method": "domain_classifier_auc", "score": None, "p_value": None}
    x, categorical = _encode(ref, cur, kinds)
    y = np.concatenate([np.zeros(len(ref)), np.ones(len(cur))])
    model = HistGradientBoostingClassifier(max_iter=60, categorical_features=categorical, random_state=seed)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    # One OpenMP thread: on a loaded 2-core machine HistGradientBoosting's threads spin-wait on
    # each other (measured: 25 s instead of ~1 s for 2 x 60 trees on 10,000 rows).
    with threadpool_limits(1):
        proba = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    auc = binary_metrics(y, proba)["auc"]
    n1, n0 = len(cur), len(ref)
    se = math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))
    p_value = 0.5 * math.erfc((auc - 0.5) / se / math.sqrt(2))
    return {"method": "domain_classifier_auc", "score": auc, "p_value": p_value}
