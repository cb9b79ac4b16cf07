"""SchemaGen without KFP: inferred vs curated schema, conventions, the committed curated schema."""

import json

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from components.schema_gen.executor import SchemaGenError, generate_schema, run
from components.statistics_gen.executor import generate as generate_statistics
from mlops.config import load_config
from mlops.metadata.store import open_store
from mlops.validation.schema import SchemaError, feature, load_schema
from mlops.validation.statistics import compute_statistics
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import flights_frame, split_positions, write_split_frames

INFERRED = {
    "validation.schema_path": None,
    "validation.categorical_drift_linf": 0.2,
    "validation.numeric_drift_js": 0.15,
    "validation.skew_linf": 0.05,
}


@pytest.fixture
def statistics_dir(artifact_root, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG)
    frames = split_positions(flights_frame(cfg, n=3000, span="2013-07", seed=11))
    examples = write_split_frames(str(tmp_path / "examples"), frames)
    return generate_statistics(cfg, examples, str(tmp_path / "statistics")).out_dir


def test_inferred_schema_has_environments_and_config_comparators(artifact_root, statistics_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides=INFERRED)
    path, source = generate_schema(cfg, statistics_dir, str(tmp_path / "schema"))
    assert source == "inferred" and path == str(tmp_path / "schema" / "schema.pbtxt")
    schema = tfdv.load_schema_text(path)  # TFDV's own reader: the header comment is fine
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    label = feature(schema, "is_delayed")
    assert list(label.not_in_environment) == ["SERVING"] and not label.HasField("skew_comparator")
    assert label.drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.15)
    carrier, hour = feature(schema, "carrier"), feature(schema, "hour")
    assert carrier.drift_comparator.infinity_norm.threshold == pytest.approx(0.2)
    assert carrier.skew_comparator.infinity_norm.threshold == pytest.approx(0.05)
    assert hour.drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.15)
    assert hour.drift_comparator.jensen_shannon_divergence.source.type == schema_pb2.HistogramSelection.QUANTILES
    assert hour.skew_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.05)
    # inferred string domains tolerate rare unseen values (1%)
    assert carrier.distribution_constraints.min_domain_mass == pytest.approx(0.99)
    assert {f.name for f in schema.feature} == {f.name for f in cfg.dataset.features} | {"is_delayed"}
    text = (tmp_path / "schema" / "schema.pbtxt").read_text()
    assert text.startswith("# INFERRED by schema_gen")
    info = json.loads((tmp_path / "schema" / "schema.json").read_text())
    assert info["source"] == "inferred" and info["inferred_from"].endswith("train.stats.pb")
    assert "| carrier | BYTES | required |" in (tmp_path / "schema" / "schema.md").read_text()
    assert "<td>carrier</td>" in (tmp_path / "schema" / "index.html").read_text()
    # serving data (no label) is valid in SERVING, not in TRAINING
    serving = compute_statistics(flights_frame(cfg, n=500, span="2013-07", seed=12).drop(columns=["is_delayed"]), cfg)
    assert "is_delayed" not in tfdv.validate_statistics(serving, schema, environment="SERVING").anomaly_info
    assert "is_delayed" in tfdv.validate_statistics(serving, schema, environment="TRAINING").anomaly_info


def test_curated_schema_is_used_when_present(artifact_root, statistics_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG)
    assert cfg.validation.schema_path.endswith("configs/schemas/flights.schema.pbtxt")
    path, source = generate_schema(cfg, statistics_dir, str(tmp_path / "schema"))
    assert source == "curated"
    schema, curated = load_schema(path), load_schema(cfg.validation.schema_path)
    assert [f.name for f in schema.feature] == [f.name for f in curated.feature]
    assert len(next(d for d in schema.string_domain if d.name == "dest").value) == 104
    # curated per-feature overrides win; every other feature gets the config's thresholds
    assert feature(schema, "month").drift_comparator.infinity_norm.threshold == 1.0
    assert feature(schema, "seats").drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.3)
    assert feature(schema, "temp").drift_comparator.jensen_shannon_divergence.threshold == pytest.approx(0.1)
    assert feature(schema, "dest").skew_comparator.infinity_norm.threshold == pytest.approx(0.1)
    info = json.loads((tmp_path / "schema" / "schema.json").read_text())
    assert info["curated_path"] == cfg.validation.schema_path and len(info["curated_sha256"]) == 64
    assert "curated schema" in (tmp_path / "schema" / "schema.pbtxt").read_text().splitlines()[0]


def test_missing_curated_file_falls_back_to_inference_with_a_note(artifact_root, statistics_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides={"validation.schema_path": str(tmp_path / "nope.pbtxt")})
    _, source = generate_schema(cfg, statistics_dir, str(tmp_path / "schema"))
    assert source == "inferred"
    assert "nope.pbtxt does not exist" in json.loads((tmp_path / "schema" / "schema.json").read_text())["note"]


def test_curated_schema_must_cover_the_configured_features(artifact_root, statistics_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG)
    schema = load_schema(cfg.validation.schema_path)
    del schema.feature[[f.name for f in schema.feature].index("temp")]
    broken = tmp_path / "broken.pbtxt"
    tfdv.write_schema_text(schema, str(broken))
    cfg = load_config(FLIGHTS_CONFIG, overrides={"validation.schema_path": str(broken)})
    with pytest.raises(SchemaError, match=r"lacks configured feature\(s\) \['temp'\]"):
        generate_schema(cfg, statistics_dir, str(tmp_path / "schema"))


def test_no_train_statistics_to_infer_from(artifact_root, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides=INFERRED)
    with pytest.raises(SchemaGenError, match="no train.stats.pb"):
        generate_schema(cfg, str(tmp_path / "empty"), str(tmp_path / "schema"))


@pytest.mark.parametrize("span", ["2013-01", "2013-07", "2013-12"])
def test_committed_curated_schema_accepts_real_months(artifact_root, span):
    """The curated schema must not fail normal data: real flights of winter and summer."""
    cfg = load_config(FLIGHTS_CONFIG)
    schema = load_schema(cfg.validation.schema_path)
    stats = compute_statistics(flights_frame(cfg, n=3000, span=span, seed=5), cfg)
    anomalies = tfdv.validate_statistics(stats, schema, environment="TRAINING")
    assert dict(anomalies.anomaly_info) == {}


def test_run_records_lineage(artifact_root, statistics_dir, tmp_path):
    cfg = load_config(FLIGHTS_CONFIG, overrides=INFERRED)
    run(cfg, statistics_dir, str(tmp_path / "inferred"), pipeline="p", run_id="run-1")
    curated_cfg = load_config(FLIGHTS_CONFIG)
    run(curated_cfg, statistics_dir, str(tmp_path / "curated"), pipeline="p", run_id="run-2")
    store = open_store(cfg)
    schemas = {a.uri: a for a in store.list_artifacts("Schema")}
    assert schemas[str(tmp_path / "inferred")].properties["source"] == "inferred"
    assert schemas[str(tmp_path / "curated")].properties["source"] == "curated"
    # an inferred schema depends on the statistics; a curated one does not
    assert len(store.list_artifacts("Statistics")) == 1
    assert {e.state for e in store.list_executions()} == {"COMPLETE"}


def test_component_compiles(tmp_path):
    from kfp import compiler, dsl

    from components.schema_gen.component import schema_gen
    from pipelines.runner import load_ir_strict

    @dsl.pipeline(name="schema-gen-check")
    def p(statistics_uri: str = "/tmp/statistics"):
        stats = dsl.importer(artifact_uri=statistics_uri, artifact_class=dsl.Artifact, reimport=False)
        schema_gen(
            config_path="configs/flights.yaml",
            config_overrides="",
            artifact_root="",
            pipeline_name="p",
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            statistics=stats.output,
        )

    compiler.Compiler().compile(p, str(tmp_path / "p.yaml"))
    spec = load_ir_strict(tmp_path / "p.yaml")
    outputs = spec.components["comp-schema-gen"].output_definitions.artifacts
    assert outputs["schema_summary"].artifact_type.schema_title == "system.Markdown"
