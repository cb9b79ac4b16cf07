"""The Beam/TFT half of the Transform step, run as a child process by executor.py.

    python -m components.transform.worker REQUEST_JSON

REQUEST_JSON (written by the executor through mlops.modeling.child.run_child): {"config":
<PlatformConfig as JSON>, "examples_dir", "out_dir", "batch_rows", "marker", "nonce"}. The worker
analyzes the train split, transforms train/eval/test and writes the TransformGraph layout of
mlops.artifacts, then reports {"rows_in", "rows_out", ...} through the marker and leaves with
os._exit() (TFT processes crash with SIGSEGV in interpreter teardown after writing everything).

Input: Arrow, not Python dicts per instance. A ParDo reads the parquet files
(mlops.beam.read_parquet: any fsspec URI, on every runner, DaskRunner included), each table
is cut into RecordBatches of `batch_rows` rows and every column is wrapped in a length-1 list
(tfx_bsl's dense-tensor adapter wants list<T> columns). The pipeline is mlops.beam.pipeline's, on
config.beam's runner.

On a distributed runner, pass URIs the Beam workers can reach (the component does) and run the
workers from the pipeline image (e.g. --sdk_container_image=... in beam.options): the
Beam functions here are referenced by module path (components.transform.worker).
"""

from __future__ import annotations

import sys
import time

COUNTS_DIR = "counts"
SHARDS_DIR = "shards"
# Raw schema beside TFT's outputs (TFTransformOutput.raw_feature_spec() reads <dir>/metadata).
RAW_METADATA_DIR = "metadata"


def arrow_column_types(raw_dtypes: dict[str, str]):
    import pyarrow as pa

    types = {"float32": pa.float32(), "string": pa.string(), "int64": pa.int64()}
    return {name: types[d] for name, d in raw_dtypes.items()}


def to_tfxio_batches(table, raw_dtypes: dict[str, str], batch_rows: int):
    """A pyarrow Table of raw columns -> RecordBatches of list<T> columns (one value per row).

    Missing values: parquet written by pandas stores NaN floats as nulls; they become NaN again
    (the raw encoding). A null string becomes "" and a null label is an error."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    types = arrow_column_types(raw_dtypes)
    names = list(raw_dtypes)
    for batch in table.select(names).combine_chunks().to_batches(max_chunksize=batch_rows):
        n = batch.num_rows
        if n == 0:
            continue
        offsets = pa.array(np.arange(n + 1, dtype=np.int32))
        arrays = []
        for name in names:
            col = batch.column(batch.schema.get_field_index(name))
            want = types[name]
            if col.type != want:
                if want == pa.string() and not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                    raise TypeError(
                        f"column {name!r}: categorical features must be strings in the examples "
                        f"(mlops.artifacts raw encoding), got {col.type}"
                    )
                col = col.cast(want)
            if col.null_count:
                if raw_dtypes[name] == "float32":
                    col = pc.fill_null(col, pa.scalar(float("nan"), pa.float32()))
                elif raw_dtypes[name] == "string":
                    col = pc.fill_null(col, "")
                else:
                    raise ValueError(f"column {name!r}: {col.null_count} null value(s) (labels must be present)")
            # Own, compact buffers: pickling (how Beam moves elements between stages) a slice
            # of pyarrow 10 serializes the whole parent buffer (measured: 3-9 GB peak RSS).
            arrays.append(pa.ListArray.from_arrays(offsets, pa.concat_arrays([col])))
        yield pa.RecordBatch.from_arrays(arrays, names)


def tensor_adapter_config(raw_dtypes: dict[str, str]):
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    types = arrow_column_types(raw_dtypes)
    arrow_schema = pa.schema([pa.field(name, pa.list_(types[name])) for name in raw_dtypes])
    reps = {}
    for name in raw_dtypes:
        rep = schema_pb2.TensorRepresentation()
        rep.dense_tensor.column_name = name
        rep.dense_tensor.shape.CopyFrom(schema_pb2.FixedShape())
        reps[name] = rep
    return tensor_adapter.TensorAdapterConfig(arrow_schema, reps)


def merge_shards(pattern: str, target: str) -> int:
    """Moves the shards matching `pattern` into the single file `target` (a rename for one shard;
    for several, a byte concatenation: concatenated gzip members are one valid gzip stream, which
    TFRecordDataset(compression_type="GZIP") and Python's gzip read as one). Returns the count."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    shards = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not shards:
        raise RuntimeError(f"no output shard matches {pattern}")
    if len(shards) == 1:
        FileSystems.rename(shards, [target])
        return 1
    with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for shard in shards:
            with FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for chunk in iter(lambda: f.read(8 << 20), b""):
                    out.write(chunk)
    FileSystems.delete(shards)
    return len(shards)


def _read_count(path: str) -> int:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        text = f.read().decode().strip()
    return int(text or 0)


def run(request: dict) -> dict:
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.io.filesystem import CompressionTypes
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from mlops import storage
    from mlops.artifacts import SPLITS, TRANSFORM_OUTPUT, TRANSFORMED_EXAMPLES, split_path
    from mlops.beam import describe, read_parquet, read_slices
    from mlops.beam import pipeline as beam_pipeline
    from mlops.config import PlatformConfig, join_uri
    from mlops.modeling.preprocessing import FeaturePlan, build_preprocessing_fn, raw_feature_spec

    config = PlatformConfig.model_validate(request["config"])
    examples_dir, out_dir = request["examples_dir"], request["out_dir"]
    batch_rows = int(request.get("batch_rows") or 10_000)
    plan = FeaturePlan.from_config(config)
    raw_dtypes = plan.raw_dtypes(with_label=True)
    tac = tensor_adapter_config(raw_dtypes)
    slices = read_slices(config.beam)

    transform_output = join_uri(out_dir, TRANSFORM_OUTPUT)
    transformed_dir = join_uri(out_dir, TRANSFORMED_EXAMPLES)
    work = join_uri(out_dir, ".transform_tmp")
    for stale in (transform_output, transformed_dir, work):  # a retried step starts clean
        storage.remove(stale, recursive=True)
    storage.makedirs(transformed_dir)
    storage.makedirs(join_uri(work, COUNTS_DIR))

    t0 = time.monotonic()
    with beam_pipeline(config.beam) as p:
        with tft_beam.Context(temp_dir=join_uri(work, "tft")):
            raw = {}
            for split in SPLITS:
                raw[split] = (
                    p
                    | f"Files[{split}]"
                    >> beam.Create([(split_path(examples_dir, split), k, slices) for k in range(slices)])
                    | f"Read[{split}]"
                    >> beam.FlatMapTuple(read_parquet, columns=list(raw_dtypes), batch_rows=8 * batch_rows)
                    | f"ToRecordBatches[{split}]" >> beam.FlatMap(to_tfxio_batches, raw_dtypes, batch_rows)
                )
                _ = (
                    raw[split]
                    | f"RowsIn[{split}]" >> beam.Map(lambda rb: rb.num_rows)
                    | f"SumIn[{split}]" >> beam.CombineGlobally(sum)
                    | f"WriteRowsIn[{split}]"
                    >> beam.io.WriteToText(join_uri(work, COUNTS_DIR, f"in-{split}"), shard_name_template="")
                )

            (train_data, train_meta), transform_fn = (
                raw["train"],
                tac,
            ) | "AnalyzeAndTransform" >> tft_beam.AnalyzeAndTransformDataset(
                build_preprocessing_fn(config), output_record_batches=True
            )
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_output)

            transformed = {"train": (train_data, train_meta)}
            for split in ("eval", "test"):
                transformed[split] = (
                    (raw[split], tac),
                    transform_fn,
                ) | f"Transform[{split}]" >> tft_beam.TransformDataset(output_record_batches=True)

            for split in SPLITS:
                data, _meta = transformed[split]
                # Runner-chosen sharding, merged into <split>.tfrecord.gz afterwards: a fixed single
                # shard makes Beam group ALL records under one key first (measured +0.85 GB).
                _ = (
                    transformed[split]
                    | f"Encode[{split}]" >> tft_beam.EncodeTransformedDataset()
                    | f"Write[{split}]"
                    >> beam.io.WriteToTFRecord(
                        join_uri(work, SHARDS_DIR, split),
                        file_name_suffix=".tfrecord.gz",
                        compression_type=CompressionTypes.GZIP,
                    )
                )
                # Rows handed to the encoder, which writes one tf.Example per row (summing batch
                # sizes is cheaper than counting 300k encoded elements).
                _ = (
                    data
                    | f"RowsOut[{split}]" >> beam.Map(lambda batch_and_passthrough: batch_and_passthrough[0].num_rows)
                    | f"SumOut[{split}]" >> beam.CombineGlobally(sum)
                    | f"WriteRowsOut[{split}]"
                    >> beam.io.WriteToText(join_uri(work, COUNTS_DIR, f"out-{split}"), shard_name_template="")
                )
    beam_seconds = time.monotonic() - t0

    for split in SPLITS:
        merge_shards(join_uri(work, SHARDS_DIR, split) + "-*", join_uri(transformed_dir, f"{split}.tfrecord.gz"))
    # WriteTransformFn does not keep the raw schema with Arrow/TFXIO input: write it ourselves.
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata.from_feature_spec(raw_feature_spec(config)),
        join_uri(transform_output, RAW_METADATA_DIR),
    )
    rows_in = {s: _read_count(join_uri(work, COUNTS_DIR, f"in-{s}")) for s in SPLITS}
    rows_out = {s: _read_count(join_uri(work, COUNTS_DIR, f"out-{s}")) for s in SPLITS}
    tft_output = tft.TFTransformOutput(transform_output)
    vocab_sizes = {c: int(tft_output.vocabulary_size_by_name(plan.vocab_name(c))) for c in plan.categorical}
    storage.remove(work, recursive=True)
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "vocabulary_sizes": vocab_sizes,
        "beam_seconds": round(beam_seconds, 3),
        "runner": describe(config.beam),
        "transformed_features": sorted(tft_output.transformed_feature_spec()),
    }


def main(argv: list[str]) -> None:
    from mlops.modeling.child import child_main

    child_main(argv, run)


if __name__ == "__main__":
    main(sys.argv[1:])
