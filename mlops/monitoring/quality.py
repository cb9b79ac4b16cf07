"""Data quality of live traffic: missing and out-of-vocabulary rates per feature, and the rows that
were served with the feature store's defaults.

Rows served with defaults: the online server completes a request with documented defaults when the
store knows nothing about an entity (or, under the `defaults` failure policy, when the store does
not answer): NaN for numeric and "" for categorical features (serving/enrichment.py). The payload
log stores the model's input columns only, without a per-row mark, so such rows are recognised by
their values: every feature of one store group (a feature table, or a rolling aggregate) missing
at once. A payload log that does carry a mark (a boolean `feature_defaults` column) is counted
from the mark instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mlops.monitoring.drift import CATEGORICAL, present_categorical

DEFAULTS_MARK = "feature_defaults"


@dataclass(frozen=True)
class FeatureQuality:
    feature: str
    kind: str
    rows: int
    missing_rate: float
    oov_rate: float | None  # categorical: share of present values outside the reference vocabulary
    oov_examples: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def is_missing(column: pd.Series) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    return np.array([v is None or v != v or v == "" for v in values], dtype=bool)


def feature_quality(
    window: pd.DataFrame, kinds: dict[str, str], vocabularies: dict[str, set[str]]
) -> list[FeatureQuality]:
    out = []
    n = len(window)
    for name, kind in kinds.items():
        if name not in window.columns:
            out.append(FeatureQuality(name, kind, n, 1.0, None, []))
            continue
        missing = is_missing(window[name])
        oov, examples = None, []
        if kind == CATEGORICAL and name in vocabularies:
            present = present_categorical(window[name].to_numpy())
            outside = present[~np.isin(present, list(vocabularies[name]))] if present.size else present
            oov = float(outside.size / present.size) if present.size else 0.0
            examples = sorted(set(outside.tolist()))[:5]
        out.append(FeatureQuality(name, kind, n, float(missing.mean()) if n else 0.0, oov, examples))
    return out


def store_groups(config) -> dict[str, list[str]]:
    """Feature-store group -> the model features it provides (feature tables and rolling aggregates)."""
    from mlops.artifacts import model_features

    inputs = [f.name for f in model_features(config)]
    groups: dict[str, list[str]] = {}
    if config.features is None:
        return groups
    for table in config.features.tables:
        names = [c for c in table.columns if c in inputs]
        if names:
            groups[table.name] = names
    for aggregate in config.features.aggregates:
        names = [c for c in inputs if c.startswith(f"{aggregate.name}_")]
        if names:
            groups[aggregate.name] = names
    return groups


def rows_with_store_defaults(window: pd.DataFrame, groups: dict[str, list[str]]) -> dict[str, int]:
    """Rows per store group with all of that group's features missing, and `any` of them."""
    n = len(window)
    if DEFAULTS_MARK in window.columns:
        marked = int(window[DEFAULTS_MARK].fillna(False).astype(bool).sum())
        return {"any": marked}
    out: dict[str, int] = {}
    any_group = np.zeros(n, dtype=bool)
    for group, names in groups.items():
        present = [c for c in names if c in window.columns]
        if not present:
            continue
        all_missing = np.logical_and.reduce([is_missing(window[c]) for c in present])
        out[group] = int(all_missing.sum())
        any_group |= all_missing
    out["any"] = int(any_group.sum())
    return out
