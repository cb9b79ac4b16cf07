"""Request rows -> the model's raw features, with the rest fetched from the Feast online store.

A request carries what the caller knows at request time: the entity keys (origin, dest, carrier,
tailnum for flights), the request-time features (month, hour, distance...) and optionally the
event time (the dataset's event timestamp column, e.g. `time_hour`, ISO-8601 text or epoch
seconds; default: now). The features the feature store provides (weather, plane, rolling delay
statistics) are looked up in ONE online read per request, as a KServe transformer would.

Documented defaults when the store has nothing for an entity (unknown tailnum, a day not
materialized): numeric features are missing (NaN), which the model's TFT graph replaces with the
training mean while setting the feature's missing indicator; categorical features are "" (the
missing token). A request never fails because an entity is unknown; such rows are counted.

A caller may also send a feature-store feature itself: its value wins over the lookup (useful
for replaying logged requests and for a store outage).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from serving.predictor import CATEGORICAL, NUMERIC, InputSpec, PredictionInputError, as_numeric, as_text


@dataclass
class RequestSchema:
    """What a client sends: `required` inputs and `optional` ones (the time column, features the
    store would provide). Reported by the model metadata endpoints."""

    required: list[InputSpec]
    optional: list[InputSpec] = field(default_factory=list)

    @property
    def all(self) -> list[InputSpec]:
        return self.required + self.optional


def _epoch_seconds_to_iso(values: np.ndarray) -> np.ndarray:
    return np.array([dt.datetime.fromtimestamp(float(v), dt.timezone.utc).isoformat() if np.isfinite(v) else ""
                     for v in values], dtype=object)


class FeatureEnricher:
    """Completes request rows for a predictor. Without a feature store (config.features unset,
    or serving.feature_lookup false) it only checks that every model input is present."""

    def __init__(self, config, model_inputs: list[InputSpec], *, store=None):
        from mlops.datasets.ingest import provided_by_feature_store

        self.config = config
        self.model_inputs = list(model_inputs)
        use_store = config.features is not None and config.serving.feature_lookup
        provided = provided_by_feature_store(config) if use_store else set()
        self.store_features = [s for s in self.model_inputs if s.name in provided]
        self.lookup = bool(self.store_features)
        self.time_column = config.dataset.event_timestamp if self.lookup else None
        # the keys of the online read (the time column only selects the day, see online_features)
        self.lookup_keys = ([k for k in config.dataset.entity_keys if k != self.time_column]
                            if self.lookup else [])
        self._store = store
        model_names = {s.name for s in self.model_inputs}
        required = [s for s in self.model_inputs if s.name not in provided]
        if self.lookup:
            required += [InputSpec(k, CATEGORICAL) for k in self.lookup_keys if k not in model_names]
        optional = ([InputSpec(self.time_column, CATEGORICAL)] if self.time_column else []) + self.store_features
        self.schema = RequestSchema(sorted(required, key=lambda s: s.name), optional)
        self.rows_without_features = 0  # rows the store knew nothing about (defaults used)

    def store(self):
        if self._store is None and self.lookup:
            from mlops.features.store import feature_store

            self._store = feature_store(self.config)
        return self._store

    def _time_values(self, values) -> np.ndarray:
        arr = np.asarray(values)
        if arr.dtype.kind in "iuf":
            return _epoch_seconds_to_iso(arr.astype(np.float64).reshape(-1))
        return as_text(self.time_column, arr).reshape(-1)

    def check(self, rows: Mapping[str, object], *, max_rows: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """The request columns checked against the schema: (encoded columns except the time
        column, row count). PredictionInputError names what is wrong."""
        from serving.predictor import validate_rows

        given_optional = [s for s in self.schema.optional if s.name in rows and s.name != self.time_column]
        has_time = self.time_column is not None and self.time_column in rows
        return validate_rows(self.schema.required + given_optional, rows, max_rows=max_rows,
                             allow_extra=[self.time_column] if has_time else ())

    def complete(self, rows: Mapping[str, object], *, max_rows: int | None = None) -> tuple[dict[str, np.ndarray], int]:
        """Validated request columns -> (every model input as a raw column, row count)."""
        checked, n = self.check(rows, max_rows=max_rows)
        missing_store = [s for s in self.store_features if s.name not in checked]
        if missing_store:
            times = None
            if self.time_column is not None and self.time_column in rows:
                times = self._time_values(rows[self.time_column])
                if len(times) != n:
                    raise PredictionInputError(f"input {self.time_column!r}: {len(times)} rows, expected {n}")
            fetched = self.fetch(checked, n, times)
            for spec in missing_store:
                checked[spec.name] = fetched[spec.name]
        return {s.name: checked[s.name] for s in self.model_inputs}, n

    def fetch(self, cols: Mapping[str, np.ndarray], n: int, times: np.ndarray | None) -> dict[str, np.ndarray]:
        """One online read for all n rows; defaults where the store has no value."""
        from mlops.features.store import online_features

        keys = self.lookup_keys
        entity_rows = []
        for i in range(n):
            r = {k: cols[k][i] for k in keys}
            if times is not None and times[i]:
                r[self.time_column] = times[i]
            entity_rows.append(r)
        try:
            result = online_features(self.config, entity_rows, store=self.store())
        except ValueError as e:  # a time that does not parse, a missing join key
            raise PredictionInputError(f"feature lookup: {e}") from None
        out = {}
        empty = np.zeros(n, dtype=bool)
        for spec in self.store_features:
            values = [r.get(spec.name) for r in result]
            empty |= np.array([v is None for v in values], dtype=bool)
            out[spec.name] = (as_numeric(spec.name, values) if spec.dtype == NUMERIC else as_text(spec.name, values))
        self.rows_without_features += int(empty.sum())
        return out
