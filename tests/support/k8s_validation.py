"""Kubernetes manifests checked offline: `kubectl kustomize` rendering, core kinds against
Kubernetes' own schemas (kubernetes-validate, strict), custom resources against strict JSON Schemas
built from the real CRDs in ../shared/crds (KServe, Kubeflow Pipelines, prometheus-operator, Feast
operator). Used by the manifest, deploy and dashboard tests."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.fixtures import REPO

SHARED = REPO.parent / "shared"
CRDS = SHARED / "crds"
# The Kubernetes version the README names for the manifests.
KUBERNETES_VERSION = "1.32"

needs_shared = pytest.mark.skipif(not CRDS.exists(), reason="shared/crds is not beside this checkout")


def kustomize(path: Path | str, tmp_dir: Path) -> list[dict]:
    """`kubectl kustomize PATH` with an empty kubeconfig: rendering never talks to a cluster."""
    kubeconfig = tmp_dir / "kubeconfig"
    kubeconfig.write_text("")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(
        ["kubectl", "kustomize", str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {path}: {done.stderr.strip()}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


# --- strict JSON Schema from a CRD -------------------------------------------------------------


def strict_schema(node: dict) -> dict:
    """A CRD's structural OpenAPI v3 schema as a JSON Schema that rejects unknown fields: what the
    API server would prune silently (a typo) is an error here."""
    node = dict(node)
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    int_or_string = node.pop("x-kubernetes-int-or-string", False)
    nullable = node.pop("nullable", False)
    for key in [k for k in node if k.startswith("x-kubernetes-")]:
        del node[key]
    if "pattern" in node:
        node["pattern"] = python_regex(node["pattern"])
    if "properties" in node:
        node["properties"] = {k: strict_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = strict_schema(node["additionalProperties"])
    if "items" in node:
        node["items"] = strict_schema(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in node:
            node[key] = [strict_schema(s) for s in node[key]]
    if "not" in node:
        node["not"] = strict_schema(node["not"])
    if int_or_string:
        node.pop("type", None)
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("type") == "object" and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if nullable:
        node = {"anyOf": [node, {"type": "null"}]}
    return node


def python_regex(pattern: str) -> str:
    """A CRD pattern (Go RE2) for Python's re: RE2 allows inline flags after `^` (`^(?i)...`)."""
    moved = re.sub(r"^\^\(\?([a-z]+)\)", r"(?\1)^", pattern)
    re.compile(moved)  # anything else RE2-only fails here, loudly
    return moved


# libyaml's safe loader when PyYAML has it: the CRDs are ~4 MB of YAML (seconds in pure Python).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, for every served version of every CRD in shared/crds."""
    schemas = {}
    for path in sorted(CRDS.rglob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = strict_schema(version["schema"]["openAPIV3Schema"])
                # metadata is ObjectMeta, validated by the API server itself
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    """The Draft 7 validator of a CRD's strict schema, the schema itself checked once (as
    jsonschema.validate checks it on every call)."""
    schema = crd_schemas().get((api_version, kind))
    if schema is None:
        return None
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_custom_resource(doc: dict) -> None:
    validator = crd_validator(doc["apiVersion"], doc["kind"])
    if validator is None:
        raise AssertionError(f"{doc['apiVersion']} {doc['kind']}: neither a core kind nor a CRD in {CRDS}")
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))  # the error jsonschema.validate raises
    if error is not None:
        raise error


def validate(doc: dict) -> None:
    """Core kinds against Kubernetes' own schemas (strict), custom resources against their CRD.
    A kind that neither knows fails."""
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        validate_custom_resource(doc)
