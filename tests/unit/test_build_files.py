"""Build files: skaffold.yaml is valid against the official v4beta13 schema, and every image it
builds has a Dockerfile installing exactly its environment's lock."""

import json

import jsonschema
import pytest
import yaml

from tests.support.fixtures import REPO

# Each image copies only what it runs: its layers of the code (tests/unit/test_layering.py) + data.
IMAGE_PACKAGES = {
    "pipeline": {"mlops", "components", "serving", "pipelines", "cli", "configs", "feature_repo"},
    "serving": {"mlops", "serving", "cli", "configs", "feature_repo"},
}
SCHEMA = REPO.parent / "shared" / "schemas" / "skaffold-v4beta13.json"


@pytest.mark.skipif(not SCHEMA.exists(), reason="shared/schemas is not beside this checkout")
def test_skaffold_yaml_matches_the_official_schema():
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(doc, schema)
    # the schema is strict: a misspelt section is an error, not ignored
    typo = {**doc, "manifest": doc["manifests"]}
    with pytest.raises(jsonschema.ValidationError, match="manifest"):
        jsonschema.validate(typo, schema)
    # every kustomize path it deploys (default and profiles) is a kustomization in the checkout
    paths = list(doc["manifests"]["kustomize"]["paths"])
    paths += [
        p for prof in doc.get("profiles", []) for p in prof.get("manifests", {}).get("kustomize", {}).get("paths", [])
    ]
    assert paths
    for path in paths:
        assert (REPO / path / "kustomization.yaml").is_file(), path


def test_every_image_has_its_dockerfile_and_lock():
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    images = {a["image"].rsplit("/", 1)[1]: a["docker"]["dockerfile"] for a in doc["build"]["artifacts"]}
    assert set(images) == {"pipeline", "serving"}
    for env, dockerfile in images.items():
        text = (REPO / dockerfile).read_text()
        assert f"requirements/{env}.lock.txt" in text and "--no-deps" in text
        copied = {
            line.split()[1] for line in text.splitlines() if line.startswith("COPY ") and "/" not in line.split()[1]
        }
        assert copied - {"pyproject.toml", "README.md"} == IMAGE_PACKAGES[env], dockerfile
    from mlops.images import PIPELINE_IMAGE, SERVING_IMAGE

    assert PIPELINE_IMAGE.startswith(doc["build"]["artifacts"][0]["image"])
    assert SERVING_IMAGE.startswith(doc["build"]["artifacts"][1]["image"])
