"""The KServe model in process (no server): KServe's own Model.__call__ drives preprocess ->
predict -> postprocess on the tiny registry, and KServe's DataPlane answers readiness."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.serving_env

ROWS = {
    "hour": [7.0, 22.0, 5.0],
    "distance": [500.0, 2000.0, 100.0],
    "temp": [None, 50.0, 30.0],
    "seats": [100.0, 180.0, 50.0],
    "carrier": ["UA", "DL", "UA"],
    "origin": ["EWR", "JFK", "LGA"],
    "dest": ["ATL", "LAX", "BOS"],
    "month": ["1", "7", "12"],
}


def expected(bias: float = 0.0) -> np.ndarray:
    from tests.support.serving_models import tiny_probability

    rows = {
        k: np.array([np.nan if v is None else v for v in vs], dtype=object if isinstance(vs[0], str) else float)
        for k, vs in ROWS.items()
    }
    return tiny_probability(rows, bias)


def v2_request(request_id: str | None = "req-1", rows: dict = ROWS):
    from kserve import InferInput, InferRequest

    inputs = [
        InferInput(k, [len(v)], "BYTES" if isinstance(v[0], str) else "FP32", data=list(v)) for k, v in rows.items()
    ]
    return InferRequest("flights", inputs, request_id=request_id)


@pytest.fixture
def loaded(tiny_config):
    from serving.model import RegistryModel

    model = RegistryModel(tiny_config, "flights@production", watch=False)
    model.load()
    yield model
    model.stop()


def test_v2_v1_and_the_payload_log(loaded, tiny_config):
    from kserve.protocol.rest.v2_datamodels import InferenceResponse

    from serving.payload_log import payload_log_root, read_payload_logs

    response, _ = asyncio.run(loaded(v2_request("req-1")))
    assert (response.id, response.model_name, response.model_version) == ("req-1", "flights", "1")
    out = response.outputs[0]
    assert (out.name, out.datatype, out.shape) == ("probability", "FP32", [3])
    np.testing.assert_allclose(out.data, expected(), rtol=1e-6)

    # kserve 0.21: the response model needs a string id, so a request without one gets one
    response, _ = asyncio.run(loaded(v2_request(None)))
    assert len(response.id) == 32
    InferenceResponse.model_validate(response.to_rest()[0])

    v1, _ = asyncio.run(loaded({"instances": [{k: v[i] for k, v in ROWS.items()} for i in range(3)]}))
    np.testing.assert_allclose(v1["predictions"], expected(), rtol=1e-6)

    loaded.payload_logger.flush()
    logged = read_payload_logs(payload_log_root(tiny_config), "flights")
    assert len(logged) == 9 and set(logged["version"]) == {"1"} and set(logged["source"]) == {"online"}
    first = logged[logged["request_id"].str.startswith("req-1")].sort_values("request_id")
    assert list(first["request_id"]) == ["req-1-0", "req-1-1", "req-1-2"]
    np.testing.assert_allclose(first["prediction"], expected(), rtol=1e-6)
    assert list(first["carrier"]) == ROWS["carrier"] and np.isnan(first["temp"].iloc[0])


def test_each_stage_is_timed_in_kserves_histograms(loaded):
    """KServe's request_{preprocess,predict,postprocess}_seconds{model_name} count every request,
    with or without KServe's per-request latency log; a failed preprocess is timed too."""
    from prometheus_client import REGISTRY

    from mlops.errors import InvalidInput

    def counts():
        return [
            REGISTRY.get_sample_value(f"request_{stage}_seconds_count", {"model_name": "flights"}) or 0
            for stage in ("preprocess", "predict", "postprocess")
        ]

    before = counts()
    for latency_logging in (False, True, False):
        loaded.enable_latency_logging = latency_logging
        asyncio.run(loaded(v2_request("t")))
    assert [a - b for a, b in zip(counts(), before)] == [3, 3, 3]
    with pytest.raises(InvalidInput):
        asyncio.run(loaded(v2_request("t", {**ROWS, "colour": ["red"] * 3})))
    assert [a - b for a, b in zip(counts(), before)] == [4, 3, 3]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: {**r, "colour": ["red"] * 3}, "unknown input(s) ['colour']"),
        (lambda r: {k: v for k, v in r.items() if k != "temp"}, "missing input(s) ['temp']"),
        (lambda r: {**r, "hour": ["seven", "1", "2"]}, "input 'hour': expected numbers, got 'seven' at row 0"),
        (lambda r: {**r, "carrier": ["UA"]}, "but 'carrier' has 1"),
        (lambda r: {**r, "hour": [1e39, 1.0, 2.0]}, "input 'hour': data[0] = 1e+39 is outside what FP32 holds"),
        (lambda r: {**r, "hour": [None, 1.0, 2.0]}, "input 'hour': missing value (null or NaN) at row 0"),
    ],
)
def test_bad_v2_input_is_invalid_input_naming_the_field(loaded, mutate, message):
    from mlops.errors import InvalidInput  # PredictionInputError: 400 / INVALID_ARGUMENT by status_of

    with pytest.raises(InvalidInput) as e:
        asyncio.run(loaded(v2_request("x", mutate(dict(ROWS)))))
    assert message in str(e.value)


def test_unknown_requested_output_is_invalid(loaded):
    from kserve.protocol.infer_type import RequestedOutput

    from mlops.errors import InvalidInput

    request = v2_request()
    request.request_outputs = [RequestedOutput("logits")]
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) \['logits'\]"):
        asyncio.run(loaded(request))


def test_metadata_is_the_request_schema(loaded):
    inputs = loaded.get_input_types()
    assert {i["name"]: i["datatype"] for i in inputs} == {
        "carrier": "BYTES",
        "dest": "BYTES",
        "distance": "FP32",
        "hour": "FP32",
        "month": "BYTES",
        "origin": "BYTES",
        "seats": "FP32",
        "temp": "FP32",
        "tailnum": "BYTES",  # optional: what identifies the row, for the payload log
        "time_hour": "BYTES",
    }
    assert all(i["shape"] == [-1] for i in inputs)
    assert loaded.get_output_types() == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]


def test_not_ready_until_loaded_and_a_failed_load_is_reported(tiny_config):
    from kserve.errors import ModelNotReady

    from serving.model import RegistryModel
    from serving.server import ServingDataPlane

    model = RegistryModel(tiny_config, "flights@production", watch=False)
    dataplane = ServingDataPlane(model_registry=__import__("kserve").ModelRepository())
    dataplane.model_registry.update(model)
    assert not model.ready and asyncio.run(dataplane.ready()) is False
    with pytest.raises(ModelNotReady):
        model.get_input_types()
    model.start_loading().join(120)
    assert model.ready and asyncio.run(dataplane.ready()) is True
    metadata = asyncio.run(dataplane.model_metadata("flights"))
    assert metadata["versions"] == ["1"] and metadata["platform"] == "mlops-savedmodel"
    model.stop()

    errors = []
    broken = RegistryModel(tiny_config, "flights@nonexistent", watch=False)
    broken.start_loading(on_error=errors.append).join(60)
    assert not broken.ready and "nonexistent" in str(errors[0])
    with pytest.raises(ModelNotReady, match="Loading failed"):  # KServe's DataPlane retries load()
        broken.load()


def test_a_request_during_a_background_load_is_not_ready(tiny_config):
    from kserve.errors import ModelNotReady

    from serving.model import RegistryModel

    model = RegistryModel(tiny_config, "flights@production", watch=False)
    with model._load_lock:  # as if the loader thread were busy loading
        model._loader = threading.Thread(target=lambda: None)
        with pytest.raises(ModelNotReady, match="still loading"):
            model.load()


@pytest.mark.integration
def test_auto_runtime_runs_tflite_for_small_batches_and_the_savedmodel_for_large(real_model_dir, tiny_model_dirs):
    import os

    from mlops.modeling.predictions import raw_features_of, read_raw_rows
    from serving.predictor import AutoPredictor, load_predictor

    assert load_predictor(tiny_model_dirs[1], "auto").runtime == "savedmodel"  # no TFLite files: no change
    auto = load_predictor(real_model_dir, "auto")
    assert isinstance(auto, AutoPredictor) and auto.inputs == auto.lite.inputs
    rows = read_raw_rows(
        os.path.join(os.path.dirname(real_model_dir), "examples"), "test", raw_features_of(real_model_dir), limit=300
    )
    n = len(rows["hour"])
    assert n > auto.small_rows
    small = {k: v[: auto.small_rows] for k, v in rows.items()}
    np.testing.assert_array_equal(auto.predict(small), auto.lite.predict(small))
    np.testing.assert_array_equal(auto.predict(rows), auto.saved.predict(rows))
    np.testing.assert_allclose(auto.predict(small), auto.saved.predict(small), atol=1e-5)


def test_threads_0_predicts_in_the_event_loop(tiny_config):
    from serving.model import RegistryModel

    model = RegistryModel(tiny_config, "flights@production", watch=False, threads=0)
    model.load()
    try:
        assert model.pool is None
        response, _ = asyncio.run(model(v2_request("inline")))
        np.testing.assert_allclose(response.outputs[0].data, expected(), rtol=1e-6)
    finally:
        model.stop()


def test_concurrent_large_batches_predict_in_the_pool_small_or_lone_ones_inline(loaded):
    from serving.predictor import SMALL_BATCH_ROWS

    served = loaded.handle.current
    predict, threads = served.predictor.predict, []
    repeat = SMALL_BATCH_ROWS // len(ROWS["hour"]) + 1
    large = {k: v * repeat for k, v in ROWS.items()}  # more than SMALL_BATCH_ROWS rows

    def recording_predict(columns):  # the real predictor; notes which thread ran it
        threads.append(threading.current_thread().name)
        return predict(columns)

    async def together(rows):
        return await asyncio.gather(*(loaded(v2_request(f"c{i}", rows)) for i in range(4)))

    served.predictor.predict = recording_predict
    try:
        asyncio.run(loaded(v2_request("alone", large)))
        assert threads == ["MainThread"]
        for response, _ in asyncio.run(together(ROWS)):  # small batches: the thread hop costs more than it saves
            np.testing.assert_allclose(response.outputs[0].data, expected(), rtol=1e-6)
        assert threads == ["MainThread"] * 5
        for response, _ in asyncio.run(together(large)):
            np.testing.assert_allclose(response.outputs[0].data, np.tile(expected(), repeat), rtol=1e-6)
        assert any(name.startswith("predict") for name in threads[5:])
        assert loaded.in_flight == 0
    finally:
        del served.predictor.predict


@pytest.mark.integration
def test_feature_store_is_built_at_load_and_kept_across_reloads(tmp_path, feast_online_root, real_model_dir):
    import shutil
    import time

    from mlops.config import load_config
    from mlops.registry.store import ModelRegistry
    from serving.handle import ModelHandle
    from tests.support.fixtures import FLIGHTS_CONFIG
    from tests.support.serving_models import register

    seeded, project = feast_online_root
    root = tmp_path / "artifacts"
    shutil.copytree(seeded, root, symlinks=True)
    for _ in range(2):
        register(root, "flights", real_model_dir)
    registry = ModelRegistry(str(root))
    registry.promote("flights", 1, "production", reason="test")
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root), "features.project": project})
    handle = ModelHandle.from_config(config, "flights@production")
    store = handle.current.enricher._store
    assert store is not None  # built while loading, not by the first request
    request = {
        "origin": ["JFK"],
        "dest": ["LAX"],
        "carrier": ["AA"],
        "tailnum": ["N0NE"],
        "hour": [7.0],
        "month": ["2"],
        "distance": [2475.0],
        "time_hour": ["2013-02-10T12:00:00+00:00"],
    }
    started = time.perf_counter()
    handle.current.enricher.complete(request)
    assert time.perf_counter() - started < 1.0
    assert handle.current.enricher.rows_without_features == 1  # the request's unknown tailnum; not the warm-up
    registry.promote("flights", 2, "production", reason="test")
    assert handle.reload_if_changed() and handle.current.version == "2"
    assert handle.current.enricher._store is store
