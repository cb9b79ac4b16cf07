"""Batch (offline) inference: a dataset version or a parquet/csv file -> one predictions parquet.

    result = predict_batch(config, model="flights@production", input="flights@latest",
                           output="s3://bucket/predictions/flights-2013-02.parquet")

Input (`resolve_input`): a dataset repository version id (`flights-1a2b3c4d5e6f`), NAME@SELECTOR
with the repository's selectors (`flights@latest`, `flights@2013-02`, `flights@2013-01:2013-06`,
`flights@<version id>`), a bare dataset name (= NAME@latest), or a file: a parquet file, a
directory of parquet part files, or a csv file (`.csv`, `.csv.gz`, `.csv.zip`); any fsspec URI.

The hot loop is columnar: pyarrow reads `chunk_rows` rows at a time (only the columns needed),
Arrow columns become the model's raw encoding without per-row Python (`encode_column`, the same
encoding as `serving.predictor.validate_rows`), one model call predicts the chunk, and a
ParquetWriter appends it as one row group. Memory is a few chunks whatever the input size. The
stages run one after the other: on a 2-core machine a reader thread overlapping the model call
made the whole run ~40% slower (TensorFlow already uses every core; the reader only competed).

Output: one parquet file with the columns
    row_id          the input's id column (`serving.batch.id_column`) when it has it, else the
                    row's 0-based position in the input (over all its files, in order)
    prediction      float32, the model output (the probability for binary classification)
    model_name, model_version
    predicted_at    UTC timestamp (microseconds) at which the row's chunk was predicted
    <passthrough>   chosen input columns, unchanged (`serving.batch.passthrough_columns`)
It is written to a temporary file and published by one rename (local) or one PUT (object store)
only after the last chunk: a crash, a bad chunk or Ctrl-C leaves no partial output, a previous
output at the same URI stays whole until the new one replaces it, and a re-run replaces it
(idempotent). A JSON summary (rows, seconds, rows/s, model, input, per-stage seconds) is written
next to it, `<output without .parquet>.summary.json`, after the parquet.

Features the model needs but the input lacks: if they are feature-store features and the Feast
online store exists, each chunk is completed by `FeatureEnricher` in ONE online read keyed by the
input's entity columns and event time column (documented defaults for unknown entities, counted in
the summary). Otherwise the run fails before predicting anything, naming the missing columns. A
whole batch is never predicted on defaults: a run in which not one row got all its feature-store
values fails before its output is published.

Missing values follow the rule of where the rows come from. A file (parquet/csv URI) is taken as
requests are: the online server's rule (serving.enrichment's request schema), so a gap is allowed
only in what the feature store provides, never in the request's own fields (entity keys and
request-time features), and a gap there fails the run naming the column, nothing written. A
dataset version from the repository is taken as training took it: a gap in any column is imputed
as in training (the model was trained on that very data, sparse columns included), so batch can
always score the data the model was trained on.

The online store must answer: one lookup before the output is opened, and every chunk's read; a
store that is down (Redis refusing or timing out, the SQLite file unreadable) fails the run with
OnlineStoreUnavailable naming the store, nothing written. A batch is never predicted on defaults
because of an outage.

This module imports without TensorFlow, Feast or MLMD (they load with the model / on first use);
lineage is recorded by the batch_predict component (components/batch_predict/executor.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops.errors import InvalidInput, Unavailable
from serving.predictor import CATEGORICAL, NUMERIC, InputSpec, PredictionInputError, as_numeric, as_text, check_values

if TYPE_CHECKING:
    from serving.enrichment import FeatureEnricher
    from serving.handle import ServedModel

OUTPUT_COLUMNS = ("row_id", "prediction", "model_name", "model_version", "predicted_at")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2")
SOURCE = "batch"  # the payload log's `source`
_TIMESTAMP = pa.timestamp("us", tz="UTC")


class BatchInputError(InvalidInput):
    """The input or the options are wrong (unknown dataset, missing columns, no rows, a value of
    the wrong type): nothing is written."""


class OnlineStoreUnavailable(Unavailable):
    """The Feast online store a run needs does not answer (refused, timed out, unreadable): nothing
    is written; the same run may succeed later."""


# ---- input ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchInput:
    spec: str  # what the caller passed
    files: tuple[str, ...]  # data files, read in this order
    format: str  # "parquet" | "csv"
    dataset_versions: tuple = ()  # mlops.datasets.repository.DatasetVersion, when from the repository
    na_values: tuple[str, ...] = ("NA", "")  # csv null markers
    uri: str = ""  # a file input: the file or directory (absolute when local), for lineage


def _is_path(spec: str) -> bool:
    return (
        "://" in spec
        or "/" in spec
        or spec.startswith(".")
        or spec.lower().endswith(CSV_SUFFIXES + (".parquet", ".pq"))
    )


def resolve_input(config, spec: str) -> BatchInput:
    """A dataset version selector or a file URI -> the files to read (see the module doc)."""
    spec = (spec or "").strip()
    if not spec:
        raise BatchInputError(
            "no input: give a dataset version (NAME@latest, NAME@2013-02, a version id) or a parquet/csv URI"
        )
    na_values = tuple(config.dataset.source.na_values)
    if _is_path(spec):
        return _file_input(spec, na_values)
    from mlops.datasets.repository import DatasetError, DatasetRepository

    repo = DatasetRepository(config.artifact_root)
    name, at, selector = spec.partition("@")
    try:
        if at:
            versions = repo.resolve(name, selector or "latest")
        elif (version := repo.find(spec)) is not None:
            versions = [version]
        elif repo.versions(spec):
            versions = repo.resolve(spec, "latest")
        else:
            known = ", ".join(repo.names()) or "none"
            raise BatchInputError(
                f"input {spec!r}: not a dataset version id, a dataset NAME[@SELECTOR] (datasets "
                f"under {config.artifact_root}: {known}) nor a file path or URI"
            )
    except DatasetError as e:
        raise BatchInputError(f"input {spec!r}: {e}") from None
    return BatchInput(spec, tuple(v.data_uri for v in versions), "parquet", tuple(versions), na_values)


def _file_input(spec: str, na_values: tuple[str, ...]) -> BatchInput:
    from fsspec.implementations.local import LocalFileSystem

    from mlops import storage

    fs, path = storage.fs_and_path(spec)
    if not fs.exists(path):
        raise BatchInputError(f"input {spec}: no such file or directory")
    local = isinstance(fs, LocalFileSystem)
    uri = path if local else spec  # fsspec makes local paths absolute
    if fs.isdir(path):

        def visible(p: str) -> bool:  # skip in-progress `.tmp-*` files and `_SUCCESS`-style markers
            return not any(part.startswith((".", "_")) for part in p[len(path) :].split("/"))

        parts = sorted(p for p in fs.find(path) if p.endswith((".parquet", ".pq")) and visible(p))
        if not parts:
            raise BatchInputError(f"input {spec}: the directory holds no .parquet files")
        return BatchInput(
            spec, tuple(p if local else fs.unstrip_protocol(p) for p in parts), "parquet", na_values=na_values, uri=uri
        )
    return BatchInput(
        spec, (uri,), "csv" if path.lower().endswith(CSV_SUFFIXES) else "parquet", na_values=na_values, uri=uri
    )


# ---- reading -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _opened(uri: str, fmt: str):
    """A binary file object (csv: decompressed by suffix)."""
    from mlops import storage

    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb", compression="infer" if fmt == "csv" else None) as f:
        yield f


def _csv_reader(f, column_types: dict[str, pa.DataType], columns: list[str], na_values: Sequence[str]):
    from pyarrow import csv

    return csv.open_csv(
        f,
        read_options=csv.ReadOptions(block_size=16 << 20),
        convert_options=csv.ConvertOptions(
            column_types=column_types, include_columns=columns, null_values=list(na_values), strings_can_be_null=True
        ),
    )


def input_columns(inp: BatchInput) -> list[str]:
    """Column names of the input's first file (every file is checked when it is read)."""
    import pyarrow.parquet as pq

    try:
        if inp.format == "csv":
            return _csv_header(inp.files[0])
        with _opened(inp.files[0], inp.format) as f:
            return list(pq.ParquetFile(f).schema_arrow.names)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise BatchInputError(f"input {inp.files[0]}: cannot read it as {inp.format}: {e}") from None


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - have, batch.num_rows)
            pending.append(batch.slice(0, take))
            have += take
            batch = batch.slice(take)
            if have == rows:
                yield pa.Table.from_batches(pending)
                pending, have = [], 0
    if have:
        yield pa.Table.from_batches(pending)


def iter_chunks(
    inp: BatchInput,
    columns: list[str],
    chunk_rows: int,
    csv_types: dict[str, pa.DataType] | None = None,
    as_dictionary: Sequence[str] = (),
) -> Iterator[pa.Table]:
    """The input as tables of `chunk_rows` rows holding `columns`, file after file (a chunk never
    spans two files, so files may differ in physical types). Parquet string columns named in
    `as_dictionary` come as dictionary arrays, straight from the file's dictionary pages."""
    import pyarrow.parquet as pq

    for uri in inp.files:
        with _opened(uri, inp.format) as f:
            try:
                if inp.format == "csv":
                    _require(uri, _csv_header(uri), columns)
                    reader = _csv_reader(
                        f, {c: t for c, t in (csv_types or {}).items() if c in columns}, columns, inp.na_values
                    )
                    batches = iter(reader)
                else:
                    pf = pq.ParquetFile(f)
                    _require(uri, pf.schema_arrow.names, columns)
                    text = [c for c in as_dictionary if _is_text(pf.schema_arrow.field(c).type)]
                    if text:  # a constructor option, and only string columns may take it
                        pf = pq.ParquetFile(f, read_dictionary=text)
                    batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
                for table in _rechunk(batches, chunk_rows):
                    yield table.select(columns)  # the csv reader keeps the file's column order
            except pa.ArrowInvalid as e:
                message = str(e)
                if inp.format == "csv":  # Arrow numbers csv columns ("column #3"): name them
                    header = _csv_header(uri)
                    message = re.sub(
                        r"column #(\d+)",
                        lambda m: f"column {header[int(m[1])]!r}" if int(m[1]) < len(header) else m[0],  # noqa: B023
                        message,
                    )
                raise BatchInputError(f"input {uri}: {message}") from None


def _csv_header(uri: str) -> list[str]:
    import csv
    import io

    with _opened(uri, "csv") as f:
        line = io.TextIOWrapper(f, encoding="utf-8", newline="").readline()
    return next(csv.reader([line]), [])


def _require(uri: str, have: Sequence[str], columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in set(have)]
    if missing:
        raise BatchInputError(f"input {uri}: missing column(s) {missing}")


# ---- encoding: Arrow columns -> the model's raw features -----------------------------------------
def _as_array(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def encode_column(spec: InputSpec, col) -> np.ndarray:
    """An Arrow column in the raw encoding `validate_rows` gives the same values: float32 with NaN
    for missing numbers; str with "" for missing categories. Vectorized for the common types
    (numbers, strings, integer categories, dictionaries of those); anything else goes through the
    per-value checks of `as_numeric` / `as_text`, which name the input and the bad value."""
    if isinstance(col, pa.ChunkedArray) and col.num_chunks > 1:  # chunks may carry different dictionaries
        return np.concatenate([encode_column(spec, c) for c in col.chunks])
    if isinstance(col, pa.ChunkedArray):
        col = col.chunk(0) if col.num_chunks else pa.array([], col.type)
    t = col.type
    if spec.dtype == CATEGORICAL and (pa.types.is_dictionary(t) or _is_text(t) or pa.types.is_integer(t)):
        # Through a dictionary: one Python str per distinct value, not per row (categories
        # repeat). Parquet string columns are read as dictionaries already (iter_chunks).
        encoded = col if pa.types.is_dictionary(t) else pc.dictionary_encode(col, null_encoding="encode")
        values = encoded.dictionary
        if pa.types.is_integer(values.type):  # a month stored as 7 is the category "7", as in training
            values = pc.cast(values, pa.string())
        if _is_text(values.type):
            indices = encoded.indices
            if indices.null_count:  # a null index (a dictionary array's own nulls): the missing token ""
                values = pa.concat_arrays([values, pa.array([""], values.type)])
                indices = pc.fill_null(indices, len(values) - 1)
            return pc.fill_null(values, "").to_numpy(zero_copy_only=False)[indices.to_numpy(zero_copy_only=False)]
    arr = _as_array(col)
    t = arr.type
    if spec.dtype == NUMERIC:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            out = pc.cast(arr, pa.float32(), safe=False)
            if out.null_count:
                out = pc.fill_null(out, pa.scalar(np.nan, pa.float32()))
            return out.to_numpy(zero_copy_only=False)
        if pa.types.is_null(t):
            return np.full(len(arr), np.nan, np.float32)
        if _is_text(t) or pa.types.is_binary(t):
            return as_numeric(spec.name, arr.to_numpy(zero_copy_only=False))
        raise PredictionInputError(f"input {spec.name!r}: expected numbers, got {t}")
    if pa.types.is_null(t):
        return np.full(len(arr), "", dtype=object)
    if pa.types.is_floating(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return as_text(spec.name, arr.to_numpy(zero_copy_only=False))  # 7.0 -> "7", NaN -> "", UTF-8
    raise PredictionInputError(f"input {spec.name!r}: expected strings, got {t}")


def encode_time(col) -> np.ndarray:
    """The event time column for the feature lookup: timestamps as epoch seconds (null -> NaN),
    anything else as text (ISO-8601), as FeatureEnricher takes them."""
    arr = _as_array(col)
    if pa.types.is_timestamp(arr.type):
        unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[arr.type.unit]
        seconds = pc.divide(pc.cast(pc.cast(arr, pa.int64()), pa.float64()), unit)
        return pc.fill_null(seconds, np.nan).to_numpy(zero_copy_only=False)
    if pa.types.is_date(arr.type):
        return encode_time(pc.cast(arr, pa.timestamp("s")))
    return encode_column(InputSpec("time", CATEGORICAL), arr)


# ---- planning ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnPlan:
    """Which input columns a run reads, and what each is for."""

    direct: tuple[InputSpec, ...]  # model inputs read from the input
    lookup_keys: tuple[InputSpec, ...]  # entity keys the feature lookup needs besides the model inputs
    from_store: tuple[str, ...]  # model inputs fetched from the feature store
    time_column: str | None  # the lookup's event time column, when the input has it
    id_column: str | None  # None: row ids are row positions
    passthrough: tuple[str, ...]
    logged_keys: tuple[str, ...] = ()  # entity keys / event time read for the payload log only

    @property
    def enrich(self) -> bool:
        return bool(self.from_store)

    @property
    def read_columns(self) -> list[str]:
        names = [s.name for s in self.direct + self.lookup_keys]
        names += [c for c in (self.time_column, self.id_column) if c] + list(self.passthrough)
        return list(dict.fromkeys(names + list(self.logged_keys)))


def plan_columns(
    config,
    available: Sequence[str],
    model_inputs: Sequence[InputSpec],
    *,
    enricher: FeatureEnricher,
    id_column: str | None = None,
    id_column_required: bool = False,
    passthrough: Sequence[str] = (),
    where: str = "input",
) -> ColumnPlan:
    """Checks the input's columns against what the model needs; BatchInputError names what is missing."""
    from mlops.datasets.ingest import provided_by_feature_store

    have = set(available)
    bad_passthrough = [c for c in passthrough if c in OUTPUT_COLUMNS]
    if bad_passthrough:
        raise BatchInputError(
            f"passthrough column(s) {bad_passthrough} clash with the output's own columns {list(OUTPUT_COLUMNS)}"
        )
    missing_passthrough = [c for c in passthrough if c not in have]
    if missing_passthrough:
        raise BatchInputError(f"{where}: missing passthrough column(s) {missing_passthrough}; it has {sorted(have)}")
    if id_column and id_column not in have:
        if id_column_required:
            raise BatchInputError(f"{where}: missing id column {id_column!r}; it has {sorted(have)}")
        id_column = None  # the configured default: row positions when this input has no such column
    direct = tuple(s for s in model_inputs if s.name in have)
    missing = [s.name for s in model_inputs if s.name not in have]
    if not missing:
        return ColumnPlan(direct, (), (), None, id_column, tuple(passthrough))
    store_provided = provided_by_feature_store(config)
    not_from_store = [m for m in missing if m not in store_provided]
    if not_from_store:
        raise BatchInputError(
            f"{where}: missing model input column(s) {not_from_store}"
            + (
                f" (and feature-store feature(s) {sorted(set(missing) - set(not_from_store))})"
                if len(not_from_store) < len(missing)
                else ""
            )
        )
    problem = online_store_problem(config, enricher)
    if problem:
        raise BatchInputError(
            f"{where}: missing feature column(s) {missing}, which the feature store would "
            f"provide, but {problem}. Add the columns to the input or set up the online store"
        )
    model_names = {s.name for s in model_inputs}
    keys = tuple(s for s in enricher.schema.required if s.name not in model_names)
    missing_keys = [s.name for s in enricher.schema.required if s.name not in have]
    if missing_keys:
        raise BatchInputError(
            f"{where}: missing column(s) {missing_keys}, needed to look up the feature-store feature(s) {missing}"
        )
    time_column = enricher.time_column if enricher.time_column in have else None
    return ColumnPlan(direct, keys, tuple(missing), time_column, id_column, tuple(passthrough))


def online_store_problem(config, enricher: FeatureEnricher | None = None) -> str | None:
    """Why the Feast online store cannot complete rows here, or None if it can."""
    import importlib.util

    if config.features is None:
        return f"{config.source_path or 'the config'} configures no feature store (features:)"
    if not config.serving.feature_lookup or (enricher is not None and not enricher.lookup):
        return "serving.feature_lookup is false"
    from mlops.features.store import FeatureStoreError, feast_dir

    try:
        directory = feast_dir(config)
    except FeatureStoreError as e:
        return str(e)
    if not os.path.exists(os.path.join(directory, "registry.db")):
        return f"the feature repo was never applied ({directory}/registry.db is missing: `mlops features apply`)"
    if config.features.online_store == "sqlite":
        if not os.path.exists(os.path.join(directory, "online.db")):
            return f"the online store {directory}/online.db does not exist (`mlops features materialize`)"
    elif importlib.util.find_spec("redis") is None:
        return "the online store is Redis and this environment has no Redis client"
    return None


# ---- output --------------------------------------------------------------------------------------
def summary_uri_for(output_uri: str) -> str:
    stem = output_uri[: -len(".parquet")] if output_uri.endswith(".parquet") else output_uri
    return stem + ".summary.json"


@contextlib.contextmanager
def published_file(uri: str) -> Iterator[str]:
    """Yields a local temporary path; publishes it at `uri` whole when the block succeeds (rename
    on a local disk, one PUT on an object store) and deletes it otherwise."""
    from fsspec.implementations.local import LocalFileSystem

    from mlops import storage

    fs, path = storage.fs_and_path(uri)
    if isinstance(fs, LocalFileSystem):
        with storage.atomic_local_file(path) as tmp:  # `.tmp-*` beside the target, os.replace on success
            yield tmp
        storage.remove_stale_temps(os.path.dirname(os.path.abspath(path)))  # what a kill -9 left behind
        return
    fd, tmp = tempfile.mkstemp(prefix="mlops-batch-", suffix=".parquet")
    os.close(fd)
    try:
        yield tmp
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        fs.put_file(tmp, path)
    finally:
        os.unlink(tmp)


class _ChunkWriter:
    """Appends chunks to one parquet file; the first chunk fixes the schema, later ones are cast
    to it (files of one input may store a passthrough column as int32 here and int64 there)."""

    def __init__(self, path: str):
        self.path = path
        self.writer = None
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.schema = table.schema
            # Dictionary pages only for passthrough columns (repeated categories); on row ids,
            # predictions and the constant model columns they cost time for no size gain.
            self.writer = pq.ParquetWriter(
                self.path,
                self.schema,
                compression="snappy",
                use_dictionary=[c for c in self.schema.names if c not in OUTPUT_COLUMNS],
            )
        elif table.schema != self.schema:
            try:
                table = table.cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
                raise BatchInputError(
                    f"input files disagree on column types ({table.schema} vs {self.schema}): {e}"
                ) from None
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class BatchResult:
    output_uri: str
    summary_uri: str
    rows: int
    model_name: str
    model_version: str
    model_uri: str
    input: BatchInput
    summary: dict[str, Any] = field(default_factory=dict)
    from_registry: bool = False  # the model is a registry version (not a plain model directory)


def _csv_types(plan: ColumnPlan) -> dict[str, pa.DataType]:
    """csv: the model's columns get their type from the model, not from inference on the first
    block (a category written as 1, 2, 3 is text; a column empty in the first block still parses)."""
    return {s.name: (pa.float64() if s.dtype == NUMERIC else pa.string()) for s in plan.direct + plan.lookup_keys}


@dataclass
class _Chunk:
    start: int  # position of its first row in the input
    table: pa.Table  # the columns read
    features: dict[str, np.ndarray]  # model inputs present in the input, encoded
    lookup: dict[str, np.ndarray]  # entity keys and event time for the feature lookup
    seconds_read: float
    seconds_encode: float


def gaps_allowed(inp: BatchInput, enricher: FeatureEnricher) -> dict[str, bool]:
    """Input name -> may a row leave it missing (module doc: a file follows the online request
    schema, a dataset version training's rule). Names not listed may be missing."""
    if inp.dataset_versions:
        return {}
    return {s.name: s.nullable for s in enricher.schema.all}


def _encoded_chunks(
    inp: BatchInput, plan: ColumnPlan, chunk_rows: int, nullable: dict[str, bool] | None = None
) -> Iterator[_Chunk]:
    nullable = nullable or {}

    def rules(spec: InputSpec) -> InputSpec:
        return InputSpec(spec.name, spec.dtype, nullable=nullable.get(spec.name, True))

    start = 0
    # Categories are read as dictionaries, unless the output copies the column as it is.
    categories = [
        s.name
        for s in plan.direct + plan.lookup_keys
        if s.dtype == CATEGORICAL and s.name not in (plan.id_column, *plan.passthrough)
    ]
    chunks = iter_chunks(inp, plan.read_columns, chunk_rows, _csv_types(plan), categories)
    while True:
        t0 = time.perf_counter()
        table = next(chunks, None)
        if table is None:
            return
        t1 = time.perf_counter()
        try:
            # the online request's value rules too (finite FP32 numbers; gaps as gaps_allowed says)
            features = {
                s.name: check_values(rules(s), encode_column(s, table.column(s.name)), table.column(s.name))
                for s in plan.direct
            }
            lookup = {
                s.name: check_values(rules(s), encode_column(s, table.column(s.name)), table.column(s.name))
                for s in plan.lookup_keys
            }
            if plan.time_column:
                lookup[plan.time_column] = encode_time(table.column(plan.time_column))
        except PredictionInputError as e:
            raise BatchInputError(f"{inp.spec}: rows {start}..{start + table.num_rows - 1}: {e}") from None
        yield _Chunk(start, table, features, lookup, t1 - t0, time.perf_counter() - t1)
        start += table.num_rows


def run_batch(
    config,
    served: ServedModel,
    inp: BatchInput,
    output_uri: str,
    *,
    summary_uri: str | None = None,
    chunk_rows: int | None = None,
    id_column: str | None = None,
    passthrough: Sequence[str] | None = None,
    payload_logger=None,
) -> BatchResult:
    """Predicts every row of `inp` with `served` and publishes the predictions at `output_uri`.

    `id_column` / `passthrough` default to serving.batch's; an id column named here must exist
    (the configured one is used when present). `payload_logger`: a PayloadLogger to log every
    prediction to (batch applies backpressure: it waits for the logger rather than dropping rows)."""
    spec = config.serving.batch
    chunk_rows = chunk_rows or spec.chunk_rows
    passthrough = list(spec.passthrough_columns if passthrough is None else passthrough)
    summary_uri = summary_uri or summary_uri_for(output_uri)
    enricher: FeatureEnricher = served.enricher
    plan = plan_columns(
        config,
        input_columns(inp),
        served.predictor.inputs,
        enricher=enricher,
        id_column=id_column or spec.id_column,
        id_column_required=bool(id_column),
        passthrough=passthrough,
        where=f"input {inp.spec}",
    )
    model_inputs = served.predictor.inputs
    logs_payloads = payload_logger is not None and getattr(payload_logger, "enabled", True)
    if logs_payloads:  # the input's entity keys and event time go to the payload log beside the inputs
        available = set(input_columns(inp))
        plan = replace(plan, logged_keys=tuple(k for k in enricher.logged_keys if k in available))
    seconds = dict.fromkeys(("read", "encode", "enrich", "predict", "write", "payload_log"), 0.0)
    rows = chunks = 0
    if plan.enrich:  # an online store that does not answer fails the run before any output exists
        with _store_errors_named(config, "before reading the input"):
            enricher.fetch({k: np.array([""], dtype=object) for k in enricher.lookup_keys}, 1, None)
    without_store_values = enricher.rows_without_features
    started, t_start = dt.datetime.now(dt.UTC), time.perf_counter()
    name_scalar, version_scalar = pa.scalar(served.name, pa.string()), pa.scalar(str(served.version), pa.string())

    with published_file(output_uri) as tmp:
        writer = _ChunkWriter(tmp)
        try:
            for chunk in _encoded_chunks(inp, plan, chunk_rows, gaps_allowed(inp, enricher)):
                n = chunk.table.num_rows
                seconds["read"] += chunk.seconds_read
                seconds["encode"] += chunk.seconds_encode
                t0 = time.perf_counter()
                features = chunk.features
                if plan.enrich:
                    try:
                        with _store_errors_named(config, f"at rows {chunk.start}..{chunk.start + n - 1}"):
                            features, _ = enricher.complete({**chunk.features, **chunk.lookup})
                    except PredictionInputError as e:
                        raise BatchInputError(f"{inp.spec}: rows {chunk.start}..{chunk.start + n - 1}: {e}") from None
                t1 = time.perf_counter()
                predictions = np.asarray(served.predictor.predict(features), dtype=np.float32).reshape(-1)
                if len(predictions) != n:
                    raise RuntimeError(f"{served.label}: {len(predictions)} predictions for {n} rows")
                now = dt.datetime.now(dt.UTC)
                t2 = time.perf_counter()
                row_ids = (
                    chunk.table.column(plan.id_column)
                    if plan.id_column
                    else pa.array(np.arange(chunk.start, chunk.start + n, dtype=np.int64))
                )
                columns = {
                    "row_id": row_ids,
                    "prediction": pa.array(predictions),
                    "model_name": pa.repeat(name_scalar, n),
                    "model_version": pa.repeat(version_scalar, n),
                    "predicted_at": pa.repeat(pa.scalar(now, _TIMESTAMP), n),
                    **{c: chunk.table.column(c) for c in plan.passthrough},
                }
                writer.write(pa.table(columns))
                t3 = time.perf_counter()
                if payload_logger is not None:
                    _log_payloads(
                        payload_logger,
                        config,
                        served,
                        row_ids,
                        {s.name: features[s.name] for s in model_inputs},
                        predictions,
                        now.timestamp(),
                        logged_key_columns(chunk.table, plan.logged_keys, enricher.time_key) if logs_payloads else {},
                    )
                seconds["enrich"] += t1 - t0
                seconds["predict"] += t2 - t1
                seconds["write"] += t3 - t2
                seconds["payload_log"] += time.perf_counter() - t3
                rows += n
                chunks += 1
            if rows == 0:
                raise BatchInputError(f"input {inp.spec}: no rows to predict")
            if plan.enrich and enricher.rows_without_features - without_store_values == rows:
                no_time = (
                    f" (the input has no {enricher.time_column!r} column: the lookups used the current time)"
                    if enricher.time_column and not plan.time_column
                    else ""
                )
                raise BatchInputError(
                    f"input {inp.spec}: not one of the {rows} rows got all its feature-store values "
                    f"{list(plan.from_store)} from the online store{no_time}: is it materialized for the input's "
                    f"time range? Nothing was written"
                )
            t0 = time.perf_counter()
            writer.close()  # the footer; the rename/PUT follows when the block exits
            seconds["write"] += time.perf_counter() - t0
        finally:
            writer.close()
    if payload_logger is not None:
        t0 = time.perf_counter()
        payload_logger.flush(timeout=60)
        seconds["payload_log"] += time.perf_counter() - t0
    elapsed = time.perf_counter() - t_start

    from mlops import storage

    summary = {
        "rows": rows,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 else None,
        "model": {
            "name": served.name,
            "version": str(served.version),
            "uri": served.uri,
            "runtime": served.predictor.runtime,
        },
        "input": {
            "spec": inp.spec,
            "format": inp.format,
            "files": list(inp.files),
            "dataset_versions": [v.id for v in inp.dataset_versions],
        },
        "output": output_uri,
        "row_id": plan.id_column or "position",
        "passthrough_columns": list(plan.passthrough),
        "chunks": chunks,
        "chunk_rows": chunk_rows,
        "started_at": started.isoformat(),
        "feature_lookup": {
            "features": list(plan.from_store),
            "time_column": plan.time_column,
            "rows_with_defaults": enricher.rows_without_features - without_store_values,
        }
        if plan.enrich
        else None,
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "payload_log": payload_logger.stats() if payload_logger is not None else None,
    }
    storage.write_json_atomic(summary_uri, summary)
    return BatchResult(output_uri, summary_uri, rows, served.name, str(served.version), served.uri, inp, summary)


def online_store_name(config) -> str:
    """The online store as a user knows it: the SQLite file or the Redis address."""
    from mlops.features.store import feast_dir

    if config.features.online_store == "sqlite":
        return f"the online store {os.path.join(feast_dir(config), 'online.db')}"
    return f"the Redis online store at {config.features.redis_url} (features.redis_url)"


def _store_failures() -> tuple[type[BaseException], ...]:
    """What a store that is down raises: the drivers' errors (redis-py, sqlite3), OSError, and an
    Unavailable of the platform's own (a deadline or breaker of the serving code)."""
    import sqlite3

    errors: list[type[BaseException]] = [Unavailable, sqlite3.Error, OSError]
    try:
        import redis

        errors.append(redis.RedisError)
    except ImportError:  # the pipeline image: no Redis client, no Redis online store
        pass
    return tuple(errors)


@contextlib.contextmanager
def _store_errors_named(config, when: str):
    """A failing online store -> OnlineStoreUnavailable, one line naming the store."""
    try:
        yield
    except _store_failures() as e:
        detail = (str(e).strip().splitlines() or [""])[0][:300]
        raise OnlineStoreUnavailable(
            f"{online_store_name(config)} does not answer ({type(e).__name__}: {detail}) {when}; nothing was written"
        ) from None


def logged_key_columns(table: pa.Table, names: Sequence[str], time_key: str | None) -> dict[str, np.ndarray]:
    """The payload log's key columns of a chunk: text, the event time as the lookup takes it
    (epoch seconds or text; the logger stores it as a UTC timestamp)."""
    return {
        k: encode_time(table.column(k)) if k == time_key else encode_column(InputSpec(k, CATEGORICAL), table.column(k))
        for k in names
    }


def _log_payloads(
    logger,
    config,
    served,
    row_ids,
    features: dict[str, np.ndarray],
    predictions: np.ndarray,
    timestamp: float,
    keys: dict[str, np.ndarray] | None = None,
) -> None:
    """Logs a chunk without dropping rows: batch has no latency to protect, so when the logger's
    queue cannot take the rows, wait for it to write (backpressure) instead."""
    if not getattr(logger, "enabled", True):
        return
    ids = pc.cast(_as_array(row_ids), pa.string()).to_numpy(zero_copy_only=False)
    limit = config.serving.payload_log.queue_size
    for lo in range(0, len(predictions), limit):
        hi = lo + limit
        if logger.stats()["queued_rows"] + min(hi, len(predictions)) - lo > limit:
            logger.flush(timeout=60)
        logger.log(
            model=served.name,
            version=str(served.version),
            source=SOURCE,
            request_ids=ids[lo:hi],
            features={k: v[lo:hi] for k, v in features.items()},
            predictions=predictions[lo:hi],
            timestamp=timestamp,
            keys={k: v[lo:hi] for k, v in (keys or {}).items()},
        )


def predict_batch(
    config,
    *,
    model: str | None,
    input: str,
    output: str,
    summary: str | None = None,
    chunk_rows: int | None = None,
    id_column: str | None = None,
    passthrough: Sequence[str] | None = None,
    runtime: str | None = None,
    log_payloads: bool = False,
) -> BatchResult:
    """Loads `model` (NAME, NAME@ALIAS, NAME@VERSION or a model directory; None: serving.model or
    the project's name) with `runtime` (savedmodel or tflite; default serving.runtime, where auto
    means the SavedModel) and runs `run_batch`."""
    from serving.handle import ModelHandle, _is_dir_source

    inp = resolve_input(config, input)  # before loading a model: a bad input fails in milliseconds
    runtime = runtime or config.serving.runtime
    if runtime == "auto":  # one engine per run: the SavedModel (auto would take TFLite for a short last chunk)
        runtime = "savedmodel"
    handle = ModelHandle.from_config(config, model, runtime=runtime)  # TensorFlow without its unused imports
    served = handle.current
    logger = None
    if log_payloads:
        from serving.payload_log import PayloadLogger

        logger = PayloadLogger.from_config(config)
    try:
        result = run_batch(
            config,
            served,
            inp,
            output,
            summary_uri=summary,
            chunk_rows=chunk_rows,
            id_column=id_column,
            passthrough=passthrough,
            payload_logger=logger,
        )
        result.from_registry = not _is_dir_source(handle.source)
        return result
    finally:
        if logger is not None:
            logger.close()
