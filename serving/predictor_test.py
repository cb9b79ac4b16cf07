"""The shared request checker, both runtimes on the same model, the Feast enrichment with its
defaults, and hot reload of the model handle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from serving.predictor import CATEGORICAL, NUMERIC, InputSpec, PredictionInputError, as_numeric, as_text, validate_rows

INPUTS = [InputSpec("hour", NUMERIC), InputSpec("carrier", CATEGORICAL)]


# ---- request checking (pure; pipeline env) ----------------------------------------------------
def test_validate_rows_encodes_and_counts():
    cols, n = validate_rows(INPUTS, {"hour": [7, None, "8.5"], "carrier": ["UA", None, b"DL"]})
    assert n == 3
    assert cols["hour"].dtype == np.float32 and np.isnan(cols["hour"][1]) and cols["hour"][2] == 8.5
    assert list(cols["carrier"]) == ["UA", "", "DL"]
    cols, n = validate_rows(INPUTS, {"hour": np.array([[7.0]]), "carrier": "UA"})  # [n,1] and scalar
    assert n == 1 and cols["hour"].shape == (1,)


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"hour": [1]}, "missing input(s) ['carrier']"),
        ({"hour": [1], "carrier": ["x"], "colour": ["red"]}, "unknown input(s) ['colour']"),
        ({"hour": ["seven"], "carrier": ["x"]}, "input 'hour': expected numbers, got 'seven' at row 0"),
        ({"hour": [True], "carrier": ["x"]}, "input 'hour': expected numbers"),
        ({"hour": [1], "carrier": [{"a": 1}]}, "input 'carrier': expected strings, got dict"),
        ({"hour": [1, 2], "carrier": ["x"]}, "input 'carrier': 1 rows, but 'hour' has 2"),
        ({"hour": [[1, 2]], "carrier": [["x", "y"]]}, "expected shape [n] or [n, 1], got [1, 2]"),
        ({"hour": [], "carrier": []}, "empty batch"),
        ({"hour": [1] * 5, "carrier": ["x"] * 5}, "batch of 5 rows exceeds the limit of 4"),
    ],
)
def test_validate_rows_names_the_problem(rows, message):
    with pytest.raises(PredictionInputError) as e:
        validate_rows(INPUTS, rows, max_rows=4)
    assert message in str(e.value)


def test_numeric_inputs_checked_together_as_one_by_one():
    """Several numeric inputs (what tensor_column gives: 1-D int or float arrays) are encoded and
    checked together; same float32 values as column by column, and a bad value still names its
    input and row."""
    inputs = [InputSpec("a", NUMERIC), InputSpec("b", NUMERIC), InputSpec("c", NUMERIC, nullable=False)]
    inputs.append(InputSpec("carrier", CATEGORICAL))
    rows = {
        "a": np.array([2**40 + 1, -3, 7]),
        "b": np.array([np.nan, 1e-3, 3.4e38]),
        "c": np.array([0.1, 2.5, -1e30]),
        "carrier": ["UA", "DL", "AA"],
    }
    cols, n = validate_rows(inputs, rows)
    assert n == 3
    for name in "abc":
        assert cols[name].dtype == np.float32
        np.testing.assert_array_equal(cols[name], as_numeric(name, rows[name]))
    for bad, message in (
        ({"b": np.array([1.0, np.inf, 2.0])}, "input 'b': inf at row 1 is not a finite number"),
        ({"b": np.array([1.0, 1e39, 2.0])}, "input 'b': 1e+39 at row 1 is not a finite number FP32 holds"),
        ({"c": np.array([1.0, 2.0, np.nan])}, "input 'c': missing value (null or NaN) at row 2"),
        ({"b": np.array([1.0, 2.0])}, "input 'b': 2 rows, but 'a' has 3"),
        ({"c": np.array([True, False, True])}, "input 'c': expected numbers, got booleans"),
    ):
        with pytest.raises(PredictionInputError) as e:
            validate_rows(inputs, {**rows, **bad})
        assert message in str(e.value)


def test_as_text_matches_training_encoding():
    # the training data encodes an integer month 7 as "7", a missing value as ""
    assert list(as_text("m", [7, 7.0, np.nan, None, "x", np.int64(3)])) == ["7", "7", "", "", "x", "3"]
    with pytest.raises(PredictionInputError, match="not valid UTF-8"):
        as_text("m", [b"\xff"])


# ---- runtimes, enrichment, reload (serving env) ---------------------------------------------
def _rows(n: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "hour": rng.uniform(5, 23, n).astype(np.float32),
        "distance": rng.uniform(100, 2000, n).astype(np.float32),
        "temp": np.where(np.arange(n) % 2 == 0, np.nan, 40.0).astype(np.float32),
        "seats": np.full(n, 100.0, np.float32),
        "carrier": np.array(["UA", "DL", "B6"] * n, dtype=object)[:n],
        "origin": np.array(["EWR", "JFK"] * n, dtype=object)[:n],
        "dest": np.array(["ATL"] * n, dtype=object),
        "month": np.array(["1"] * n, dtype=object),
    }


@pytest.mark.serving_env
def test_savedmodel_predictor_on_tiny_model(tiny_model_dirs):
    from serving.predictor import load_predictor
    from tests.support.serving_models import tiny_probability

    p = load_predictor(tiny_model_dirs[2])
    assert {s.name for s in p.inputs} == set(_rows())
    rows = _rows(5)
    np.testing.assert_allclose(p.predict(rows), tiny_probability(rows, bias=1.0), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="no model.tflite"):
        load_predictor(tiny_model_dirs[2], "tflite")


@pytest.mark.serving_env
@pytest.mark.integration
def test_both_runtimes_agree_on_the_real_model(real_model_dir):
    import os

    from mlops.modeling.predictions import raw_features_of, read_raw_rows
    from serving.predictor import load_predictor

    rows = read_raw_rows(
        os.path.join(os.path.dirname(real_model_dir), "examples"), "test", raw_features_of(real_model_dir), limit=300
    )
    saved, lite = load_predictor(real_model_dir, "savedmodel"), load_predictor(real_model_dir, "tflite")
    assert saved.inputs == lite.inputs
    a, b = saved.predict(rows), lite.predict(rows)
    assert a.shape == (len(rows["hour"]),) and np.all((a > 0) & (a < 1))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.serving_env
def test_enricher_without_feature_store_requires_every_feature(tiny_config, tiny_model_dirs):
    from serving.enrichment import FeatureEnricher
    from serving.predictor import load_predictor

    enricher = FeatureEnricher(tiny_config, load_predictor(tiny_model_dirs[1]).inputs)
    # optional: only what identifies the row (logged beside the inputs), no store features
    assert not enricher.lookup and [s.name for s in enricher.schema.optional] == ["tailnum", "time_hour"]
    rows = _rows(2)
    cols, n = enricher.complete(rows)
    assert n == 2 and set(cols) == set(rows)
    with pytest.raises(PredictionInputError, match=r"missing input\(s\) \['temp'\]"):
        enricher.complete({k: v for k, v in rows.items() if k != "temp"})


@pytest.mark.serving_env
@pytest.mark.integration
def test_enricher_fetches_store_features_with_defaults(feast_online_root, real_model_dir):
    import pandas as pd

    from mlops.config import load_config
    from mlops.datasets.repository import DatasetRepository
    from mlops.features.store import read_sources
    from serving.enrichment import FeatureEnricher
    from serving.predictor import load_predictor
    from tests.support.fixtures import FLIGHTS_CONFIG

    root, project = feast_online_root
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "features.project": project})
    predictor = load_predictor(real_model_dir)
    enricher = FeatureEnricher(config, predictor.inputs)
    required = {s.name for s in enricher.schema.required}
    assert {"origin", "dest", "carrier", "tailnum", "hour", "month", "distance"} <= required
    assert "temp" not in required and "time_hour" in {s.name for s in enricher.schema.optional}

    repo = DatasetRepository(config.artifact_root)
    flights = repo.load(repo.resolve(config.dataset.name, "latest"))
    planes = pd.read_parquet(read_sources(config)["planes"]["path"]).set_index("tailnum")
    f = flights[
        (flights["time_hour"] >= pd.Timestamp("2013-02-10", tz="UTC")) & flights["tailnum"].isin(planes.index)
    ].iloc[0]
    request = {
        "origin": [f.origin, f.origin],
        "dest": [f.dest, f.dest],
        "carrier": [f.carrier, f.carrier],
        "tailnum": [f.tailnum, "N0NE-UNKNOWN"],
        "hour": [f.hour, f.hour],
        "month": [f.month, f.month],
        "distance": [f.distance, f.distance],
        "time_hour": [f.time_hour.isoformat()] * 2,
    }
    before = enricher.rows_without_features
    cols, n = enricher.complete(request)
    assert n == 2
    assert cols["seats"][0] == planes.loc[f.tailnum, "seats"]
    assert np.isnan(cols["seats"][1]) and np.isnan(cols["plane_year"][1])  # documented default: missing
    assert not np.isnan(cols["temp"]).any() and cols["temp"][0] == cols["temp"][1]  # weather: same origin/day
    assert enricher.rows_without_features == before + 1
    p = predictor.predict(cols)
    assert p.shape == (2,) and np.all(np.isfinite(p))
    # a caller-provided store feature wins over the lookup
    cols2, _ = enricher.complete({**request, "seats": [1.0, 2.0]})
    assert list(cols2["seats"]) == [1.0, 2.0]
    with pytest.raises(PredictionInputError, match="input 'time_hour': 'not a time' at row 0 is not a time"):
        enricher.complete({**request, "time_hour": ["not a time", "x"]})


@pytest.mark.serving_env
def test_handle_hot_reload_swaps_without_failing_requests(tiny_config):
    from mlops.registry.store import ModelRegistry
    from serving.handle import ModelHandle
    from tests.support.serving_models import tiny_probability

    handle = ModelHandle.from_config(tiny_config, "flights@production")
    assert handle.current.version == "1"
    rows = _rows(2)
    failures, versions, stop = [], set(), threading.Event()

    def hammer():
        while not stop.is_set():
            served = handle.current
            try:
                cols, _ = served.enricher.complete(rows)
                p = served.predictor.predict(cols)
                bias = 0.0 if served.version == "1" else 1.0
                np.testing.assert_allclose(p, tiny_probability(rows, bias), rtol=1e-5)
                versions.add(served.version)
            except Exception as e:  # noqa: BLE001 - any failure is the test's failure
                failures.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    assert handle.reload_if_changed() is False  # nothing moved
    ModelRegistry(tiny_config.artifact_root).promote("flights", 2, "production", reason="test")
    assert handle.reload_if_changed() is True
    assert handle.current.version == "2"
    import time

    deadline = time.monotonic() + 10
    while "2" not in versions and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not failures and versions == {"1", "2"}

    # a version that fails to load leaves the old one serving
    ModelRegistry(tiny_config.artifact_root).promote("flights", 1, "production", reason="test")
    import shutil

    shutil.rmtree(ModelRegistry(tiny_config.artifact_root).get("flights", 1).serving_model_uri)
    assert handle.reload_if_changed() is False
    assert handle.current.version == "2" and handle.reload_failures == 1
