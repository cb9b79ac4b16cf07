"""A second dataset by config alone (tests/configs/sensor_events.yaml): unix-second event times and
columns present in about 1 row in 1,000, through ingest, ExampleGen, StatisticsGen, SchemaGen and
ExampleValidator (the executors, plain Python), with no feature store and no workaround."""

import json

import numpy as np
import pandas as pd
import pytest

from components.example_gen.executor import run_example_gen
from components.example_validator.executor import validate
from components.schema_gen.executor import build as build_schema
from components.statistics_gen.executor import generate as generate_statistics
from mlops.config import load_config
from mlops.datasets.ingest import ingest
from mlops.datasets.repository import DatasetRepository
from mlops.validation.schema import feature, load_schema
from tests.support.fixtures import REPO
from tests.support.sensor_data import CONFIG, sensor_events


@pytest.fixture
def sensor_config(artifact_root, tmp_path, monkeypatch):
    source = tmp_path / "sensor_events.csv"
    sensor_events().to_csv(source, index=False)
    monkeypatch.setenv("SENSOR_EVENTS_SOURCE", str(source))
    return load_config(CONFIG)


def test_epoch_seconds_and_sparse_columns_pass_every_step(sensor_config, tmp_path, capsys):
    cfg = sensor_config
    result = ingest(cfg)
    stored = DatasetRepository(cfg.artifact_root).load(result.dataset)
    assert str(stored["observed_at"].dtype) == "datetime64[ns, UTC]"
    source = sensor_events().set_index("reading_id")["observed_at"]
    seconds = stored.set_index("reading_id")["observed_at"].astype("int64") // 10**9
    assert seconds.sort_index().tolist() == source.sort_index().tolist()  # to the second, not read as nanoseconds
    assert stored["observed_at"].max() < pd.Timestamp("2021-03-01", tz="UTC")  # 2,000 half hours: ~42 days
    assert result.dataset.manifest["time_range"][0].startswith("2021-01-01T00:00:")

    examples = run_example_gen(cfg, "latest", str(tmp_path / "examples"))
    assert examples.splits == {"train": 1600, "eval": 200, "test": 200}
    statistics = generate_statistics(cfg, str(tmp_path / "examples"), str(tmp_path / "statistics"))
    info = build_schema(cfg, statistics.out_dir, str(tmp_path / "schema"))

    # Presence inferred from what was seen: the sparse columns are optional, the rest required.
    assert info.source == "inferred"
    schema = load_schema(info.schema_path)
    for name in ("gust", "fault_code"):
        presence = feature(schema, name).presence
        assert (presence.min_fraction, presence.min_count) == (0.0, 0)
    assert feature(schema, "temperature").presence.min_fraction == 1.0
    assert info.optional_features == {"gust": pytest.approx(1 / 1600), "fault_code": pytest.approx(1 / 1600)}
    # fault_code's domain is the one value seen in train (E7); eval's E2 is no anomaly
    assert feature(schema, "fault_code").distribution_constraints.min_domain_mass == 0.0

    # The inferred schema is written out for review, with where to commit it.
    expected_home = str(REPO / "tests" / "configs" / "schemas" / "sensor_events.schema.pbtxt")
    recorded = json.loads((tmp_path / "schema" / "schema.json").read_text())
    assert recorded["curate_to"] == expected_home and recorded["schema_path"] == info.schema_path
    printed = capsys.readouterr().out
    assert info.schema_path in printed and expected_home in printed
    assert "validation.schema_path: schemas/sensor_events.schema.pbtxt" in printed and "gust (0.06%)" in printed

    validation = validate(cfg, statistics.out_dir, str(tmp_path / "schema"), str(tmp_path / "validation"))
    assert validation.ok and not validation.should_fail, validation.all_anomalies


def test_partially_present_feature_gets_a_min_fraction_from_what_was_seen(sensor_config, tmp_path):
    """Present in ~30% of rows: not rare, so a split where it disappears is still an anomaly."""
    cfg = sensor_config
    df = sensor_events()
    df["gust"] = np.where(df.index % 10 < 3, 25.0, np.nan)
    df.to_csv(cfg.dataset.source.uri, index=False)
    ingest(cfg)
    run_example_gen(cfg, "latest", str(tmp_path / "examples"))
    statistics = generate_statistics(cfg, str(tmp_path / "examples"), str(tmp_path / "statistics"))
    info = build_schema(cfg, statistics.out_dir, str(tmp_path / "schema"))
    gust = feature(load_schema(info.schema_path), "gust").presence
    assert gust.min_count == 1 and 0.1 < gust.min_fraction < 0.2  # half the ~30% seen in train
