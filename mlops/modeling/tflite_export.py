"""TFLite export: the core Keras model (transformed inputs -> output) as model.tflite, and the TFT
results a NumPy preprocessor needs as tflite_preprocessing.json.

TFT's vocabulary lookups do not run in the stock TFLite interpreter (Flex ops; builtin hash tables
left uninitialized), so the embedded artifact is the core model plus the preprocessing constants:
  * means / stds of numeric features and bucket boundaries: read from the transform graph, where
    TFT baked the analyzer results in as constants (the preprocessing_fn wraps them in tf.identity
    ops named by mlops.modeling.preprocessing.stat_op_name; the graph is frozen with its functions
    inlined and those tensors evaluated) - exactly the values the SavedModel applies;
  * vocabularies: TFT's vocabulary files (TFTransformOutput.vocabulary_by_name), in order;
  * the OOV and cross hashing rules (FarmHash Fingerprint64, see mlops.modeling.farmhash).
mlops.modeling.tflite_predictor applies them; the trainer checks parity against the SavedModel.
"""

from __future__ import annotations

from mlops.modeling.preprocessing import CROSS_SEPARATOR, MISSING_TOKEN, Z_CLIP, FeaturePlan, stat_op_name

FORMAT_VERSION = 1
TFLITE_SIGNATURE = "serving_default"


def transform_stats(transform_fn_dir: str, plan: FeaturePlan) -> dict[str, object]:
    """{stat_op_name: numpy value} for every mean/std/boundaries of the plan, from the graph."""
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    imported = tf.saved_model.load(transform_fn_dir)
    fn = imported.transform_fn  # a restored ConcreteFunction
    _, graph_def = convert_to_constants.convert_variables_to_constants_v2_as_graph(
        fn, lower_control_flow=False, aggressive_inlining=True
    )
    wanted = [stat_op_name("mean", i) for i in range(len(plan.numeric))]
    wanted += [stat_op_name("std", i) for i in range(len(plan.numeric))]
    wanted += [stat_op_name("boundaries", i) for i in range(len(plan.bucketize))]
    by_stat = {}
    for node in graph_def.node:
        base = node.name.rsplit("/", 1)[-1]
        if base in wanted and node.op == "Identity":
            by_stat.setdefault(base, node.name)
    missing = sorted(set(wanted) - set(by_stat))
    if missing:
        raise RuntimeError(
            f"transform graph {transform_fn_dir} lacks the statistics {missing}: "
            "was it written by mlops.modeling.preprocessing?"
        )
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        values = session.run({k: f"{v}:0" for k, v in by_stat.items()})
    return values


def preprocessing_spec(plan: FeaturePlan, tft_output, stats: dict, output_key: str) -> dict:
    """The tflite_preprocessing.json document."""
    import numpy as np

    numeric = []
    for i, name in enumerate(plan.numeric):
        numeric.append(
            {
                "name": name,
                "mean": float(np.float32(stats[stat_op_name("mean", i)])),
                "std": float(np.float32(stats[stat_op_name("std", i)])),
                "z_output": plan.z_name(name),
                "missing_output": plan.missing_name(name),
            }
        )
    buckets = []
    for i, (name, n) in enumerate(plan.bucketize):
        b = np.asarray(stats[stat_op_name("boundaries", i)], dtype=np.float32).reshape(-1)
        buckets.append(
            {"name": name, "num_buckets": n, "boundaries": [float(v) for v in b], "output": plan.bucket_name(name)}
        )
    categorical = []
    for name in plan.categorical:
        vocab = [
            v.decode("utf-8") if isinstance(v, bytes) else str(v)
            for v in tft_output.vocabulary_by_name(plan.vocab_name(name))
        ]
        categorical.append(
            {"name": name, "vocabulary": vocab, "num_oov_buckets": plan.oov_buckets, "output": plan.id_name(name)}
        )
    crosses = [
        {"features": list(c), "hash_buckets": plan.cross_hash_buckets, "output": plan.cross_name(c)}
        for c in plan.crosses
    ]
    return {
        "format_version": FORMAT_VERSION,
        "signature": TFLITE_SIGNATURE,
        "output_key": output_key,
        "raw_features": [{"name": f.name, "dtype": f.dtype} for f in plan.raw],
        "model_inputs": {**{n: "float32" for n in plan.dense_features()}, **{n: "int64" for n in plan.id_features()}},
        "numeric": numeric,
        "bucketize": buckets,
        "categorical": categorical,
        "crosses": crosses,
        "z_clip": Z_CLIP,
        "missing_token": MISSING_TOKEN,
        "cross_separator": CROSS_SEPARATOR,
        "rules": {
            "numeric": "missing = isnan(x); filled = mean if missing else x; "
            "<name>_z = clip((filled - mean) / std, -z_clip, z_clip) in float32; "
            "<name>_missing = float(missing)",
            "bucketize": "searchsorted(boundaries, filled, side='right') (value == boundary goes up)",
            "categorical": "v = missing_token if v == '' else v; id = index in vocabulary, else "
            "len(vocabulary) + fingerprint64(utf8(v)) % num_oov_buckets",
            "crosses": "fingerprint64(utf8(cross_separator.join(raw values))) % hash_buckets",
            "hash": "FarmHash Fingerprint64 (farmhashna::Hash64) = tf.strings.to_hash_bucket_fast",
        },
    }


def convert_tflite(model, plan: FeaturePlan, output_key: str) -> bytes:
    """The core model as TFLite builtin ops only (no Flex), signature `serving_default`:
    transformed inputs (by name) -> {output_key: [batch]}."""
    import tensorflow as tf

    from mlops.modeling.model import input_signature

    @tf.function(input_signature=[input_signature(plan)])
    def core(features):
        return {output_key: tf.reshape(model(features, training=False), [-1])}

    concrete = core.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()
