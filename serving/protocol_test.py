"""Request bodies -> request columns (serving.protocol): pure, so these run in the pipeline env,
which proves the protocol layer imports without KServe or TensorFlow."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from serving.predictor import PredictionInputError
from serving.protocol import Tensor, columns_from_tensors, columns_from_v1, parse_v2_json, row_ids


def test_v2_tensors_flat_nested_and_raw():
    cols = columns_from_tensors(
        [
            Tensor("hour", "FP32", [2], [7, 8.5]),
            Tensor("temp", "FP64", [2, 1], [[None], [3.0]]),  # nested [n, 1], a null
            Tensor("carrier", "BYTES", [2], ["UA", b"DL"]),
            Tensor("seats", "INT32", [2], None, raw=np.array([100, 200], np.int32).tobytes()),
            Tensor("dest", "BYTES", [2], None, raw=b"".join(struct.pack("<I", len(s)) + s for s in (b"ATL", b""))),
        ]
    )
    assert cols["hour"].dtype.kind == "f" and list(cols["hour"]) == [7.0, 8.5]
    assert cols["temp"].dtype == object and cols["temp"][0] is None  # the row checker makes it NaN
    assert list(cols["carrier"]) == ["UA", b"DL"] and list(cols["seats"]) == [100, 200]
    assert list(cols["dest"]) == [b"ATL", b""]


@pytest.mark.parametrize(
    "tensors, message",
    [
        ([], "the request has no inputs"),
        ([Tensor("hour", "FP32", [2], [1.0])], "input 'hour': shape [2] says 2 rows, data has 1 values"),
        ([Tensor("hour", "FP32", [1, 2], [1.0, 2.0])], "input 'hour': shape [1, 2]: expected [n] or [n, 1]"),
        ([Tensor("hour", "FP32", [-1], [])], "expected [n] or [n, 1]"),
        ([Tensor("hour", "FP32", ["1"], [1.0])], "input 'hour': shape must be a list of integers"),
        ([Tensor("hour", "BOOL", [1], [True])], "input 'hour': datatype 'BOOL' is not one of"),
        ([Tensor("hour", "FP32", [1], [{"a": 1}])], "input 'hour': data[0] is a dict"),
        ([Tensor("hour", "FP32", [2, 1], [[1.0], 2.0])], "input 'hour': data[1] is not a list"),
        ([Tensor("hour", "FP32", [1], "7")], "input 'hour': data must be a list"),
        (
            [Tensor("hour", "FP32", [1], [1.0]), Tensor("hour", "FP32", [1], [2.0])],
            "input 'hour' is given more than once",
        ),
        ([Tensor("", "FP32", [1], [1.0])], "an input has no name"),
        (
            [Tensor("seats", "FP32", [1], None, raw=b"\x00\x00\x00")],
            "3 raw bytes are not a whole number of FP32 values",
        ),
        ([Tensor("dest", "BYTES", [1], None, raw=b"\x05\x00\x00\x00ab")], "element of 5 bytes overruns"),
        ([Tensor("dest", "BYTES", [1], None, raw=b"\x05\x00")], "end inside a length prefix"),
        ([Tensor("hour", "FP32", [5], [1.0] * 5)], "batch of 5 rows exceeds the limit of 4"),
    ],
)
def test_v2_tensor_errors_name_the_input(tensors, message):
    with pytest.raises(PredictionInputError) as e:
        columns_from_tensors(tensors, max_rows=4)
    assert message in str(e.value)


def test_a_few_float_values_are_range_checked_like_many():
    """Small float tensors are range-checked in Python, large ones with NumPy: same answers."""
    for n in (1, 100):
        assert np.isnan(columns_from_tensors([Tensor("x", "FP32", [n], [float("nan")] * n)])["x"]).all()
        assert columns_from_tensors([Tensor("x", "FP16", [n], [65504.0] * n)])["x"].tolist() == [65504.0] * n
        for datatype, value in (("FP32", 1e39), ("FP32", float("-inf")), ("FP16", 70000), ("FP64", 10**400)):
            with pytest.raises(
                PredictionInputError, match=f"input 'x': data\\[{n - 1}\\] = .* is outside what {datatype} holds"
            ):
                columns_from_tensors([Tensor("x", datatype, [n], [1.0] * (n - 1) + [value])])


def test_v1_instances_to_columns():
    cols = columns_from_v1({"instances": [{"hour": 7, "carrier": "UA"}, {"hour": 8}]})
    assert cols == {"hour": [7, 8], "carrier": ["UA", None]}  # absent in a row = null there


@pytest.mark.parametrize(
    "body, message",
    [
        ([{"hour": 1}], "a v1 request is a JSON object"),
        ({"inputs": []}, "a v1 request is a JSON object"),
        ({"instances": {"hour": 1}}, "'instances' must be a list of objects, got dict"),
        ({"instances": []}, "empty batch"),
        ({"instances": [{"hour": 1}, 7]}, "instances[1] must be an object"),
        ({"instances": [{"hour": [1]}]}, "instances[0].hour: expected a number, a string or null, got list"),
        ({"instances": [{"hour": 1}] * 5}, "batch of 5 rows exceeds the limit of 4"),
    ],
)
def test_v1_errors_name_the_part(body, message):
    with pytest.raises(PredictionInputError) as e:
        columns_from_v1(body, max_rows=4)
    assert message in str(e.value)


def test_parse_v2_json():
    body = {
        "id": "r1",
        "parameters": {"p": 1},
        "outputs": [{"name": "probability"}],
        "inputs": [{"name": "hour", "datatype": "FP32", "shape": [1], "data": [7]}],
    }
    parsed = parse_v2_json(orjson.dumps(body))
    assert parsed.id == "r1" and parsed.tensors == [Tensor("hour", "FP32", [1], [7])]
    assert parsed.outputs == [{"name": "probability"}] and parsed.parameters == {"p": 1}
    assert parse_v2_json(b'{"inputs": []}').id is None


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"inputs": [', "malformed JSON body"),
        (b"\xff", "malformed JSON body"),
        (b"[]", "the body must be a JSON object, got list"),
        (b'{"id": 7, "inputs": []}', "'id' must be a string, got int"),
        (b'{"instances": []}', "'inputs' must be a list of tensors"),
        (b'{"inputs": [7]}', "inputs[0] must be an object"),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', "inputs[0]: 'name' must be a str"),
        (b'{"inputs": [{"name": "hour", "shape": [1], "data": [1]}]}', "input 'hour': 'datatype' must be a str"),
        (b'{"inputs": [{"name": "hour", "datatype": "FP32", "data": [1]}]}', "input 'hour': 'shape' must be a list"),
        (b'{"inputs": [{"name": "hour", "datatype": "FP32", "shape": [1], "data": 1}]}', "'data' must be a list"),
        (
            b'{"inputs": [{"name": "hour", "datatype": "FP32", "shape": [1], "data": [1], "parameters": 3}]}',
            "input 'hour': 'parameters' must be an object",
        ),
        (b'{"inputs": [], "outputs": [{"nom": "x"}]}', "'outputs' must be a list of objects"),
    ],
)
def test_parse_v2_json_errors(body, message):
    with pytest.raises(PredictionInputError) as e:
        parse_v2_json(body)
    assert message in str(e.value)


def test_row_ids_one_per_row():
    assert row_ids("r", 1) == ["r"] and row_ids("r", 3) == ["r-0", "r-1", "r-2"]
