"""`mlops deploy`: the rendered InferenceService of a registry version, its canary (Knative
canaryTrafficPercent; Standard mode: two InferenceServices behind an InferenceGraph Splitter) and
shadow (Istio VirtualService mirror) variants, promote and rollback, all validated strictly
against the real CRDs (tests/unit/test_manifests.py's validator)."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from cli.main import cli as mlops
from mlops.registry.store import ModelRegistry
from tests.support.k8s_validation import needs_shared, validate


def _isvcs(docs):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "InferenceService"}


def _storage_uri(isvc) -> str:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}["STORAGE_URI"]


def validate_istio_virtual_service(doc: dict) -> None:
    """Istio's CRDs are not in ../shared/crds: the shape the mirror needs, checked minimally
    (apiVersion/kind, hosts, one http route with a 100 % destination, mirror host and percentage)."""
    assert doc["apiVersion"] == "networking.istio.io/v1" and doc["kind"] == "VirtualService"
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert set(spec) == {"hosts", "http"} and all(isinstance(h, str) for h in spec["hosts"])
    (http,) = spec["http"]
    assert set(http) == {"route", "mirror", "mirrorPercentage"}
    assert sum(r["weight"] for r in http["route"]) == 100
    assert set(http["mirror"]) == {"host"} and isinstance(http["mirrorPercentage"]["value"], float)


@pytest.fixture
def registry(tmp_path):
    """flights v1 = production, v2 = staging (model directories with a serving_model/ only)."""
    root = tmp_path / "artifacts"
    reg = ModelRegistry(str(root))
    for v in (1, 2):
        model_dir = tmp_path / f"model{v}"
        (model_dir / "serving_model").mkdir(parents=True)
        reg.register(
            "flights",
            str(model_dir),
            metrics={"auc": 0.7},
            blessing={"blessed": True, "reason": "test"},
            dataset_versions=["test"],
            config_hash="test",
            git_commit="test",
            task="binary_classification",
            output_key="probability",
            features=[{"name": "hour", "dtype": "float"}],
        )
    reg.promote("flights", 1, "production", reason="test")
    reg.artifact_root = str(root)
    return reg


def deploy(registry, *args: str, code: int = 0):
    result = CliRunner().invoke(
        mlops, ["deploy", *args, "--set", f"artifact_root={json.dumps(registry.artifact_root)}"]
    )
    assert result.exit_code == code, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d] if code == 0 else result.output


@needs_shared
def test_a_version_alone_renders_with_its_storage_uri_and_validates(registry):
    for overlay in ("local-kind", "production"):
        docs = deploy(registry, "flights@2", "--overlay", overlay)
        (isvc,) = _isvcs(docs).values()
        assert _storage_uri(isvc) == registry.get("flights", 2).uri
        assert isvc["metadata"]["labels"]["mlops.io/model-version"] == "2"
        for doc in docs:
            validate(doc)


@needs_shared
def test_knative_canary_uses_canary_traffic_percent(registry):
    docs = deploy(registry, "flights@2", "--overlay", "production", "--canary-percent", "10")
    (isvc,) = _isvcs(docs).values()
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert _storage_uri(isvc) == registry.get("flights", 2).uri
    assert isvc["metadata"]["labels"]["mlops.io/stable-version"] == "1"
    validate(isvc)


@needs_shared
def test_standard_mode_canary_is_an_inference_graph_splitter_over_two_services(registry):
    docs = deploy(registry, "flights@2", "--overlay", "local-kind", "--canary-percent", "25")
    isvcs = _isvcs(docs)
    assert set(isvcs) == {"flights", "flights-canary"}
    assert _storage_uri(isvcs["flights"]) == registry.get("flights", 1).uri  # production stays
    assert _storage_uri(isvcs["flights-canary"]) == registry.get("flights", 2).uri
    assert "canaryTrafficPercent" not in isvcs["flights"]["spec"]["predictor"]  # Standard: no Knative split
    (graph,) = [d for d in docs if d["kind"] == "InferenceGraph"]
    root = graph["spec"]["nodes"]["root"]
    assert root["routerType"] == "Splitter"
    assert {s["serviceName"]: s["weight"] for s in root["steps"]} == {"flights": 75, "flights-canary": 25}
    for doc in docs:
        validate(doc)
    typo = copy.deepcopy(graph)
    typo["spec"]["nodes"]["root"]["steps"][0]["weigth"] = 1
    with pytest.raises(jsonschema.ValidationError, match="weigth"):
        validate(typo)


@needs_shared
def test_shadow_is_an_istio_mirror_in_the_serverless_overlay(registry):
    docs = deploy(registry, "flights@2", "--overlay", "production", "--shadow")
    isvcs = _isvcs(docs)
    assert _storage_uri(isvcs["flights"]) == registry.get("flights", 1).uri
    assert _storage_uri(isvcs["flights-shadow"]) == registry.get("flights", 2).uri
    (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
    validate_istio_virtual_service(vs)
    assert vs["spec"]["http"][0]["mirror"]["host"].startswith("flights-shadow-predictor.mlops.")
    for doc in docs:
        if doc["kind"] != "VirtualService":
            validate(doc)
    broken = copy.deepcopy(vs)
    broken["spec"]["http"][0]["mirror_percent"] = 100
    with pytest.raises(AssertionError):
        validate_istio_virtual_service(broken)


def test_bad_deploy_input_is_one_line_and_changes_nothing(registry):
    before = registry.aliases("flights")
    assert "--canary-percent: 150" in deploy(registry, "flights@2", "--canary-percent", "150", code=2)
    assert "--shadow" in deploy(registry, "flights@2", "--overlay", "local-kind", "--shadow", code=2)
    assert "already production" in deploy(registry, "flights@1", "--canary-percent", "5", code=2)
    assert "9" in deploy(registry, "flights@9", code=1)
    assert registry.aliases("flights") == before


def test_promote_then_rollback_move_production_and_render_it(registry):
    (isvc,) = _isvcs(deploy(registry, "promote", "flights")).values()
    assert registry.aliases("flights")["production"] == 2 and _storage_uri(isvc) == registry.get("flights", 2).uri
    (isvc,) = _isvcs(deploy(registry, "rollback", "flights")).values()
    assert registry.aliases("flights")["production"] == 1 and _storage_uri(isvc) == registry.get("flights", 1).uri
