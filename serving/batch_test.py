"""Batch inference (serving/batch.py) on the tiny model, in the pipeline environment (where batch
runs): chunking and row ids, the Arrow encoding against the request checker, csv and part-file
inputs, atomic publication (a model failing on the 2nd chunk leaves the previous output whole),
re-runs, object-store output, bad input (missing columns named, empty input, bad values), no
feature store, and payload logging without drops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.batch import (
    OUTPUT_COLUMNS,
    BatchInputError,
    OnlineStoreUnavailable,
    encode_column,
    predict_batch,
    resolve_input,
    run_batch,
    summary_uri_for,
)
from serving.predictor import CATEGORICAL, NUMERIC, InputSpec, PredictionInputError, validate_rows
from tests.support.serving_models import TINY_CATEGORICAL, TINY_NUMERIC, tiny_probability


def flights_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Rows with the tiny model's inputs as a dataset stores them (month as an int, missing
    feature-store values) plus columns a model does not take."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(["UA", "DL", "AA", "B6"], n).astype(object)
    temp = rng.normal(50, 15, n)  # from the feature store: may be missing, even in a request
    temp[::13] = np.nan
    return pd.DataFrame(
        {
            "hour": rng.integers(0, 24, n),
            "distance": rng.normal(1000, 400, n),
            "temp": temp,
            "seats": rng.integers(50, 300, n).astype(float),
            "carrier": carrier,
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "dest": rng.choice(["LAX", "SFO", "ORD"], n),
            "month": rng.integers(1, 13, n),
            "flight_key": [f"f{i:05d}" for i in range(n)],
            "dep_delay": rng.normal(10, 30, n),
        }
    )


def expected(df: pd.DataFrame, bias: float = 0.0) -> np.ndarray:
    rows = {c: df[c].to_numpy(dtype=np.float64) for c in TINY_NUMERIC}
    rows.update({c: df[c].fillna("").astype(str).to_numpy(dtype=object) for c in TINY_CATEGORICAL})
    return tiny_probability(rows, bias)


def read(path) -> pd.DataFrame:
    return pq.read_table(str(path)).to_pandas()


@pytest.fixture
def served(tiny_config):
    from serving.handle import ModelHandle

    return ModelHandle.from_config(tiny_config, "flights@production").current  # v1, bias 0


def test_chunked_run_over_part_files_keeps_row_order_ids_and_values(tiny_config, served, tmp_path):
    df = flights_frame(1000)
    parts = tmp_path / "input"
    parts.mkdir()
    df.iloc[:700].to_parquet(parts / "part-0.parquet", row_group_size=250)  # chunks cross row groups
    df.iloc[700:].to_parquet(parts / "part-1.parquet")
    (parts / ".tmp-part-2.parquet").write_bytes(b"in progress")  # a writer's temp file: not input
    out = tmp_path / "out" / "predictions.parquet"

    result = run_batch(
        tiny_config,
        served,
        resolve_input(tiny_config, str(parts)),
        str(out),
        chunk_rows=128,
        passthrough=["flight_key", "dep_delay"],
    )

    got = read(out)
    assert list(got.columns) == [*OUTPUT_COLUMNS, "flight_key", "dep_delay"]
    assert got["row_id"].tolist() == list(range(1000))  # positions over both files, in order
    np.testing.assert_allclose(got["prediction"], expected(df), rtol=1e-6, atol=1e-6)
    assert got["prediction"].dtype == np.float32
    assert set(got["model_name"]) == {"flights"} and set(got["model_version"]) == {"1"}
    assert str(got["predicted_at"].dt.tz) == "UTC"
    assert got["flight_key"].tolist() == df["flight_key"].tolist()
    assert got["dep_delay"].tolist() == df["dep_delay"].tolist()
    # 700 rows -> 6 chunks of <= 128, 300 rows -> 3: a chunk never spans two files
    assert result.summary["chunks"] == 9 and result.rows == 1000
    assert pq.ParquetFile(str(out)).metadata.num_row_groups == 9
    summary = json.loads(Path(summary_uri_for(str(out))).read_text())
    assert summary["rows"] == 1000 and summary["row_id"] == "position" and summary["model"]["version"] == "1"
    assert summary["rows_per_second"] > 0 and summary["input"]["files"] == [
        str(parts / "part-0.parquet"),
        str(parts / "part-1.parquet"),
    ]


def test_row_ids_from_the_id_column(tiny_config, served, tmp_path):
    from mlops.config import load_config

    df = flights_frame(50)
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    out = tmp_path / "out.parquet"
    configured = load_config(
        tiny_config.source_path,
        overrides={
            "artifact_root": tiny_config.artifact_root,
            "serving.feature_lookup": False,
            "serving.batch.id_column": "flight_key",
        },
    )
    run_batch(configured, served, resolve_input(configured, str(src)), str(out))
    assert read(out)["row_id"].tolist() == df["flight_key"].tolist()

    # The configured id column is a default: an input without it gets row positions...
    df.drop(columns="flight_key").to_parquet(src)
    run_batch(configured, served, resolve_input(configured, str(src)), str(out))
    assert read(out)["row_id"].tolist() == list(range(50))
    # ...but an id column asked for by name must exist.
    with pytest.raises(BatchInputError, match="missing id column 'flight_key'"):
        run_batch(configured, served, resolve_input(configured, str(src)), str(out), id_column="flight_key")


def test_csv_input_gives_the_same_predictions_as_parquet(tiny_config, served, tmp_path):
    df = flights_frame(300, seed=3)
    df.to_csv(tmp_path / "in.csv.gz", index=False, na_rep="NA")  # NA: the config's null marker
    df.to_parquet(tmp_path / "in.parquet")
    for name in ("in.csv.gz", "in.parquet"):
        run_batch(
            tiny_config,
            served,
            resolve_input(tiny_config, str(tmp_path / name)),
            str(tmp_path / f"{name}.out.parquet"),
            chunk_rows=64,
        )
    from_csv, from_parquet = read(tmp_path / "in.csv.gz.out.parquet"), read(tmp_path / "in.parquet.out.parquet")
    np.testing.assert_allclose(from_csv["prediction"], from_parquet["prediction"], rtol=1e-6)
    np.testing.assert_allclose(from_csv["prediction"], expected(df), rtol=1e-5, atol=1e-6)


class FailsOnSecondChunk:
    """A predictor that works once, then raises: a crash in the middle of a run."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.inputs, self.runtime = inner.inputs, inner.runtime

    def predict(self, rows):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("model crashed on chunk 2")
        return self.inner.predict(rows)


def test_a_crash_mid_run_leaves_the_previous_output_whole(tiny_config, served, tmp_path):
    import dataclasses

    df = flights_frame(400)
    src = tmp_path / "in.parquet"
    df.to_parquet(src)
    out_dir = tmp_path / "out"
    out = out_dir / "predictions.parquet"
    inp = resolve_input(tiny_config, str(src))
    run_batch(tiny_config, served, inp, str(out), chunk_rows=100)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    failing = dataclasses.replace(served, version="2", predictor=FailsOnSecondChunk(served.predictor))
    with pytest.raises(RuntimeError, match="chunk 2"):
        run_batch(tiny_config, failing, inp, str(out), chunk_rows=100)
    assert failing.predictor.calls == 2
    # No partial file, no temp file, and the first run's predictions and summary untouched.
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before

    # Without a previous output, a crash leaves nothing at all.
    fresh = tmp_path / "fresh" / "p.parquet"
    failing.predictor.calls = 0
    with pytest.raises(RuntimeError):
        run_batch(tiny_config, failing, inp, str(fresh), chunk_rows=100)
    assert list(fresh.parent.iterdir()) == []


def test_rerun_replaces_the_output_whole(tiny_config, tmp_path):
    df = flights_frame(200)
    work = tmp_path / "work"
    work.mkdir()
    src = work / "in.parquet"
    df.to_parquet(src)
    out = work / "p.parquet"
    predict_batch(tiny_config, model="flights@production", input=str(src), output=str(out), chunk_rows=64)
    first = read(out)
    predict_batch(tiny_config, model="flights@production", input=str(src), output=str(out), chunk_rows=64)
    again = read(out)
    pd.testing.assert_frame_equal(first.drop(columns="predicted_at"), again.drop(columns="predicted_at"))
    assert again["predicted_at"].min() > first["predicted_at"].max()

    result = predict_batch(tiny_config, model="flights@staging", input=str(src), output=str(out))  # v2, bias 1
    replaced = read(out)
    assert len(replaced) == 200 and set(replaced["model_version"]) == {"2"}
    np.testing.assert_allclose(replaced["prediction"], expected(df, bias=1.0), rtol=1e-6, atol=1e-6)
    assert result.from_registry and sorted(p.name for p in work.iterdir()) == [
        "in.parquet",
        "p.parquet",
        "p.summary.json",
    ]


def test_output_to_an_object_store(tiny_config, served, tmp_path):
    import fsspec

    df = flights_frame(100)
    df.to_parquet(tmp_path / "in.parquet")
    uri = "memory://bucket/batch/predictions.parquet"
    run_batch(tiny_config, served, resolve_input(tiny_config, str(tmp_path / "in.parquet")), uri, chunk_rows=40)
    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/batch/predictions.parquet", "rb") as f:
        got = pq.read_table(f).to_pandas()
    np.testing.assert_allclose(got["prediction"], expected(df), rtol=1e-6, atol=1e-6)
    assert json.loads(fs.cat("/bucket/batch/predictions.summary.json"))["rows"] == 100
    fs.rm("/bucket", recursive=True)


# ---- bad input -----------------------------------------------------------------------------------
def test_missing_model_columns_are_named_and_nothing_is_written(tiny_config, served, tmp_path):
    src = tmp_path / "in.parquet"
    flights_frame(20).drop(columns=["hour", "carrier"]).to_parquet(src)
    out = tmp_path / "out" / "p.parquet"
    with pytest.raises(BatchInputError, match=r"missing model input column\(s\) \['carrier', 'hour'\]"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out))
    with pytest.raises(BatchInputError, match=r"missing passthrough column\(s\) \['nope'\]"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out), passthrough=["nope"])
    with pytest.raises(BatchInputError, match="clash with the output"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out), passthrough=["prediction"])
    assert not out.parent.exists()


def test_missing_feature_store_columns_without_an_online_store(tiny_registry, served, tmp_path):
    """temp and seats come from the feature store (weather, planes): an input without them fails,
    naming them, rather than being predicted on defaults."""
    from mlops.config import load_config
    from tests.support.fixtures import FLIGHTS_CONFIG

    src = tmp_path / "in.parquet"
    flights_frame(20).drop(columns=["temp", "seats"]).assign(tailnum="N1").to_parquet(src)
    out = tmp_path / "p.parquet"
    no_lookup = load_config(
        FLIGHTS_CONFIG, overrides={"artifact_root": str(tiny_registry), "serving.feature_lookup": False}
    )
    with pytest.raises(
        BatchInputError, match=r"missing feature column\(s\) \['seats', 'temp'\].*feature_lookup is false"
    ):
        run_batch(no_lookup, served, resolve_input(no_lookup, str(src)), str(out))
    never_applied = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(tiny_registry)})
    from serving.enrichment import FeatureEnricher

    enricher = FeatureEnricher(never_applied, served.predictor.inputs)
    import dataclasses

    with pytest.raises(BatchInputError, match=r"\['seats', 'temp'\].*never applied"):
        run_batch(
            never_applied,
            dataclasses.replace(served, enricher=enricher),
            resolve_input(never_applied, str(src)),
            str(out),
        )
    assert not out.exists()


def test_empty_input_and_bad_values(tiny_config, served, tmp_path):
    src = tmp_path / "in.parquet"
    flights_frame(10).iloc[:0].to_parquet(src)
    out = tmp_path / "p.parquet"
    with pytest.raises(BatchInputError, match="no rows to predict"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out))
    assert not out.exists()

    bad = flights_frame(300).astype({"distance": str})  # numbers as text are parsed; text is not a number
    bad.loc[250, "distance"] = "far"
    bad.to_parquet(src)
    with pytest.raises(BatchInputError, match=r"rows 200\.\.299: input 'distance': expected numbers, got 'far'"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out), chunk_rows=100)
    assert not out.exists()

    (tmp_path / "bad.csv").write_text("hour,distance\n1,2\n3,x\n")
    with pytest.raises(BatchInputError, match=r"missing model input column\(s\)"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(tmp_path / "bad.csv")), str(out))


def test_gaps_in_request_fields_fail_a_file_but_not_a_dataset_version(tiny_config, served, tmp_path):
    """A file follows the online rule (a request's own fields need a value; feature-store ones may
    be missing); a dataset version is taken as training took it (every gap imputed)."""
    from mlops.datasets.repository import DatasetRepository

    df = flights_frame(300)
    df.loc[::50, "temp"] = np.nan  # feature-store feature: a gap is fine everywhere
    src, out = tmp_path / "in.parquet", tmp_path / "out" / "p.parquet"
    df.to_parquet(src)
    run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out), chunk_rows=100)
    np.testing.assert_allclose(read(out)["prediction"], expected(df), rtol=1e-6, atol=1e-6)
    out.unlink()
    Path(summary_uri_for(str(out))).unlink()

    gappy = df.copy()
    gappy.loc[[120, 240], "carrier"] = None
    gappy.loc[250, "hour"] = np.nan
    gappy.to_parquet(src)
    with pytest.raises(BatchInputError, match=r"rows 100\.\.199: input 'carrier': missing value .* at row 20"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(src)), str(out), chunk_rows=100)
    gappy.to_csv(tmp_path / "in.csv", index=False, na_rep="NA")
    with pytest.raises(BatchInputError, match=r"input 'carrier': missing value"):
        run_batch(tiny_config, served, resolve_input(tiny_config, str(tmp_path / "in.csv")), str(out))
    assert list(out.parent.iterdir()) == []  # nothing written

    version, _ = DatasetRepository(tiny_config.artifact_root).write("flights", gappy, source="test", span="2013-03")
    run_batch(tiny_config, served, resolve_input(tiny_config, version.id), str(out), chunk_rows=100)
    got = read(out)
    assert len(got) == 300
    np.testing.assert_allclose(got["prediction"], expected(gappy), rtol=1e-6, atol=1e-6)  # "" / NaN imputed


def test_input_specs(tiny_config, tmp_path):
    from mlops.datasets.repository import DatasetRepository

    repo = DatasetRepository(tiny_config.artifact_root)
    jan, _ = repo.write("flights", flights_frame(30), source="test", span="2013-01")
    feb, _ = repo.write("flights", flights_frame(40, seed=1), source="test", span="2013-02")
    assert resolve_input(tiny_config, jan.id).dataset_versions == (jan,)
    assert resolve_input(tiny_config, "flights@2013-02").files == (feb.data_uri,)
    assert resolve_input(tiny_config, "flights@latest").dataset_versions == (jan, feb)  # every span
    assert resolve_input(tiny_config, "flights").dataset_versions == (jan, feb)
    for spec, message in [
        ("flights@2013-05", "span 2013-05 not ingested"),
        ("nope", "not a dataset version id"),
        (str(tmp_path / "missing.parquet"), "no such file"),
        ("", "no input"),
    ]:
        with pytest.raises(BatchInputError, match=message):
            resolve_input(tiny_config, spec)


# ---- encoding ------------------------------------------------------------------------------------
ENCODING_CASES = [
    (InputSpec("x", NUMERIC), [1, None, 3], pa.int64()),
    (InputSpec("x", NUMERIC), [1.5, None, float("nan")], pa.float64()),
    (InputSpec("x", NUMERIC), ["1.5", None, "7"], pa.string()),
    (InputSpec("x", NUMERIC), [None, None], pa.null()),
    (InputSpec("c", CATEGORICAL), ["UA", None, "", "UA"], pa.string()),
    (InputSpec("c", CATEGORICAL), ["UA", None, "DL"], pa.dictionary(pa.int32(), pa.string())),
    (InputSpec("c", CATEGORICAL), [7, None, 12], pa.int64()),
    (InputSpec("c", CATEGORICAL), [7.0, None, 2.5], pa.float64()),
    (InputSpec("c", CATEGORICAL), [b"caf\xc3\xa9", None], pa.binary()),
    (InputSpec("c", CATEGORICAL), [None, None], pa.null()),
]


@pytest.mark.parametrize("spec,values,arrow_type", ENCODING_CASES)
def test_arrow_encoding_is_the_request_checkers(spec, values, arrow_type):
    """Batch encodes whole Arrow columns; online serving checks request values one by one: the
    model must see the same thing either way."""
    arr = pa.array(values, type=arrow_type)
    pylist = [v.decode() if isinstance(v, bytes) else v for v in values]
    reference, _ = validate_rows([spec], {spec.name: np.array(pylist, dtype=object)})
    got = encode_column(spec, pa.chunked_array([arr[:1], arr[1:]]))  # chunk boundaries do not matter
    assert got.dtype == reference[spec.name].dtype
    np.testing.assert_array_equal(got, reference[spec.name])


@pytest.mark.parametrize(
    "spec,arr,message",
    [
        (InputSpec("hour", NUMERIC), pa.array([True, False]), "expected numbers"),
        (InputSpec("carrier", CATEGORICAL), pa.array([True]), "expected strings"),
        (InputSpec("hour", NUMERIC), pa.array(["7", "late"]), "'late'"),
    ],
)
def test_arrow_encoding_refuses_what_the_request_checker_refuses(spec, arr, message):
    with pytest.raises(PredictionInputError, match=message):
        encode_column(spec, arr)
    with pytest.raises(PredictionInputError):
        validate_rows([spec], {spec.name: np.array(arr.to_pylist(), dtype=object)})


# ---- payload logging -----------------------------------------------------------------------------
def test_every_prediction_is_payload_logged_without_drops(tiny_registry, served, tmp_path):
    """The logger's queue holds fewer rows than a chunk: batch waits for it rather than dropping."""
    from mlops.config import load_config
    from serving.payload_log import PayloadLogger, read_payload_logs
    from tests.support.fixtures import FLIGHTS_CONFIG

    config = load_config(
        FLIGHTS_CONFIG,
        overrides={
            "artifact_root": str(tiny_registry),
            "serving.feature_lookup": False,
            "serving.payload_log.path": str(tmp_path / "logs"),
            "serving.payload_log.queue_size": 150,
            "serving.payload_log.flush_rows": 100,
        },
    )
    df = flights_frame(1000)
    df.to_parquet(tmp_path / "in.parquet")
    logger = PayloadLogger.from_config(config)
    try:
        result = run_batch(
            config,
            served,
            resolve_input(config, str(tmp_path / "in.parquet")),
            str(tmp_path / "p.parquet"),
            chunk_rows=400,
            id_column="flight_key",
            payload_logger=logger,
        )
    finally:
        logger.close()
    stats = result.summary["payload_log"]
    assert stats["dropped_rows"] == 0 and stats["written_rows"] == 1000, stats
    logged = read_payload_logs(str(tmp_path / "logs"), "flights").sort_values("request_id")
    assert logged["request_id"].tolist() == df["flight_key"].tolist()
    assert set(logged["source"]) == {"batch"} and set(logged["version"]) == {"1"}
    np.testing.assert_allclose(logged["prediction"], expected(df), rtol=1e-6, atol=1e-6)


def test_payload_log_carries_each_rows_entity_keys_and_event_time(tiny_registry, served, tmp_path):
    """Batch logs the input's tailnum and time_hour (not model inputs) beside the inputs, row by
    row: from a parquet timestamp column and from csv text alike; a missing key is null."""
    from mlops.config import load_config
    from serving.payload_log import PayloadLogger, read_payload_logs
    from tests.support.fixtures import FLIGHTS_CONFIG

    config = load_config(
        FLIGHTS_CONFIG,
        overrides={
            "artifact_root": str(tiny_registry),
            "serving.feature_lookup": False,
            "serving.payload_log.path": str(tmp_path / "logs"),
        },
    )
    df = flights_frame(300)
    df["tailnum"] = [None if i % 50 == 7 else f"N{i:04d}" for i in range(len(df))]
    df["time_hour"] = pd.Timestamp("2013-02-01T05:00:00Z") + pd.to_timedelta(np.arange(len(df)), unit="h")
    df.to_parquet(tmp_path / "in.parquet")
    df.assign(time_hour=df["time_hour"].dt.strftime("%Y-%m-%d %H:%M:%S"), flight_key="c" + df["flight_key"]).to_csv(
        tmp_path / "in.csv", index=False
    )
    logger = PayloadLogger.from_config(config)
    try:
        for name in ("in.parquet", "in.csv"):
            run_batch(
                config,
                served,
                resolve_input(config, str(tmp_path / name)),
                str(tmp_path / f"{name}.out.parquet"),
                chunk_rows=128,
                id_column="flight_key",
                payload_logger=logger,
            )
    finally:
        logger.close()
    logged = read_payload_logs(str(tmp_path / "logs"), "flights")
    for prefix in ("f", "cf"):
        rows = logged[logged["request_id"].str.startswith(prefix)].sort_values("request_id")
        assert rows["request_id"].tolist() == [prefix[:-1] + k for k in df["flight_key"]]
        assert rows["tailnum"].tolist() == df["tailnum"].tolist(), prefix
        assert rows["time_hour"].tolist() == df["time_hour"].tolist(), prefix
        assert rows["origin"].tolist() == df["origin"].tolist()  # a key that is a model input: once
    assert "feature_origin" not in logged.columns


# ---- the serving environment ---------------------------------------------------------------------
@pytest.mark.serving_env
def test_batch_runs_in_the_serving_environment_too(tiny_config, served, tmp_path):
    """Batch runs in the pipeline image, but the serving benchmark (bench/serving.py) and a serving
    pod may call it: the same results with pyarrow 26 / NumPy 2 / TF 2.21."""
    for case in ENCODING_CASES:
        test_arrow_encoding_is_the_request_checkers(*case)
    test_chunked_run_over_part_files_keeps_row_order_ids_and_values(tiny_config, served, tmp_path)
    (tmp_path / "crash").mkdir()
    test_a_crash_mid_run_leaves_the_previous_output_whole(tiny_config, served, tmp_path / "crash")


# ---- an online store that does not answer -----------------------------------------------------
@pytest.mark.serving_env
@pytest.mark.integration
@pytest.mark.parametrize("outage", ["sqlite-unreadable", "redis-down"])
def test_an_unavailable_online_store_fails_the_run_naming_it_before_any_output(
    outage, feast_online_root, tiny_model_dirs, tmp_path
):
    """The input lacks temp and seats (the feature store's): the run needs the online store. The
    SQLite file unreadable (not a database any more), or the Redis online store not listening:
    one line naming the store, the Unavailable kind (exit 75), no output directory even."""
    import shutil

    from mlops.config import load_config
    from mlops.errors import status_of
    from serving.handle import ModelHandle
    from tests.support.fixtures import FLIGHTS_CONFIG
    from tests.support.redis_server import free_port

    root, project = feast_online_root
    copy = tmp_path / "artifacts"
    shutil.copytree(root, copy)
    overrides = {"artifact_root": str(copy), "features.project": project}
    if outage == "sqlite-unreadable":
        (copy / "feast" / "online.db").write_bytes(b"not a database " * 1000)
        named = str(copy / "feast" / "online.db")
    else:
        named = f"127.0.0.1:{free_port()}"  # nothing listens there
        overrides.update({"features.online_store": "redis", "features.redis_url": named})
    config = load_config(FLIGHTS_CONFIG, overrides=overrides)
    served = ModelHandle.from_config(config, tiny_model_dirs[1], name="flights").current
    src = tmp_path / "in.parquet"
    frame = flights_frame(50).drop(columns=["temp", "seats"])
    frame.assign(tailnum="N14228", time_hour=pd.Timestamp("2013-02-10 08:00", tz="UTC")).to_parquet(src)
    out = tmp_path / "out" / "p.parquet"

    with pytest.raises(OnlineStoreUnavailable) as caught:
        run_batch(config, served, resolve_input(config, str(src)), str(out))
    message = str(caught.value)
    assert named in message and "does not answer" in message and "nothing was written" in message
    assert "\n" not in message and status_of(caught.value).exit_code == 75
    assert not out.parent.exists()
