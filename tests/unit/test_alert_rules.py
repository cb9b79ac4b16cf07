"""The alerting rules (manifests/monitoring/rules.yml): valid for Prometheus 2.42 (`promtool check
rules`), each alert raised by its input series and silent otherwise (`promtool test rules`), the
PrometheusRule manifest generated from the same file, thresholds in step with the model server's
limits, and every metric a rule reads exported by the platform."""

from __future__ import annotations

import re
import runpy

import pytest
import yaml

from tests.support.fixtures import REPO
from tests.support.prometheus import needs_prometheus, promtool

RULES_DIR = REPO / "manifests" / "monitoring"
RULES = RULES_DIR / "rules.yml"
RULE_TESTS = ("rules_test.yml", "rules_test_days.yml")
RENDER = runpy.run_path(str(REPO / "scripts" / "render_prometheus_rules.py"))
# Where each metric family the rules read is exported (the source must name it in quotes).
EXPORTERS = (
    "serving/metrics.py",
    "mlops/monitoring/prometheus.py",
    "components/monitor/live_evaluation.py",
    "mlops/training_metrics.py",
)
ISSUE_ALERTS = {
    "MlopsServingErrorRate",
    "MlopsServingLatencyP99",
    "MlopsServingNoTraffic",
    "MlopsPayloadLogDrops",
    "MlopsFeatureDefaultRate",
    "MlopsServingCpuSaturation",
    "MlopsServingMemorySaturation",
    "MlopsFeatureDrift",
    "MlopsEstimatedAucLow",
    "MlopsLiveAucLow",
    "MlopsConceptDrift",
    "MlopsCbpeUnreliable",
    "MlopsLabelLag",
    "MlopsMonitoringStale",
    "MlopsNoSuccessfulTraining",
}


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for r in rules() if "alert" in r}


@needs_prometheus
def test_promtool_checks_the_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_prometheus
def test_promtool_sees_a_broken_rule(tmp_path):
    broken = yaml.safe_load(RULES.read_text())
    broken["groups"][0]["rules"][1]["expr"] = "sum by (namespace (rate(x[5m]))"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(broken))
    done = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert done.returncode != 0 and "MlopsServingErrorRate" in done.stdout + done.stderr


@needs_prometheus
def test_promtool_rule_unit_tests_pass():
    done = promtool("test", "rules", *RULE_TESTS, cwd=RULES_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        t["alertname"]
        for name in RULE_TESTS
        for case in yaml.safe_load((RULES_DIR / name).read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert tested == set(alerts()), "every alert has a promtool test where it fires"


@needs_prometheus
def test_promtool_rule_tests_fail_on_a_wrong_expectation(tmp_path):
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    doc = yaml.safe_load((RULES_DIR / "rules_test.yml").read_text())
    drift = next(c for c in doc["tests"] if c["name"].startswith("drift"))
    drift["input_series"][0]["values"] = "0 0 0 0 0"  # version 3 never drifts: its expected alert is missing
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc))
    done = promtool("test", "rules", "t.yml", cwd=tmp_path)
    assert done.returncode != 0 and "MlopsFeatureDrift" in done.stdout + done.stderr


def test_the_issue_alerts_are_all_there():
    assert set(alerts()) == ISSUE_ALERTS


def test_the_manifest_is_generated_from_the_rules_file():
    manifest = (REPO / "manifests" / "base" / "monitoring.yaml").read_text()
    assert RENDER["render"](manifest) == manifest, "run python scripts/render_prometheus_rules.py"
    docs = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "PrometheusRule"]
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [d["spec"]["groups"] for d in docs] == [[g] for g in groups]
    assert [d["metadata"]["name"] for d in docs] == [g["name"] for g in groups]
    # an edited rules file changes the manifest: they cannot drift apart unnoticed
    edited = RULES.read_text().replace("> 0.01", "> 0.02", 1)
    assert "> 0.02" in RENDER["render"](manifest, _write(edited))


def _write(text: str):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "rules.yml"
    path.write_text(text)
    return path


def test_every_metric_a_rule_reads_is_exported():
    sources = "\n".join((REPO / p).read_text() for p in EXPORTERS)
    read = set()
    for rule in rules():
        for name in re.findall(r"\b([a-z_]+?)(?:_total|_bucket)?\b(?=\s*[{\[)])", rule["expr"]):
            if name.startswith(("mlops_", "process_")):
                read.add(name)
    assert {"mlops_monitoring_drift_detected", "mlops_training_last_success_timestamp_seconds"} <= read
    for name in read:
        if name.startswith("process_"):  # prometheus_client's process collector (the model server)
            continue
        assert f'"{name}"' in sources, f"{name}: no exporter in {EXPORTERS}"


def test_retraining_alerts_name_the_model_version():
    """Alertmanager routes `action: retrain` to the receiver, which needs model and version."""
    retrain = {name for name, r in alerts().items() if r.get("labels", {}).get("action") == "retrain"}
    assert retrain == {"MlopsFeatureDrift", "MlopsEstimatedAucLow", "MlopsLiveAucLow", "MlopsConceptDrift"}
    for name in retrain:
        assert "by (model, version)" in alerts()[name]["expr"], name


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(text[:-2]) * units[text[-2:]] if text[-2:] in units else float(text)


def test_saturation_thresholds_are_90_percent_of_the_model_server_limits():
    isvc = next(
        d
        for d in yaml.safe_load_all((REPO / "manifests" / "base" / "inferenceservice.yaml").read_text())
        if d and d["kind"] == "InferenceService"
    )
    limits = isvc["spec"]["predictor"]["containers"][0]["resources"]["limits"]
    cpu = re.search(r"> 0\.9 \* (\d+)\)", alerts()["MlopsServingCpuSaturation"]["expr"])
    memory = re.search(r"> 0\.9 \* (\d+) \* 2\^30\)", alerts()["MlopsServingMemorySaturation"]["expr"])
    assert cpu and float(cpu.group(1)) == _quantity(str(limits["cpu"]))
    assert memory and float(memory.group(1)) * 2**30 == _quantity(limits["memory"])


@pytest.mark.parametrize("name", sorted(ISSUE_ALERTS))
def test_every_alert_says_what_and_how_bad(name):
    rule = alerts()[name]
    assert rule["labels"]["severity"] in ("page", "warn")
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
