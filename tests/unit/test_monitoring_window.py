"""A monitoring window read and accumulated chunk by chunk (mlops.monitoring.window,
serving.payload_log.iter_payload_logs): the same exact counts and the same sample whatever the
chunk size, TFDV statistics merged over chunks equal to TFDV's on the whole frame, and a reader
that never hands over more than one chunk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_config
from mlops.monitoring.quality import QualityCounts
from mlops.monitoring.window import ChunkedStatistics, RowSample, VersionWindow, accumulate
from tests.support.fixtures import FLIGHTS_CONFIG

KINDS = {"temp": "numeric", "distance": "numeric", "carrier": "categorical", "dest": "categorical"}
VOCABULARIES = {"carrier": {"UA", "AA", "DL"}, "dest": {"ATL", "ORD", "LAX", "BOS"}}
GROUPS = {"weather": ["temp"], "routes": ["distance", "dest"]}


def window_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    temp = rng.normal(50, 10, n).astype(np.float32)
    temp[rng.random(n) < 0.03] = np.nan
    distance = rng.lognormal(6.5, 0.5, n).astype(np.float32)
    dest = rng.choice(np.array(["ATL", "ORD", "LAX", "BOS", "SEA", "", None], dtype=object), n)
    routes_missing = rng.random(n) < 0.02  # a store group served with defaults: all its features missing
    distance[routes_missing] = np.nan
    dest[routes_missing] = ""
    return pd.DataFrame(
        {
            "version": rng.choice(["1", "2"], n, p=[0.8, 0.2]),
            "source": rng.choice(["online", "batch"], n),
            "temp": temp,
            "distance": distance,
            "carrier": rng.choice(np.array(["UA", "AA", "DL", "WN", None], dtype=object), n),
            "dest": dest,
            "prediction": rng.random(n),
        }
    )


def chunks(frame: pd.DataFrame, size: int):
    for i in range(0, len(frame), size):
        yield frame.iloc[i : i + size].reset_index(drop=True)


def accumulated(frame: pd.DataFrame, chunk_rows: int, sample_rows: int) -> dict[str, VersionWindow]:
    windows = {
        v: VersionWindow(KINDS, VOCABULARIES, GROUPS, extra=("prediction",), sample_rows=sample_rows)
        for v in ("1", "2")
    }
    return accumulate(chunks(frame, chunk_rows), windows, seed=7)


def summary(window: VersionWindow) -> dict:
    return {
        "rows": window.rows,
        "present": window.present,
        "categories": window.categories,
        "sources": window.sources,
        "quality": [q.to_json() for q in window.quality.features()],
        "defaults": window.quality.store_defaults(),
    }


@pytest.mark.parametrize(("chunk_rows", "rows"), [(1, 800), (7, 2_000), (1000, 20_000), (4096, 20_000)])
def test_counts_and_sample_do_not_depend_on_the_chunk_size(chunk_rows, rows):
    frame = window_rows(rows)
    whole = accumulated(frame, len(frame), sample_rows=100)
    chunked = accumulated(frame, chunk_rows, sample_rows=100)
    for version in ("1", "2"):
        assert summary(chunked[version]) == summary(whole[version])
        pd.testing.assert_frame_equal(chunked[version].sample.frame(), whole[version].sample.frame())
        assert len(chunked[version].sample.frame()) == 100  # never more than sample_rows rows kept


def test_counts_are_exact():
    frame = window_rows(20_000)
    window = accumulated(frame, 999, sample_rows=100)["1"]
    rows = frame[frame["version"] == "1"]
    assert window.rows == len(rows)
    assert window.sources == rows["source"].value_counts().to_dict()
    assert window.present["temp"] == rows["temp"].notna().sum()
    present_dest = rows["dest"][rows["dest"].notna() & (rows["dest"] != "")]
    assert window.categories["dest"] == present_dest.value_counts().to_dict()
    quality = {q.feature: q for q in window.quality.features()}
    assert quality["temp"].missing_rate == rows["temp"].isna().mean()
    assert quality["dest"].oov_rate == (present_dest == "SEA").mean() and quality["dest"].oov_examples == ["SEA"]
    assert quality["carrier"].oov_examples == ["WN"]
    routes_all_missing = rows["distance"].isna() & (rows["dest"].isna() | (rows["dest"] == ""))
    defaults = window.quality.store_defaults()
    assert defaults["routes"] == routes_all_missing.sum() > 0
    assert defaults["weather"] == rows["temp"].isna().sum()
    assert defaults["any"] == (routes_all_missing | rows["temp"].isna()).sum()


def test_the_row_sample_is_uniform_over_the_window():
    """Bottom-k keys: a row early in the window is as likely to be kept as a late one."""
    n, size = 100_000, 2_000
    frame = pd.DataFrame({"position": np.arange(n, dtype=np.float64)})
    sample = RowSample(size)
    rng = np.random.default_rng(3)
    for part in chunks(frame, 4096):
        sample.add(part, rng.random(len(part)))
    kept = sample.frame()["position"].to_numpy()
    assert len(kept) == size and len(np.unique(kept)) == size  # without replacement
    shares = np.histogram(kept, bins=10, range=(0, n))[0] / size
    assert np.abs(shares - 0.1).max() < 0.03  # each tenth of the window ~10% of the sample


def test_tfdv_statistics_merged_over_chunks_equal_tfdvs_on_the_whole_frame():
    from mlops.validation.statistics import compute_statistics, feature_summary

    config = load_config(FLIGHTS_CONFIG)
    rng = np.random.default_rng(5)
    n = 30_000
    frame = pd.DataFrame(
        {
            "temp": np.where(rng.random(n) < 0.05, np.nan, rng.normal(50, 10, n)).astype(np.float32),
            "carrier": rng.choice(np.array(["UA", "AA", "DL", ""], dtype=object), n),
        }
    )
    chunked = ChunkedStatistics(config, "serving")
    for part in chunks(frame, 4_000):
        chunked.add(part)
    merged = feature_summary(chunked.result())
    whole = feature_summary(compute_statistics(frame, config, "serving", sample_rate=1.0))
    assert set(merged) == set(whole) == {"temp", "carrier"}
    for name in merged:
        for key, value in whole[name].items():
            if isinstance(value, float):
                assert merged[name][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key)
            else:
                assert merged[name][key] == value, (name, key)


def test_quality_counts_without_the_group_columns_report_only_any():
    counts = QualityCounts({"temp": "numeric"}, {}, {"weather": ["temp"], "planes": ["seats"]})
    counts.add(pd.DataFrame({"temp": [np.nan, 1.0, np.nan]}))
    assert counts.store_defaults() == {"weather": 2, "any": 2}  # no `planes` column: not reported
    counts.add(pd.DataFrame({"temp": [1.0], "feature_defaults": [True]}))
    assert counts.store_defaults() == {"any": 1}  # a logged mark is counted instead


def test_the_payload_log_reader_hands_over_one_chunk_at_a_time(tmp_path):
    """iter_payload_logs yields at most batch_rows rows per batch, only rows of the window, and
    all of them: together what read_payload_logs returns (files lacking a column: nulls)."""
    from serving.payload_log import (
        ParquetSink,
        PayloadLogger,
        iter_payload_logs,
        payload_log_files,
        read_payload_logs,
    )

    root = str(tmp_path / "logs")
    t0 = pd.Timestamp("2024-03-05T10:00:00Z").timestamp()
    logger = PayloadLogger(ParquetSink(root), flush_rows=1_000, flush_seconds=60)
    rng = np.random.default_rng(0)
    for i in range(12):  # 12 calls of 500 rows over 6 hours; from call 6 on a new key column
        keys = {"tailnum": np.array([f"N{i}"] * 500, dtype=object)} if i >= 6 else None
        logger.log(
            model="flights",
            version="1",
            source="online",
            request_ids=[f"r{i}-{j}" for j in range(500)],
            features={"hour": np.full(500, i, np.float32), "temp": rng.normal(size=500).astype(np.float32)},
            predictions=rng.random(500).astype(np.float32),
            timestamp=t0 + i * 1800,
            keys=keys,
        )
        logger.flush()
    logger.close()
    start, end = t0 + 1800, t0 + 10 * 1800  # calls 1..9
    files = payload_log_files(root, "flights", start, end)
    batches = list(iter_payload_logs(files, start, end, batch_rows=128))
    assert max(len(b) for b in batches) <= 128 and sum(len(b) for b in batches) == 9 * 500
    together = pd.concat(batches, ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, read_payload_logs(root, "flights", start, end))
    assert sorted(together["hour"].unique()) == list(range(1, 10))  # the partition-named feature, by its name
    assert together["tailnum"].isna().sum() == 5 * 500  # calls 1..5 had no key column
    only = next(iter_payload_logs(files, start, end, columns=["version", "prediction", "nothing"], batch_rows=64))
    assert list(only.columns) == ["version", "prediction"]


def test_the_payload_log_reader_joins_small_files_into_full_batches(tmp_path):
    """A logger that flushes every few seconds leaves many files of a few rows: the reader joins
    them, so a window of 60 files of 7 rows comes in batches of batch_rows (the last one shorter),
    not one batch per file, with every row once."""
    from serving.payload_log import ParquetSink, PayloadLogger, iter_payload_logs, payload_log_files

    root = str(tmp_path / "logs")
    t0 = pd.Timestamp("2024-03-05T10:00:00Z").timestamp()
    logger = PayloadLogger(ParquetSink(root), flush_rows=1_000, flush_seconds=60)
    for i in range(60):
        logger.log(
            model="flights",
            version="1",
            source="online",
            request_ids=[f"r{i}-{j}" for j in range(7)],
            features={"hour": np.full(7, 10, np.float32)},
            predictions=np.full(7, 0.5, np.float32),
            timestamp=t0 + i * 10,
        )
        logger.flush()
    logger.close()
    files = payload_log_files(root, "flights", t0, t0 + 3600)
    assert len(files) == 60
    sizes = [len(b) for b in iter_payload_logs(files, t0, t0 + 3600, batch_rows=100)]
    assert sizes == [98, 98, 98, 98, 28]  # 14 files of 7 rows fill 98 of 100; 420 rows in all
    ids = pd.concat(iter_payload_logs(files, t0, t0 + 3600, batch_rows=100))["request_id"]
    assert ids.is_unique and len(ids) == 420
