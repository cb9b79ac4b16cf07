"""TFDV schema helpers: read/write text schemas, environments, drift/skew comparators.

Conventions of the platform (applied by SchemaGen to an inferred schema and to a curated one):
  * environments TRAINING and SERVING; the label is `not_in_environment: "SERVING"` (serving
    requests carry no label). Validation of training splits uses TRAINING, of serving data
    SERVING.
  * categorical features: drift/skew comparator = L-infinity distance (TFDV computes it from the
    string statistics only: on a numeric feature it silently measures 0.0);
  * numeric features (and the label): Jensen-Shannon divergence on the QUANTILES histogram.
    TFDV's default source is the equal-width histogram, which gives false drift between two
    samples of one distribution when the value range differs a little (measured on July 2013
    flights, two disjoint 3,000-row samples: precip 0.17, and engines 0.46 at 1,000/10,000
    rows); the quantile histogram stays below 0.06 on those features.
  * the label gets no skew comparator (it is not served).
  * a comparator already present in the schema wins: a curated schema may set a per-feature
    threshold (e.g. 1.0 = never, for a feature that differs by construction between spans).
"""

from __future__ import annotations

import math

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from mlops import storage
from mlops.config import ColumnKind, PlatformConfig
from mlops.errors import InvalidInput

TRAINING = "TRAINING"
SERVING = "SERVING"
ENVIRONMENTS = (TRAINING, SERVING)

Schema = schema_pb2.Schema


class SchemaError(InvalidInput):
    """A schema file that cannot be used (unreadable, or not covering the configured features)."""


def load_schema(uri: str) -> Schema:
    """A text-format Schema (comments allowed)."""
    schema = Schema()
    try:
        text_format.Parse(storage.read_bytes(uri).decode("utf-8"), schema)
    except text_format.ParseError as e:
        raise SchemaError(f"{uri}: not a valid text-format tensorflow_metadata Schema: {e}") from None
    return schema


def schema_text(schema: Schema, header: str = "") -> str:
    body = text_format.MessageToString(schema)
    lines = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return ("\n".join(lines) + "\n" if lines else "") + body


def write_schema(schema: Schema, uri: str, header: str = "") -> None:
    """Text-format schema, atomically; `header` lines become `#` comments at the top."""
    storage.write_bytes_atomic(uri, schema_text(schema, header).encode("utf-8"))


def feature(schema: Schema, name: str) -> schema_pb2.Feature | None:
    for f in schema.feature:
        if f.name == name:
            return f
    return None


def is_categorical(f: schema_pb2.Feature, config: PlatformConfig | None = None) -> bool:
    """Config kind first; otherwise a string feature or an int feature marked categorical."""
    if config is not None:
        for spec in config.dataset.features:
            if spec.name == f.name:
                return spec.kind == ColumnKind.categorical
    if f.type == schema_pb2.BYTES:
        return True
    return f.type == schema_pb2.INT and f.HasField("int_domain") and f.int_domain.is_categorical


def ensure_environments(schema: Schema, label: str) -> Schema:
    """TRAINING and SERVING environments; the label only in TRAINING. Idempotent."""
    for env in ENVIRONMENTS:
        if env not in schema.default_environment:
            schema.default_environment.append(env)
    f = feature(schema, label)
    if f is None:
        raise SchemaError(f"the schema has no feature for the label {label!r}")
    if SERVING not in f.not_in_environment:
        f.not_in_environment.append(SERVING)
    if SERVING in f.in_environment:
        f.in_environment.remove(SERVING)
    return schema


def _set(comparator: schema_pb2.FeatureComparator, categorical: bool, threshold: float) -> None:
    if categorical:
        comparator.infinity_norm.threshold = threshold
    else:
        comparator.jensen_shannon_divergence.threshold = threshold
        comparator.jensen_shannon_divergence.source.type = schema_pb2.HistogramSelection.QUANTILES


def apply_comparators(schema: Schema, config: PlatformConfig) -> Schema:
    """Drift comparators on every feature and the label, skew comparators on every feature
    except the label, with the config's thresholds, where the schema has none yet."""
    v = config.validation
    label = config.dataset.label.column
    for f in schema.feature:
        categorical = is_categorical(f, config)
        if not f.HasField("drift_comparator"):
            _set(f.drift_comparator, categorical, v.categorical_drift_linf if categorical else v.numeric_drift_js)
        if f.name != label and not f.HasField("skew_comparator"):
            _set(f.skew_comparator, categorical, v.skew_linf)
    return schema


def relax_inferred_domains(schema: Schema, min_domain_mass: float = 0.99) -> Schema:
    """Inferred string domains list exactly the values of the data they were inferred from: a
    value that is rare in that data (one flight to an airport) then fails the next split. Allow
    up to 1 - min_domain_mass of values outside the domain (TFDV then reports nothing below it,
    and an ERROR above it). A curated schema decides per feature instead."""
    domains = {d.name for d in schema.string_domain}
    for f in schema.feature:
        if f.type == schema_pb2.BYTES and (f.domain in domains or f.HasField("string_domain")):
            if not f.HasField("distribution_constraints"):
                f.distribution_constraints.min_domain_mass = min_domain_mass
    return schema


# A feature whose expected count in the smallest split is below this is "rare": it may be absent
# from a split by chance (Poisson: P(0 present | 30 expected) = e^-30), so the schema must not
# demand it there.
RARE_EXPECTED_COUNT = 30
# Partially present, not rare: require at least this share of the observed fraction (a Poisson
# count of >= 30 expected falls below half of it with probability < 0.1%).
PRESENCE_MARGIN = 0.5


def observed_presence(stats) -> dict[str, tuple[int, int]]:
    """feature name -> (examples with a value, examples) in the default slice of `stats`."""
    from mlops.validation.statistics import default_slice

    ds = default_slice(stats)
    out = {}
    for f in ds.features:
        kind = f.WhichOneof("stats")
        common = getattr(f, kind).common_stats if kind in ("num_stats", "string_stats", "bytes_stats") else None
        if common is None and kind == "struct_stats":
            common = f.struct_stats.common_stats
        if common is not None:
            out[".".join(f.path.step) or f.name] = (int(common.num_non_missing), int(ds.num_examples))
    return out


def relax_inferred_presence(schema: Schema, stats, smallest_split_share: float = 1.0) -> dict[str, float]:
    """Presence of an inferred schema from the observed fractions. tfdv.infer_schema requires
    every feature it saw at all in EVERY split (`min_count: 1`): a column present in 1 of 15,000
    rows then fails the eval and test splits (FEATURE_TYPE_NOT_PRESENT). Instead:
      * present in every row: required (TFDV's min_fraction 1, unchanged);
      * rare (expected count in the smallest split, `smallest_split_share` x the rows of `stats`,
        below RARE_EXPECTED_COUNT): optional (min_fraction 0, min_count 0), and a string domain
        inferred from its handful of values is kept for review but not enforced (min_domain_mass 0:
        the next split's one value is as likely new as not);
      * otherwise: min_fraction = PRESENCE_MARGIN x the observed fraction (rounded down).
    Returns the observed fraction of every feature made optional or given a min_fraction."""
    seen = observed_presence(stats)
    relaxed: dict[str, float] = {}
    for f in schema.feature:
        present, total = seen.get(f.name, (0, 0))
        if not total or present >= total:
            continue
        fraction = present / total
        if fraction * total * smallest_split_share < RARE_EXPECTED_COUNT:
            f.presence.min_fraction = 0.0
            f.presence.min_count = 0
            if f.type == schema_pb2.BYTES and (f.HasField("domain") or f.HasField("string_domain")):
                f.distribution_constraints.min_domain_mass = 0.0
        else:
            f.presence.min_fraction = math.floor(fraction * PRESENCE_MARGIN * 1000) / 1000
            f.presence.min_count = 1
        relaxed[f.name] = fraction
    return relaxed


def config_feature_names(config: PlatformConfig) -> list[str]:
    from mlops.artifacts import model_features

    return [f.name for f in model_features(config)] + [config.dataset.label.column]


def check_covers_config(schema: Schema, config: PlatformConfig, where: str) -> None:
    """A curated schema must describe every configured feature and the label."""
    names = {f.name for f in schema.feature}
    missing = [n for n in config_feature_names(config) if n not in names]
    if missing:
        raise SchemaError(
            f"{where}: the schema lacks configured feature(s) {missing}; add them to the curated "
            f"schema or remove validation.schema_path to infer one"
        )
