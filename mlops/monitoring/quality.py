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

from mlops.monitoring.drift import CATEGORICAL, missing_categorical, present_categorical

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
    return missing_categorical(values)


OOV_EXAMPLES = 5  # the alphabetically first out-of-vocabulary values reported per feature


class QualityCounts:
    """Exact data-quality counts of a window, added chunk by chunk (the same numbers whatever the
    chunks): rows, missing values and out-of-vocabulary values per feature, rows served with
    feature-store defaults per store group (`groups`: store_groups)."""

    def __init__(self, kinds: dict[str, str], vocabularies: dict[str, set[str]], groups: dict[str, list[str]]):
        self.kinds, self.groups = kinds, groups
        self.vocabularies = {k: np.array(sorted(v), dtype=str) for k, v in vocabularies.items()}
        self.rows = 0
        self.missing = dict.fromkeys(kinds, 0)
        self.present = dict.fromkeys(kinds, 0)
        self.outside = dict.fromkeys(kinds, 0)
        self.examples: dict[str, list[str]] = {k: [] for k in kinds}
        self.lacking = set(kinds)  # features no chunk had a column for
        self.marked: int | None = None  # rows counted by a DEFAULTS_MARK column, when the logs have one
        self.defaults = dict.fromkeys(groups, 0)
        self.any_defaults = 0
        self.seen_groups: set[str] = set()  # groups with a column in some chunk

    def add(self, window: pd.DataFrame) -> None:
        n = len(window)
        self.rows += n
        for name, kind in self.kinds.items():
            if name not in window.columns:
                self.missing[name] += n
                continue
            self.lacking.discard(name)
            self.missing[name] += int(is_missing(window[name]).sum())
            if kind == CATEGORICAL and name in self.vocabularies:
                present = present_categorical(window[name].to_numpy())
                outside = present[~np.isin(present, self.vocabularies[name])] if present.size else present
                self.present[name] += int(present.size)
                self.outside[name] += int(outside.size)
                self.examples[name] = sorted(set(self.examples[name]) | set(outside.tolist()))[:OOV_EXAMPLES]
        if DEFAULTS_MARK in window.columns:
            self.marked = (self.marked or 0) + int(window[DEFAULTS_MARK].fillna(False).astype(bool).sum())
            return
        any_group = np.zeros(n, dtype=bool)
        for group, names in self.groups.items():
            present = [c for c in names if c in window.columns]
            if not present:
                continue
            self.seen_groups.add(group)
            all_missing = np.logical_and.reduce([is_missing(window[c]) for c in present])
            self.defaults[group] += int(all_missing.sum())
            any_group |= all_missing
        self.any_defaults += int(any_group.sum())

    def features(self) -> list[FeatureQuality]:
        out = []
        for name, kind in self.kinds.items():
            if name in self.lacking:
                out.append(FeatureQuality(name, kind, self.rows, 1.0, None, []))
                continue
            oov = None
            if kind == CATEGORICAL and name in self.vocabularies:
                oov = self.outside[name] / self.present[name] if self.present[name] else 0.0
            missing = self.missing[name] / self.rows if self.rows else 0.0
            out.append(FeatureQuality(name, kind, self.rows, missing, oov, list(self.examples[name])))
        return out

    def store_defaults(self) -> dict[str, int]:
        """Rows per store group with all of that group's features missing, and `any` of them (or,
        from a DEFAULTS_MARK column, only `any`)."""
        if self.marked is not None:
            return {"any": self.marked}
        return {**{g: n for g, n in self.defaults.items() if g in self.seen_groups}, "any": self.any_defaults}


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
