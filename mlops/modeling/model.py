"""The Keras model on TRANSFORMED features (tf_keras: set TF_USE_LEGACY_KERAS=1 before importing
TensorFlow). The serving SavedModel wraps it with the TFT layer; the TFLite model is this core.

Inputs, named by mlops.modeling.preprocessing.FeaturePlan, each a [batch] tensor:
  float32: <numeric>_z, <numeric>_missing
  int64:   <categorical>_id, <numeric>_bucket, <cross>_cross

architecture "dnn":       embeddings (embedding_dim) of every id input, concatenated with the
                          dense inputs -> Dense(hidden_units, relu)... -> 1 logit.
architecture "wide_deep": the dnn logit + a wide linear logit over the one-hot ids (a 1-wide
                          embedding per id input = a linear model on their one-hot encoding).
Binary classification: sigmoid -> probability; regression: the logit is the prediction.

TensorFlow is imported inside the functions, so this module imports without it.
"""

from __future__ import annotations

from mlops.config import ModelSpec, TaskType
from mlops.modeling.preprocessing import FeaturePlan


def configure_tf_keras() -> None:
    """Stops AutoGraph from converting tf_keras' own code.

    TensorFlow's AutoGraph skips the `keras` package (its code is written for graph mode) but not
    `tf_keras`, the same code under TF_USE_LEGACY_KERAS=1: tracing a train step then transpiles
    hundreds of tf_keras functions, measured at 40-80 s before the first batch (3 ms per step
    after). Registering tf_keras like keras restores the normal behaviour."""
    from tensorflow.python.autograph.core import config as autograph_config

    rules = tuple(autograph_config.CONVERSION_RULES)
    if not any(getattr(r, "_prefix", None) == "tf_keras" for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"),) + rules


def cardinalities(plan: FeaturePlan, vocabulary_sizes: dict[str, int]) -> dict[str, int]:
    """Number of distinct ids of every int64 model input."""
    out = {}
    for c in plan.categorical:
        out[plan.id_name(c)] = int(vocabulary_sizes[c]) + plan.oov_buckets
    for name, n in plan.bucketize:
        out[plan.bucket_name(name)] = int(n)
    for cross in plan.crosses:
        out[plan.cross_name(cross)] = plan.cross_hash_buckets
    return out


def input_signature(plan: FeaturePlan) -> dict:
    import tensorflow as tf

    sig = {name: tf.TensorSpec([None], tf.float32, name=name) for name in plan.dense_features()}
    sig.update({name: tf.TensorSpec([None], tf.int64, name=name) for name in plan.id_features()})
    return sig


def build_model(spec: ModelSpec, plan: FeaturePlan, cards: dict[str, int]):
    """A compiled tf.keras Model taking the transformed features (dict) -> [batch, 1]."""
    import tensorflow as tf

    configure_tf_keras()
    keras = tf.keras
    inputs = {name: keras.Input(shape=(), dtype=tf.float32, name=name) for name in plan.dense_features()}
    inputs.update({name: keras.Input(shape=(), dtype=tf.int64, name=name) for name in plan.id_features()})

    deep_parts = []
    if plan.dense_features():
        columns = [keras.layers.Reshape((1,), name=f"col_{name}")(inputs[name]) for name in plan.dense_features()]
        deep_parts.append(columns[0] if len(columns) == 1 else keras.layers.Concatenate(name="dense_inputs")(columns))
    for name in plan.id_features():
        deep_parts.append(keras.layers.Embedding(cards[name], spec.embedding_dim, name=f"emb_{name}")(inputs[name]))
    x = deep_parts[0] if len(deep_parts) == 1 else keras.layers.Concatenate(name="deep_inputs")(deep_parts)
    for i, units in enumerate(spec.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    logit = keras.layers.Dense(1, name="deep_logit")(x)

    if spec.architecture == "wide_deep" and plan.id_features():
        wide = [
            keras.layers.Embedding(cards[name], 1, embeddings_initializer="zeros", name=f"wide_{name}")(inputs[name])
            for name in plan.id_features()
        ]
        logit = keras.layers.Add(name="logit")([logit, *wide])

    if plan.task == TaskType.regression:
        output = keras.layers.Activation("linear", name="prediction")(logit)
        loss, metrics = keras.losses.MeanSquaredError(), [keras.metrics.RootMeanSquaredError(name="rmse")]
    else:
        output = keras.layers.Activation("sigmoid", name="probability")(logit)
        loss, metrics = keras.losses.BinaryCrossentropy(), [keras.metrics.AUC(name="auc")]
    model = keras.Model(inputs=inputs, outputs=output, name=f"{spec.architecture}_core")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate), loss=loss, metrics=metrics)
    return model
