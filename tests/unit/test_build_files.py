"""Build files: skaffold.yaml is valid against the official v4beta13 schema; every image it builds
has a production Dockerfile (multi-stage, the lock installed with --require-hashes, a pinned
base, non-root with the manifests' uid, OCI labels, no compilers in the final stage);
scripts/build-images.sh tags and labels what it builds; the CI workflow passes actionlint."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support.fixtures import REPO

# Each image copies only what it runs: its layers of the code (tests/unit/test_layering.py) + data.
IMAGE_PACKAGES = {
    "pipeline": {"mlops", "components", "serving", "pipelines", "cli", "configs", "feature_repo"},
    "serving": {"mlops", "serving", "cli", "configs", "feature_repo"},
}
# The serving image's entrypoint is the model server. The pipeline image has a default command
# only: kfp.local.DockerRunner passes a step's command as arguments, which an entrypoint swallows.
STARTS = {"pipeline": {"CMD": ["mlops"]}, "serving": {"ENTRYPOINT": ["python", "-m", "serving"]}}
# The uid:gid the images run as; the manifests' runAsUser/runAsGroup for the platform's images.
IMAGE_UID = 10001
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|gcc|g\+\+|cc|make|build-essential|pip install|uv)\b")
OCI_LABELS = {"version": "VERSION", "revision": "GIT_COMMIT", "source": "SOURCE", "created": "CREATED"}
SCHEMA = REPO.parent / "shared" / "schemas" / "skaffold-v4beta13.json"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def skaffold_images() -> dict[str, str]:
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return {a["image"].rsplit("/", 1)[1]: a["docker"]["dockerfile"] for a in doc["build"]["artifacts"]}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(dockerfile: Path) -> tuple[dict[str, str], list[tuple[str, list[tuple[str, str]]]]]:
    """(the global ARG defaults before the first FROM, [(FROM arguments, instructions)] per stage)."""
    global_args, result = {}, []
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            result.append((rest, []))
        elif result:
            result[-1][1].append((word, rest))
        elif word == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
    return global_args, result


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
    images = skaffold_images()
    assert set(images) == {"pipeline", "serving"}
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    from mlops.images import PIPELINE_IMAGE, SERVING_IMAGE

    assert PIPELINE_IMAGE.startswith(doc["build"]["artifacts"][0]["image"])
    assert SERVING_IMAGE.startswith(doc["build"]["artifacts"][1]["image"])


@pytest.mark.parametrize("env", sorted(IMAGE_PACKAGES))
def test_dockerfile_is_a_production_build(env):
    dockerfile = REPO / skaffold_images()[env]
    global_args, built = stages(dockerfile)
    assert len(built) == 2, f"{dockerfile.name}: a builder stage and a final stage"
    (builder_from, builder), (final_from, final) = built

    # a pinned base: by default python:3.11.X-slim-bookworm (a digest may follow), never a floating tag
    assert PINNED_BASE.match(global_args.get("BASE_IMAGE", "")), global_args
    assert builder_from == "${BASE_IMAGE} AS builder" and final_from == "${BASE_IMAGE}"

    # builder: the whole lock, hash-checked, no resolver; then only this image's code
    runs = " ".join(rest for word, rest in builder if word == "RUN")
    lock = f"requirements/{env}.lock.txt"
    install = re.search(r"pip install ([^&]*-r " + re.escape(lock) + ")", runs)
    assert install and "--require-hashes" in install.group(1) and "--no-deps" in install.group(1), runs
    copied = {rest.split()[0] for word, rest in builder if word == "COPY"}
    assert copied - {lock, "pyproject.toml", "README.md"} == IMAGE_PACKAGES[env], dockerfile.name

    # final: only the builder's results, nothing that compiles or downloads, non-root, labelled
    for word, rest in final:
        if word == "COPY":
            assert rest.startswith("--from=builder "), f"final stage copies from the builder only: {rest}"
        if word == "RUN":
            assert not BUILD_TOOLS.search(rest), f"final stage of {dockerfile.name} runs a build tool: {rest}"
    users = [rest for word, rest in final if word == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"], users
    labels = " ".join(rest for word, rest in final if word == "LABEL")
    for label, arg in OCI_LABELS.items():
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in labels, label
        assert any(word == "ARG" and rest.split("=")[0] == arg for word, rest in final), arg
    env_lines = " ".join(rest for word, rest in final if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "MLOPS_GIT_COMMIT=${GIT_COMMIT}"):
        assert setting in env_lines, setting
    starts = {word: json.loads(rest) for word, rest in final if word in ("ENTRYPOINT", "CMD")}
    assert starts == STARTS[env]


def test_dockerfile_checks_catch_a_floating_base_and_a_compiler_in_the_final_stage(tmp_path):
    text = (REPO / "images" / "serving.Dockerfile").read_text()
    floating = tmp_path / "floating.Dockerfile"
    floating.write_text(re.sub(r"(?m)^ARG BASE_IMAGE=.*$", "ARG BASE_IMAGE=python:3.11-slim", text))
    assert not PINNED_BASE.match(stages(floating)[0]["BASE_IMAGE"])
    compiler = tmp_path / "compiler.Dockerfile"
    compiler.write_text(text.replace("USER ", "RUN apt-get install -y gcc\nUSER ", 1))
    final = stages(compiler)[1][-1][1]
    assert any(word == "RUN" and BUILD_TOOLS.search(rest) for word, rest in final)


def test_dockerignore_sends_only_what_the_images_copy():
    patterns = (REPO / ".dockerignore").read_text().split()
    assert patterns[patterns.index("*")] == "*", "allow-list: everything excluded first"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    for env in IMAGE_PACKAGES:
        for word, rest in instructions(REPO / skaffold_images()[env]):
            source = rest.split()[0]
            if word == "COPY" and not source.startswith("--from="):
                assert source in allowed or "requirements/*.lock.txt" in allowed, source
    assert not {".venv", ".git", "artifacts"} & allowed


def manifest_uids() -> dict[str, set]:
    """{manifest file: runAsUser values of the pods that run the platform's images}."""
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            containers = node.get("containers")
            if isinstance(containers, list) and any(
                "mlops-platform/" in str(c.get("image", "")) for c in containers if isinstance(c, dict)
            ):
                uids = {(node.get("securityContext") or {}).get("runAsUser")}
                uids |= {(c.get("securityContext") or {}).get("runAsUser") for c in containers}
                found.setdefault(path, set()).update(uids - {None})
            for value in node.values():
                walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    for path in sorted((REPO / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            walk(doc, str(path.relative_to(REPO)))
    return found


def test_the_manifests_run_the_images_as_their_user():
    uids = manifest_uids()
    assert uids, "no workload of the platform's images found in manifests/"
    for path, values in uids.items():
        assert values <= {IMAGE_UID}, f"{path}: runAsUser {values} but the images run as {IMAGE_UID}"


def lock_entries(lock: Path) -> dict[str, list[str]]:
    """{name==version: its --hash values} of a requirements file, continuation lines joined."""
    entries = {}
    for block in re.sub(r"\\\n", " ", lock.read_text()).splitlines():
        block = block.split("#", 1)[0].strip()
        if block:
            spec, *rest = block.split()
            entries[spec] = [h.split("=", 1)[1] for h in rest if h.startswith("--hash=")]
    return entries


@pytest.mark.parametrize("env", sorted(IMAGE_PACKAGES))
def test_every_pin_of_the_lock_carries_its_hashes(env):
    entries = lock_entries(REPO / "requirements" / f"{env}.lock.txt")
    assert len(entries) > 100
    for spec, hashes in entries.items():
        assert "==" in spec, f"{env}.lock.txt: {spec} is not pinned"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), spec
    # the build tools of the source-only packages come from the lock too (see the Dockerfiles)
    assert {s.split("==")[0] for s in entries} >= {"setuptools", "wheel"}


# --- scripts/build-images.sh, with a docker that records its calls -----------------------------

FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
"""


def build_images(tmp_path, *args, **env):
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    run_env = {**os.environ, "DOCKER": str(docker), "FAKE_DOCKER_LOG": str(log), **env}
    done = subprocess.run(
        ["scripts/build-images.sh", *args], cwd=REPO, env=run_env, capture_output=True, text=True, timeout=60
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_build_images_tags_and_labels_both_images(tmp_path):
    done, calls = build_images(tmp_path, "--network", "host", REGISTRY="kind-registry:5000/mlops/", TAG="c0ffee")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "kind-registry:5000/mlops/pipeline:c0ffee",
        "kind-registry:5000/mlops/serving:c0ffee",
    ]
    assert len(calls) == 2
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    from mlops.images import VERSION

    for name, call in zip(("pipeline", "serving"), calls):
        assert call.startswith("build ") and call.endswith(" --network host .")
        assert f"--file images/{name}.Dockerfile" in call and f"--tag kind-registry:5000/mlops/{name}:c0ffee" in call
        commit = re.search(r"--build-arg GIT_COMMIT=(\S+)", call).group(1)
        assert commit in (head, f"{head}-dirty")
        assert f"--build-arg VERSION={VERSION}" in call
        assert re.search(r"--build-arg CREATED=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", call)


def test_build_images_pushes_only_when_asked(tmp_path):
    done, calls = build_images(tmp_path, "serving", "--push", REGISTRY="localhost:5001", TAG="t1")
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in calls] == ["build", "push"] and calls[1] == "push localhost:5001/serving:t1"


@pytest.mark.parametrize(
    ("env", "named"), [({"TAG": "-bad"}, "TAG '-bad'"), ({"REGISTRY": "Upper.Case/x"}, "REGISTRY 'Upper.Case/x'")]
)
def test_build_images_refuses_a_bad_reference_before_building(tmp_path, env, named):
    done, calls = build_images(tmp_path, **env)
    assert done.returncode == 2 and calls == []
    assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- the GitHub Actions workflow ----------------------------------------------------------------


def actionlint(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", str(path)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not ACTIONLINT.exists() and not shutil.which("actionlint"), reason="actionlint not installed")
def test_ci_workflow_passes_actionlint_and_a_broken_copy_does_not(tmp_path):
    done = actionlint(WORKFLOW, REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    # the check is live: a misspelt key and an undefined job dependency are reported
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        WORKFLOW.read_text().replace("timeout-minutes:", "timeout-minute:", 1).replace("needs: lint", "needs: lnit", 1)
    )
    done = actionlint(broken, tmp_path)
    assert done.returncode == 1
    assert "timeout-minute" in done.stdout and "lnit" in done.stdout


def test_ci_workflow_runs_the_stages_and_delivers_only_from_main():
    doc = yaml.safe_load(WORKFLOW.read_text())
    jobs = doc["jobs"]
    assert {"lint", "unit", "compile", "images", "integration", "deploy"} <= set(jobs)
    steps = {name: " ".join(str(s.get("run", "")) for s in job["steps"]) for name, job in jobs.items()}
    assert "ruff check" in steps["lint"] and "ruff format --check" in steps["lint"] and "actionlint" in steps["lint"]
    assert "mlops pipeline compile" in steps["compile"] and "git diff --exit-code" in steps["compile"]
    assert "scripts/build-images.sh" in steps["images"]
    assert "mlops submit training" in steps["deploy"] and "mlops schedule training" in steps["deploy"]
    # delivery: only pushes to main, after everything passed, with the registry/host from vars and secrets
    on_main = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    push = [s for s in jobs["images"]["steps"] if "docker push" in str(s.get("run", ""))]
    assert len(push) == 1 and push[0]["if"] == on_main
    assert jobs["deploy"]["if"].startswith(on_main) and set(jobs["deploy"]["needs"]) == {"images", "integration"}
    assert jobs["deploy"]["env"]["MLOPS_KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert "vars.KFP_HOST" in jobs["deploy"]["env"]["KF_PIPELINES_ENDPOINT"]
    assert "vars.IMAGE_REGISTRY" in doc["env"]["IMAGE_REGISTRY"]
    # the opt-in image test is not part of the integration job (it builds the images again)
    assert "not images" in steps["integration"]
