"""TFDV validation results as plain rows: one row per (feature, reason), classified.

TFDV facts handled here (tensorflow-data-validation 1.16.1):
  * `validate_statistics(..., previous_statistics=...)` / `serving_statistics=` also re-runs the
    schema checks on `statistics`: a drift call returns schema anomalies too. Comparator results
    are told apart by reason type (COMPARATOR_*), and the raw measurements (also below the
    threshold) are in `drift_skew_info`.
  * Statistics of an empty split validate with NO anomaly, only `data_missing: true`: reported
    here as an EMPTY_SPLIT dataset anomaly.
  * `environment=` must be one of the schema's default_environment values (ValueError otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2

from mlops import storage

SCHEMA, DRIFT, SKEW, SERVING = "schema", "drift", "skew", "serving"
DATASET_FEATURE = "[dataset]"
EMPTY_SPLIT = "EMPTY_SPLIT"

_TYPE = anomalies_pb2.AnomalyInfo.Type
_SEVERITY = anomalies_pb2.AnomalyInfo.Severity
_MEASURE = anomalies_pb2.DriftSkewInfo.Measurement.Type


@dataclass(frozen=True)
class Anomaly:
    category: str  # schema | drift | skew | serving (serving data vs the schema's SERVING environment)
    split: str
    feature: str  # feature path, or "[dataset]"
    kind: str  # TFDV AnomalyInfo.Type name, e.g. ENUM_TYPE_UNEXPECTED_STRING_VALUES
    severity: str  # ERROR | WARNING
    description: str


@dataclass(frozen=True)
class Measurement:
    comparison: str  # drift | skew
    split: str
    feature: str
    measure: str  # L_INFTY | JENSEN_SHANNON_DIVERGENCE | NORMALIZED_ABSOLUTE_DIFFERENCE
    value: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold


def is_comparator(kind: str) -> bool:
    return kind.startswith("COMPARATOR_")


def _path(info_key: str, info: anomalies_pb2.AnomalyInfo) -> str:
    steps = list(info.path.step)
    return ".".join(steps) if steps else info_key


def rows(
    anomalies: anomalies_pb2.Anomalies,
    category: str,
    split: str,
    *,
    comparators_only: bool = False,
    exclude_comparators: bool = False,
) -> list[Anomaly]:
    out = []
    infos = [(_path(k, v), v) for k, v in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
        infos.append((DATASET_FEATURE, anomalies.dataset_anomaly_info))
    for name, info in infos:
        severity = _SEVERITY.Name(info.severity)
        for reason in info.reason:
            kind = _TYPE.Name(reason.type)
            if (comparators_only and not is_comparator(kind)) or (exclude_comparators and is_comparator(kind)):
                continue
            out.append(Anomaly(category, split, name, kind, severity, reason.description or reason.short_description))
    return out


def measurements(anomalies: anomalies_pb2.Anomalies, comparison: str, split: str) -> list[Measurement]:
    out = []
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        values = info.drift_measurements if comparison == DRIFT else info.skew_measurements
        for m in values:
            out.append(Measurement(comparison, split, name, _MEASURE.Name(m.type), float(m.value), float(m.threshold)))
    return sorted(out, key=lambda m: m.feature)


def empty_split(split: str) -> Anomaly:
    return Anomaly(
        SCHEMA,
        split,
        DATASET_FEATURE,
        EMPTY_SPLIT,
        "ERROR",
        f"split {split!r} has no examples (TFDV reports no anomaly for empty statistics)",
    )


def write_anomalies_text(anomalies: anomalies_pb2.Anomalies, uri: str) -> None:
    storage.write_bytes_atomic(uri, text_format.MessageToString(anomalies).encode("utf-8"))


def read_anomalies_text(uri: str) -> anomalies_pb2.Anomalies:
    out = anomalies_pb2.Anomalies()
    text_format.Parse(storage.read_bytes(uri).decode("utf-8"), out)
    return out
