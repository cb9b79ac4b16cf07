"""mlops.modeling without a training run: the feature plan, FarmHash vs TensorFlow, the NumPy
preprocessor's rules, imports without TensorFlow, and the child-process protocol."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlops.config import load_config
from mlops.modeling import farmhash
from mlops.modeling.child import ChildError, run_child
from mlops.modeling.preprocessing import CROSS_SEPARATOR, MISSING_TOKEN, FeaturePlan
from mlops.modeling.tflite_predictor import NumpyPreprocessor
from tests.support.fixtures import FLIGHTS_CONFIG


def test_feature_plan_from_flights_config():
    plan = FeaturePlan.from_config(load_config(FLIGHTS_CONFIG))
    assert plan.categorical == ("month", "carrier", "origin", "dest")
    assert "hour" in plan.numeric and "distance" in plan.numeric
    assert plan.id_features() == [
        "month_id",
        "carrier_id",
        "origin_id",
        "dest_id",
        "distance_bucket",
        "hour_bucket",
        "origin_x_dest_cross",
        "carrier_x_origin_cross",
    ]
    assert plan.dense_features()[:2] == ["hour_z", "hour_missing"]
    assert plan.raw_dtypes()["is_delayed"] == "int64" and plan.raw_dtypes()["carrier"] == "string"
    assert "is_delayed" not in plan.raw_dtypes(with_label=False)


def test_feature_plan_rejects_multiclass(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"dataset.label.task": "multiclass_classification"})
    with pytest.raises(ValueError, match="multiclass"):
        FeaturePlan.from_config(cfg)


def test_modeling_modules_import_without_tensorflow():
    code = (
        "import sys, mlops.modeling.preprocessing, mlops.modeling.model, mlops.modeling.tflite_predictor, "
        "mlops.modeling.tflite_export, mlops.modeling.predictions; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


STRINGS = [
    "",
    "a",
    "ab",
    "abc",
    "DL",
    "JFK\x1fLAX",
    "naïve",
    "東京",
    "x" * 7,
    "y" * 8,
    "z" * 16,
    "w" * 17,
    "v" * 32,
    "u" * 33,
    "t" * 64,
    "s" * 65,
    "r" * 128,
    "q" * 129,
    "0123456789" * 23,
    MISSING_TOKEN,
]


@pytest.mark.integration
def test_fingerprint64_matches_tensorflow():
    code = textwrap.dedent("""
        import json, sys, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf
        strings = json.load(sys.stdin)
        print(json.dumps({str(n): tf.strings.to_hash_bucket_fast(strings, n).numpy().tolist()
                          for n in (2, 7, 500, 2**31 - 1, 2**63 - 1)}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(STRINGS), capture_output=True, text=True, check=True, timeout=300
    )
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    for n, buckets in expected.items():
        assert [farmhash.hash_bucket(s, int(n)) for s in STRINGS] == buckets, n


def _spec():
    return {
        "format_version": 1,
        "signature": "serving_default",
        "output_key": "probability",
        "raw_features": [
            {"name": "x", "dtype": "float32"},
            {"name": "c", "dtype": "string"},
            {"name": "d", "dtype": "string"},
        ],
        "model_inputs": {
            "x_z": "float32",
            "x_missing": "float32",
            "c_id": "int64",
            "x_bucket": "int64",
            "c_x_d_cross": "int64",
        },
        "numeric": [{"name": "x", "mean": 2.0, "std": 4.0, "z_output": "x_z", "missing_output": "x_missing"}],
        "bucketize": [{"name": "x", "num_buckets": 3, "boundaries": [1.0, 3.0], "output": "x_bucket"}],
        "categorical": [{"name": "c", "vocabulary": ["b", "a", MISSING_TOKEN], "num_oov_buckets": 2, "output": "c_id"}],
        "crosses": [{"features": ["c", "d"], "hash_buckets": 50, "output": "c_x_d_cross"}],
        "missing_token": MISSING_TOKEN,
        "cross_separator": CROSS_SEPARATOR,
        "z_clip": 10.0,
    }


def test_numpy_preprocessor_rules():
    pre = NumpyPreprocessor(_spec())
    out = pre(
        {
            "x": np.array([np.nan, 1.0, 3.0, 6.0, np.inf], np.float32),
            "c": np.array(["a", "", "zzz", b"b", "a"], dtype=object),
            "d": ["p", "q", "", "r", "p"],
        }
    )
    np.testing.assert_array_equal(out["x_missing"], [1, 0, 0, 0, 0])
    # NaN -> mean -> 0; infinite -> clipped to z_clip
    np.testing.assert_array_equal(out["x_z"], np.array([0.0, -0.25, 0.25, 1.0, 10.0], np.float32))
    np.testing.assert_array_equal(out["x_bucket"], [1, 1, 2, 2, 2])  # filled 2.0 -> 1; 1.0 == boundary goes up
    assert out["c_id"].tolist()[:2] == [1, 2]  # "" is the missing token, a vocabulary entry here
    assert out["c_id"][2] == 3 + farmhash.fingerprint64("zzz") % 2 and out["c_id"][3] == 0
    assert out["c_x_d_cross"].tolist() == [
        farmhash.hash_bucket(CROSS_SEPARATOR.join(p), 50)
        for p in [("a", "p"), ("", "q"), ("zzz", ""), ("b", "r"), ("a", "p")]
    ]
    one = pre({"x": 6.0, "c": "b", "d": "r"})  # scalars are one row
    assert one["c_x_d_cross"].tolist() == out["c_x_d_cross"][3:4].tolist()
    with pytest.raises(KeyError, match="'d'"):
        pre({"x": [1.0], "c": ["a"]})


# --- child protocol ---------------------------------------------------------------------------


def _fake_worker(tmp_path, body: str) -> dict:
    mod = tmp_path / "fake_worker.py"
    mod.write_text(textwrap.dedent(body))
    return {"PYTHONPATH": str(tmp_path)}


def test_child_result_is_trusted_after_a_crash_at_exit(tmp_path):
    env = _fake_worker(
        tmp_path,
        """
        import json, os, signal, sys
        request = json.load(open(sys.argv[1]))
        json.dump({"ok": True, "nonce": request["nonce"], "value": request["x"] * 2}, open(request["marker"], "w"))
        os.kill(os.getpid(), signal.SIGSEGV)  # what TFT does in interpreter teardown
    """,
    )
    result = run_child("fake_worker", {"x": 21}, what="fake", env=env, timeout=60)
    assert result["value"] == 42 and result["worker_exit_code"] == -11


def test_child_without_marker_fails_whatever_its_exit_status(tmp_path):
    env = _fake_worker(tmp_path, "import sys; sys.exit(0)\n")
    with pytest.raises(ChildError, match="without reporting a result"):
        run_child("fake_worker", {}, what="fake", env=env, timeout=60)


def test_child_failure_carries_the_worker_error(tmp_path):
    env = _fake_worker(
        tmp_path,
        """
        import sys
        from mlops.modeling.child import child_main
        def work(request):
            raise ValueError("column 'carrier' is broken")
        child_main(sys.argv[1:], work)
    """,
    )
    with pytest.raises(ChildError, match="column 'carrier' is broken"):
        run_child("fake_worker", {}, what="fake", env=env, timeout=60)


def test_child_marker_of_another_request_is_rejected(tmp_path):
    env = _fake_worker(
        tmp_path,
        """
        import json, sys
        request = json.load(open(sys.argv[1]))
        json.dump({"ok": True, "nonce": "stale"}, open(request["marker"], "w"))
    """,
    )
    with pytest.raises(ChildError, match="does not belong"):
        run_child("fake_worker", {}, what="fake", env=env, timeout=60)
