"""Request bodies of the online protocols -> named request columns; pure (NumPy + orjson).

    columns_from_tensors(tensors)   Open Inference Protocol v2 tensors (REST JSON or gRPC),
                                    one tensor per request field, shape [n] or [n, 1]
    columns_from_v1(body)           KServe v1: {"instances": [{field: value, ...}, ...]}
    parse_v2_json(body_bytes)       the v2 REST body, checked, without pydantic

    parse_v2_binary(body, json_length)  the same with the binary tensor extension (JSON header of
                                    `json_length` bytes, then each input's `binary_data_size` bytes)

Each error is a PredictionInputError (-> HTTP 400 / gRPC INVALID_ARGUMENT) whose message names the
part of the request that is wrong: the tensor or field, the row, the expected form. Here, a tensor's
data must be what its datatype says: strings (or null) in BYTES, numbers (or null) the datatype
holds in the numeric ones. What the model takes (numbers vs strings per input, missing values,
FP32 range, row counts) is checked afterwards by the shared `validate_rows` against the model's
request schema.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from serving.predictor import PredictionInputError

# v2 datatype -> NumPy dtype of its raw (binary) encoding. BOOL is refused: no model input is a
# boolean, and a boolean sent for a number is a client bug, not a 0/1.
NUMERIC_DATATYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
DATATYPES = (*NUMERIC_DATATYPES, "BYTES")
_SCALARS = (str, int, float, type(None))
_SCALAR_TYPES = frozenset((str, int, float, type(None), bytes, bool))  # exact types: a set lookup per value


class Tensor(NamedTuple):
    """One v2 input tensor: `data` is a (possibly nested) list, or None when `raw` bytes hold it
    (gRPC raw_input_contents, REST binary extension)."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any
    raw: bytes | None = None


def new_request_id() -> str:
    return uuid.uuid4().hex


def row_ids(request_id: str, n: int) -> list[str]:
    """One id per predicted row (the payload log's key): the request id itself for a single row,
    `<id>-<i>` within a batch."""
    return [request_id] if n == 1 else [f"{request_id}-{i}" for i in range(n)]


def _rows_of(name: str, shape: Sequence[int]) -> int:
    if type(shape) is list and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0:
        return shape[0]  # the common case, checked in a few type tests (this runs per input per request)
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise PredictionInputError(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    dims = list(shape)
    if len(dims) == 2 and dims[1] == 1:
        dims = dims[:1]
    if len(dims) != 1 or dims[0] < 0:
        raise PredictionInputError(f"input {name!r}: shape {list(shape)}: expected [n] or [n, 1] (one value per row)")
    return dims[0]


def _flat(name: str, data: Any, depth: int) -> list:
    """Row-major data, nested up to `depth` levels (v2 JSON allows both flat and nested)."""
    if not isinstance(data, list):
        raise PredictionInputError(f"input {name!r}: data must be a list, got {type(data).__name__}")
    if depth == 2 and data and isinstance(data[0], list):
        out = []
        for i, item in enumerate(data):
            if not isinstance(item, list):
                raise PredictionInputError(f"input {name!r}: data[{i}] is not a list like data[0]")
            out.extend(item)
        data = out
    for i, v in enumerate(data):
        if type(v) not in _SCALAR_TYPES and not isinstance(v, (*_SCALARS, bytes)):
            raise PredictionInputError(
                f"input {name!r}: data[{i}] is a {type(v).__name__}; expected a number, a string or null"
            )
    return data


def _raw_bytes_tensor(name: str, raw: bytes) -> list[bytes]:
    """The v2 binary BYTES layout: each element is a 4-byte little-endian length + its bytes."""
    out, i, size = [], 0, len(raw)
    while i < size:
        if i + 4 > size:
            raise PredictionInputError(f"input {name!r}: raw BYTES contents end inside a length prefix")
        (length,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + length > size:
            raise PredictionInputError(f"input {name!r}: raw BYTES element of {length} bytes overruns the contents")
        out.append(raw[i : i + length])
        i += length
    return out


def _datatype_error(name: str, datatype: str, i: int, value) -> PredictionInputError:
    if datatype == "BYTES":
        return PredictionInputError(
            f"input {name!r}: data[{i}] is {repr(value)[:40]}: a BYTES tensor holds strings "
            "(send a number in a numeric datatype)"
        )
    return PredictionInputError(f"input {name!r}: data[{i}] = {repr(value)[:40]} is outside what {datatype} holds")


def _check_datatype(name: str, datatype: str, values: list, column: np.ndarray | None) -> None:
    """The values of a JSON / gRPC typed tensor agree with its datatype: no numbers in BYTES, no
    number beyond the numeric datatype's range (an INT8 of 300, an FP32 of 1e39, 1.5 in INT32).
    Null is a missing value in either (the schema check says where one is allowed)."""
    if datatype == "BYTES":
        for i, v in enumerate(values):
            if type(v) is not str and type(v) is not bytes and v is not None:
                raise _datatype_error(name, datatype, i, v)
        return
    dtype = np.dtype(NUMERIC_DATATYPES[datatype])
    if column is None:  # mixed values (nulls, text, huge integers): the numbers one by one
        for i, v in enumerate(values):
            if v is not None and type(v) is not int and type(v) is not float:
                raise PredictionInputError(
                    f"input {name!r}: expected numbers, got {repr(v)[:40]} at data[{i}]: "
                    f"a {datatype} tensor holds numbers (null for a missing value)"
                )
        index = [i for i, v in enumerate(values) if v is not None]
        try:
            column = np.array([float(values[i]) for i in index], dtype=np.float64)
        except OverflowError:  # an integer beyond float64
            i = next(i for i in index if abs(values[i]) > 1e308)
            raise _datatype_error(name, datatype, i, values[i]) from None
    else:
        index = None
    if dtype.kind == "f":
        bad = np.abs(column) > np.finfo(dtype).max
    else:
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            bad = (column < info.min) | (column > info.max) | (np.floor(column) != column)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        i = index[i] if index is not None else i
        raise _datatype_error(name, datatype, i, values[i])


def tensor_column(t: Tensor) -> np.ndarray:
    """One request column (1-D) from a v2 tensor; shape, datatype and data must agree."""
    name = t.name
    datatype = t.datatype.upper() if isinstance(t.datatype, str) else t.datatype
    if datatype not in DATATYPES:
        raise PredictionInputError(f"input {name!r}: datatype {t.datatype!r} is not one of {list(DATATYPES)}")
    n = _rows_of(name, t.shape)
    if t.raw is not None:
        if datatype == "BYTES":
            values = _raw_bytes_tensor(name, t.raw)
        else:
            dtype = np.dtype(NUMERIC_DATATYPES[datatype])
            if len(t.raw) % dtype.itemsize:
                raise PredictionInputError(
                    f"input {name!r}: {len(t.raw)} raw bytes are not a whole number of {datatype} values"
                )
            values = np.frombuffer(t.raw, dtype=dtype)
    else:
        values = _flat(name, t.data, len(t.shape))
    if len(values) != n:
        raise PredictionInputError(
            f"input {name!r}: shape {list(t.shape)} says {n} rows, data has {len(values)} values"
        )
    if isinstance(values, np.ndarray):
        return values
    if datatype == "BYTES":
        _check_datatype(name, datatype, values, None)
        column = np.empty(n, dtype=object)
        column[:] = values
        return column
    column = np.asarray(values)
    # A homogeneous list of numbers converts in C; anything else (strings, nulls) goes to the
    # per-value checker in validate_rows, which names the offending row.
    if column.dtype.kind not in "iuf":
        _check_datatype(name, datatype, values, None)
        column = np.empty(n, dtype=object)
        column[:] = values
    elif (
        n <= _FEW
        and (limit := _FLOAT_MAX.get(datatype)) is not None
        and all(-limit <= v <= limit or v != v for v in values)
    ):
        pass  # a few numbers the float datatype holds (NaN: missing), checked without NumPy's per-call cost
    else:
        _check_datatype(name, datatype, values, column)
    return column


# Up to this many values a tensor's range check runs in Python (what a 1-row request has).
_FEW = 16
_FLOAT_MAX = {k: float(np.finfo(NUMERIC_DATATYPES[k]).max) for k in ("FP16", "FP32", "FP64")}


def columns_from_tensors(
    tensors: Iterable[Tensor], *, max_rows: int | None = None, datatypes: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Named columns; `datatypes`, when given, receives each input's datatype (for validate_rows)."""
    cols: dict[str, np.ndarray] = {}
    for t in tensors:
        if not isinstance(t.name, str) or not t.name:
            raise PredictionInputError(f"an input has no name (got {t.name!r})")
        if t.name in cols:
            raise PredictionInputError(f"input {t.name!r} is given more than once")
        col = tensor_column(t)
        if max_rows is not None and len(col) > max_rows:
            raise PredictionInputError(f"input {t.name!r}: batch of {len(col)} rows exceeds the limit of {max_rows}")
        cols[t.name] = col
        if datatypes is not None:
            datatypes[t.name] = t.datatype.upper()
    if not cols:
        raise PredictionInputError("the request has no inputs")
    return cols


def columns_from_v1(body: Any, *, max_rows: int | None = None) -> dict[str, list]:
    """{"instances": [{field: value}, ...]} -> columns; a field absent from a row is null there."""
    if not isinstance(body, dict) or "instances" not in body:
        raise PredictionInputError('a v1 request is a JSON object {"instances": [{field: value, ...}, ...]}')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise PredictionInputError(f"'instances' must be a list of objects, got {type(instances).__name__}")
    if not instances:
        raise PredictionInputError("empty batch: 'instances' is empty")
    if max_rows is not None and len(instances) > max_rows:
        raise PredictionInputError(f"batch of {len(instances)} rows exceeds the limit of {max_rows}")
    cols: dict[str, list] = {}
    n = len(instances)
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise PredictionInputError(f"instances[{i}] must be an object {{field: value}}, got {type(row).__name__}")
        for key, value in row.items():
            if not isinstance(value, _SCALARS):
                raise PredictionInputError(
                    f"instances[{i}].{key}: expected a number, a string or null, got {type(value).__name__}"
                )
            col = cols.get(key)
            if col is None:
                col = cols[key] = [None] * n
            col[i] = value
    return cols


# ---- the v2 REST body ----------------------------------------------------------------------------
class V2Request(NamedTuple):
    id: str | None
    tensors: list[Tensor]
    parameters: dict | None
    outputs: list[dict] | None  # requested outputs: [{"name": ..., "parameters": {...}}]


def _check_parameters(where: str, value: Any) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise PredictionInputError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _tensor_error(i: int, item: dict):
    name = item.get("name")
    label = f"input {name!r}" if isinstance(name, str) and name else f"inputs[{i}]"
    for key, kind in (("name", str), ("datatype", str), ("shape", list), ("data", list)):
        if not isinstance(item.get(key), kind):
            raise PredictionInputError(f"{label}: '{key}' must be a {kind.__name__}, got {item.get(key)!r:.60}")
    _check_parameters(f"{label}: 'parameters'", item.get("parameters"))


def parse_v2_json(body: bytes) -> V2Request:
    """The v2 REST inference request: structure checked here, values by the model's schema."""
    return _parse_v2(body, None)


def parse_v2_binary(body: bytes, json_length: Any) -> V2Request:
    """A v2 REST request in the binary tensor extension: `json_length` (the
    Inference-Header-Content-Length header) bytes of JSON, then the raw contents of each input that
    has `parameters.binary_data_size` instead of `data`, in order, and nothing else."""
    try:
        length = int(json_length)
    except (TypeError, ValueError):
        raise PredictionInputError(f"header {INFERENCE_HEADER!r} must be an integer, got {json_length!r:.40}") from None
    if not 0 < length <= len(body):
        raise PredictionInputError(f"header {INFERENCE_HEADER!r} is {length}, but the body has {len(body)} bytes")
    return _parse_v2(body, length)


INFERENCE_HEADER = "inference-header-content-length"


def _binary_size(label: str, parameters: Any) -> int:
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if type(size) is not int or size < 0:
        raise PredictionInputError(
            f"{label}: has no 'data', and 'parameters.binary_data_size' is "
            f"{repr(size)[:40]}, not a byte count (a non-negative integer)"
        )
    return size


def _parse_v2(body: bytes, json_length: int | None) -> V2Request:
    import orjson

    try:
        doc = orjson.loads(body if json_length is None else body[:json_length])
    except orjson.JSONDecodeError as e:
        raise PredictionInputError(f"malformed JSON body: {e}") from None
    if not isinstance(doc, dict):
        raise PredictionInputError(f"the body must be a JSON object, got {type(doc).__name__}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise PredictionInputError(f"'id' must be a string, got {type(request_id).__name__}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise PredictionInputError("'inputs' must be a list of tensors {name, datatype, shape, data}")
    tensors = []
    offset = json_length
    last_binary = None
    for i, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise PredictionInputError(f"inputs[{i}] must be an object {{name, datatype, shape, data}}")
        name, datatype, shape, data = item.get("name"), item.get("datatype"), item.get("shape"), item.get("data")
        parameters = item.get("parameters")
        raw = None
        if offset is not None and "data" not in item:  # binary extension: the contents follow the JSON
            _tensor_error(i, {**item, "data": []})
            label = f"input {name!r}"
            size = _binary_size(label, parameters)
            if offset + size > len(body):
                raise PredictionInputError(
                    f"{label}: binary_data_size {size} overruns the body: "
                    f"{len(body) - offset} bytes left after the inputs before it"
                )
            raw, data, offset, last_binary = body[offset : offset + size], None, offset + size, name
        elif not (
            type(name) is str
            and type(datatype) is str
            and type(shape) is list
            and type(data) is list
            and (parameters is None or type(parameters) is dict)
        ):
            _tensor_error(i, item)
        tensors.append(Tensor(name, datatype, shape, data, raw))
    if offset is not None and offset != len(body):
        after = f"after input {last_binary!r}'s binary data" if last_binary is not None else "after the JSON header"
        raise PredictionInputError(
            f"{len(body) - offset} trailing bytes {after}: the binary_data_size of the inputs must add up to the body"
        )
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise PredictionInputError("'outputs' must be a list of objects {name, parameters}")
        for o in outputs:
            _check_parameters(f"output {o['name']!r}: 'parameters'", o.get("parameters"))
    return V2Request(request_id, tensors, _check_parameters("'parameters'", doc.get("parameters")), outputs)
