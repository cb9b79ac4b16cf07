"""The TFT preprocessing, derived from the config's feature kinds (no per-dataset code).

`FeaturePlan` (TensorFlow-free) names every transformed feature; `build_preprocessing_fn(config)`
returns the `preprocessing_fn` for tft_beam. Per raw feature (see mlops.artifacts for the raw
encoding: numeric float32 with NaN for missing, categorical string with "" for missing):

  numeric x      -> `x_z`       float32  (filled - mean) / std, where filled = mean if x is NaN
                                          (so a missing value has z = 0), std = 1 when the
                                          observed std is 0 or undefined, clipped to +-Z_CLIP (an
                                          absurd or infinite input otherwise overflows in the
                                          network: measured, TF gave 0 and TFLite NaN for one row);
                    `x_missing` float32  1.0 if x was NaN else 0.0.
                    mean/var are TFT analyzers over the OBSERVED values only
                    (tf.boolean_mask(x, ~is_nan)); a feature with no observed value gets mean 0.
  bucketize x: n -> `x_bucket`  int64 in [0, n): tft.quantiles over the observed values (TFT's
                                          quantiles ignore NaN), applied with tft.apply_buckets to
                                          the FILLED value (missing -> the mean's bucket).
  categorical c  -> `c_id`      int64 in [0, |vocab| + oov_buckets): tft.compute_and_apply_vocabulary
                                          (top_k from the config). A missing value "" is first
                                          replaced by MISSING_TOKEN, so "missing" is a token of its
                                          own when it was seen in training (TFT's text vocabulary
                                          drops the empty string, which would otherwise silently
                                          share an OOV bucket with unseen values). Values outside
                                          the vocabulary (and MISSING_TOKEN if it never occurred)
                                          go to |vocab| + Fingerprint64(value) % oov_buckets.
  cross (a, b..) -> `a_x_b_cross` int64 in [0, cross_hash_buckets):
                                          Fingerprint64(a + CROSS_SEPARATOR + b ...) % buckets on
                                          the RAW strings (tf.strings.to_hash_bucket_fast).
  label          -> passed through, int64 (classification) / float32 (regression).

Fingerprint64 is FarmHash's (farmhashna::Hash64); mlops.modeling.farmhash reproduces it in pure
Python so the TFLite preprocessor gives identical ids.

The analyzer results that a TFT-free preprocessor needs (means, stds, bucket boundaries) are
wrapped in tf.identity ops with known names (`stat_op_name`); after analysis TFT bakes them into
the transform graph as constants, and `mlops.modeling.tflite_export.transform_stats` reads them from
there, so the exported values are exactly the ones the transform graph applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlops.artifacts import RawFeature, model_features
from mlops.config import ColumnKind, PlatformConfig, TaskType

MISSING_TOKEN = "__MISSING__"
Z_CLIP = 1.0e4  # |z-score| bound: 10,000 standard deviations
CROSS_SEPARATOR = "\x1f"  # ASCII unit separator: not expected inside a category value
STAT_PREFIX = "mlops_stat"


def stat_op_name(kind: str, index: int) -> str:
    """Name of the tf.identity holding an analyzer result: kind in {mean, std, boundaries},
    index = position of the feature in FeaturePlan.numeric / FeaturePlan.bucketize."""
    return f"{STAT_PREFIX}__{kind}__{index}"


@dataclass(frozen=True)
class FeaturePlan:
    """Which raw features become which transformed features (pure data, no TensorFlow)."""

    raw: tuple[RawFeature, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    bucketize: tuple[tuple[str, int], ...]
    crosses: tuple[tuple[str, ...], ...]
    label: str
    task: TaskType
    oov_buckets: int
    vocabulary_top_k: int | None
    cross_hash_buckets: int

    @classmethod
    def from_config(cls, config: PlatformConfig) -> FeaturePlan:
        raw = tuple(model_features(config))
        t = config.transform
        plan = cls(
            raw=raw,
            numeric=tuple(f.name for f in raw if f.kind == ColumnKind.numeric),
            categorical=tuple(f.name for f in raw if f.kind == ColumnKind.categorical),
            bucketize=tuple((name, int(n)) for name, n in t.bucketize.items()),
            crosses=tuple(tuple(c) for c in t.crosses),
            label=config.dataset.label.column,
            task=config.dataset.label.task,
            oov_buckets=t.oov_buckets,
            vocabulary_top_k=t.vocabulary_top_k,
            cross_hash_buckets=t.cross_hash_buckets,
        )
        plan._check()
        return plan

    def _check(self) -> None:
        if self.task == TaskType.multiclass_classification:
            raise ValueError("multiclass_classification is not supported by the Transform/Trainer steps yet")
        for name, n in self.bucketize:
            if n < 2:
                raise ValueError(f"transform.bucketize.{name}: needs at least 2 buckets, got {n}")
        for cross in self.crosses:
            if len(cross) < 2:
                raise ValueError(f"transform.crosses: a cross needs at least 2 features, got {list(cross)}")
        names = self.transformed_feature_names() + [self.label]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"transformed feature names collide: {dupes}")

    # --- names of transformed features -------------------------------------------------
    @staticmethod
    def z_name(name: str) -> str:
        return f"{name}_z"

    @staticmethod
    def missing_name(name: str) -> str:
        return f"{name}_missing"

    @staticmethod
    def bucket_name(name: str) -> str:
        return f"{name}_bucket"

    @staticmethod
    def id_name(name: str) -> str:
        return f"{name}_id"

    @staticmethod
    def vocab_name(name: str) -> str:
        return f"vocab_{name}"

    @staticmethod
    def cross_name(cross: tuple[str, ...]) -> str:
        return "_x_".join(cross) + "_cross"

    @property
    def bucket_counts(self) -> dict[str, int]:
        return dict(self.bucketize)

    def dense_features(self) -> list[str]:
        """float32 model inputs, in a fixed order."""
        out = []
        for name in self.numeric:
            out += [self.z_name(name), self.missing_name(name)]
        return out

    def id_features(self) -> list[str]:
        """int64 model inputs (vocabulary ids, bucket ids, cross ids), in a fixed order."""
        return (
            [self.id_name(c) for c in self.categorical]
            + [self.bucket_name(n) for n, _ in self.bucketize]
            + [self.cross_name(c) for c in self.crosses]
        )

    def transformed_feature_names(self) -> list[str]:
        return self.dense_features() + self.id_features()

    def raw_dtypes(self, with_label: bool = True) -> dict[str, str]:
        """Raw feature name -> "float32" / "string" (+ the label's dtype)."""
        out = {f.name: f.dtype for f in self.raw}
        if with_label:
            out[self.label] = self.label_dtype
        return out

    @property
    def label_dtype(self) -> str:
        return "float32" if self.task == TaskType.regression else "int64"


def raw_feature_spec(config: PlatformConfig, with_label: bool = True) -> dict:
    """The raw tf.io feature spec (dense scalars), from the config (TFT's WriteTransformFn does
    not keep it when the input is TFXIO/Arrow)."""
    import tensorflow as tf

    plan = FeaturePlan.from_config(config)
    dtypes = {"float32": tf.float32, "string": tf.string, "int64": tf.int64}
    return {name: tf.io.FixedLenFeature([], dtypes[d]) for name, d in plan.raw_dtypes(with_label).items()}


def build_preprocessing_fn(config: PlatformConfig):
    """The tft_beam preprocessing_fn for this config (see the module doc for what it computes)."""
    plan = FeaturePlan.from_config(config)

    def preprocessing_fn(inputs):
        import tensorflow as tf
        import tensorflow_transform as tft

        out = {}
        filled = {}
        for i, name in enumerate(plan.numeric):
            x = tf.cast(inputs[name], tf.float32)
            is_missing = tf.math.is_nan(x)
            observed = tf.boolean_mask(x, tf.logical_not(is_missing))
            mean = tf.cast(tft.mean(observed, name=f"mean_{i}"), tf.float32)
            var = tf.cast(tft.var(observed, name=f"var_{i}"), tf.float32)
            mean = tf.where(tf.math.is_finite(mean), mean, tf.zeros_like(mean))
            std = tf.sqrt(var)
            std = tf.where(tf.math.is_finite(std) & (std > 0), std, tf.ones_like(std))
            mean = tf.identity(mean, name=stat_op_name("mean", i))
            std = tf.identity(std, name=stat_op_name("std", i))
            x_filled = tf.where(is_missing, tf.fill(tf.shape(x), mean), x)
            filled[name] = x_filled
            out[plan.z_name(name)] = tf.clip_by_value((x_filled - mean) / std, -Z_CLIP, Z_CLIP)
            out[plan.missing_name(name)] = tf.cast(is_missing, tf.float32)

        for i, (name, n) in enumerate(plan.bucketize):
            x = tf.cast(inputs[name], tf.float32)
            # tft.quantiles ignores NaN: boundaries come from observed values only.
            boundaries = tft.quantiles(x, num_buckets=n, epsilon=min(1.0 / n, 0.01), name=f"quantiles_{i}")
            boundaries = tf.identity(boundaries, name=stat_op_name("boundaries", i))
            out[plan.bucket_name(name)] = tft.apply_buckets(filled[name], boundaries)

        for i, name in enumerate(plan.categorical):
            s = inputs[name]
            s = tf.where(tf.equal(s, ""), tf.fill(tf.shape(s), MISSING_TOKEN), s)
            out[plan.id_name(name)] = tft.compute_and_apply_vocabulary(
                s,
                top_k=plan.vocabulary_top_k,
                num_oov_buckets=plan.oov_buckets,
                vocab_filename=plan.vocab_name(name),
                name=f"vocabulary_{i}",
            )

        for cross in plan.crosses:
            joined = tf.strings.join([inputs[c] for c in cross], separator=CROSS_SEPARATOR)
            out[plan.cross_name(cross)] = tf.strings.to_hash_bucket_fast(joined, plan.cross_hash_buckets)

        label_dtype = tf.float32 if plan.task == TaskType.regression else tf.int64
        out[plan.label] = tf.cast(inputs[plan.label], label_dtype)
        return out

    return preprocessing_fn
