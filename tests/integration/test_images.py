"""The two images, built for real by scripts/build-images.sh and run (opt-in: `pytest -m images`).

Builds both images with docker, checks what runs in them (non-root uid, entrypoints, OCI labels,
no compilers) and runs one KFP component in the pipeline image through kfp.local.DockerRunner.

On a machine without a running Docker daemon or an image registry (this project's CI machines),
as root: the test starts `dockerd --bridge=none --iptables=false` itself, and builds the base the
Dockerfiles expect (python:3.11-slim-bookworm's equivalent) from a debootstrap rootfs with
Debian's python3.11, imported as local/python:3.11-slim-bookworm; builds run with
DOCKER_BUILDKIT=0 and --network host. Needs `apt-get install -y docker.io debootstrap`. With a
registry at hand, MLOPS_IMAGES_BASE=python:3.11.14-slim-bookworm builds on the real base instead.
Costs ~30 min on 2 cores (mostly pip installing the locks), hence not in the default run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.fixtures import REPO

# The first test builds both images (fixture): up to ~30 min uncached on 2 cores.
pytestmark = [pytest.mark.integration, pytest.mark.images, pytest.mark.timeout(3 * 3600)]

LOCAL_BASE = "local/python:3.11-slim-bookworm"
REGISTRY, TAG = "local/mlops", "images-test"
IMAGE_UID = 10001
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def sh(*cmd: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def docker_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def docker_daemon(tmp_path_factory):
    """A running dockerd: the one already there, else one started here (and stopped after)."""
    if not shutil.which("docker"):
        pytest.skip("docker is not installed (apt-get install -y docker.io debootstrap)")
    if docker_up():
        yield
        return
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        pytest.fail("no Docker daemon is running and this test can start one only as root with dockerd installed")
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    # No default bridge and no iptables: the only network mode such a machine allows.
    with open(log, "w") as out:
        daemon = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not docker_up():
            assert daemon.poll() is None and time.monotonic() < deadline, f"dockerd did not start:\n{log.read_text()}"
            time.sleep(1)
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


@pytest.fixture(scope="module")
def base_image(docker_daemon, tmp_path_factory) -> str:
    """The base the Dockerfiles build on: MLOPS_IMAGES_BASE, else a local python:3.11-slim equivalent."""
    if os.environ.get("MLOPS_IMAGES_BASE"):
        return os.environ["MLOPS_IMAGES_BASE"]
    if subprocess.run(["docker", "image", "inspect", LOCAL_BASE], capture_output=True).returncode == 0:
        return LOCAL_BASE
    assert shutil.which("debootstrap"), "debootstrap is not installed (apt-get install -y debootstrap)"
    rootfs = tmp_path_factory.mktemp("base") / "rootfs"
    sh("debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR, timeout=1800)
    # What python:3.11-slim-bookworm holds: the interpreter, venv, its headers, the CA store; `python`.
    sh(
        "chroot",
        str(rootfs),
        "/bin/sh",
        "-c",
        "apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev ca-certificates"
        " && apt-get clean && rm -rf /var/lib/apt/lists/*"
        " && ln -sf /usr/bin/python3.11 /usr/local/bin/python && ln -sf /usr/bin/python3.11 /usr/local/bin/python3",
        timeout=1800,
    )
    # The host's trust store: pip in the build reaches the package index as the host does.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    sh(
        "docker",
        "import",
        "-c",
        "ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "-",
        LOCAL_BASE,
        stdin=tar.stdout,
    )
    assert tar.wait() == 0
    shutil.rmtree(rootfs, ignore_errors=True)
    return LOCAL_BASE


@pytest.fixture(scope="module")
def images(base_image) -> dict[str, str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "REGISTRY": REGISTRY, "TAG": TAG}
    done = sh(
        "scripts/build-images.sh",
        "all",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        cwd=REPO,
        env=env,
        timeout=3 * 3600,
    )
    refs = done.stdout.split()
    assert refs == [f"{REGISTRY}/pipeline:{TAG}", f"{REGISTRY}/serving:{TAG}"]
    return dict(zip(("pipeline", "serving"), refs))


def inspect(ref: str) -> dict:
    return json.loads(sh("docker", "image", "inspect", ref).stdout)[0]["Config"]


def run_in(ref: str, *cmd: str, entrypoint: str = "") -> subprocess.CompletedProcess:
    args = ["docker", "run", "--rm", "--network", "none"]
    if entrypoint:
        args += ["--entrypoint", entrypoint]
    return subprocess.run([*args, ref, *cmd], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["pipeline", "serving"])
def test_image_runs_as_its_user_with_labels_and_no_compilers(images, name):
    ref = images[name]
    config = inspect(ref)
    labels = config["Labels"]
    # the checkout's commit when it was built (HEAD may have moved since): a real commit of this repo
    revision = labels["org.opencontainers.image.revision"]
    sh("git", "cat-file", "-e", revision.removesuffix("-dirty") + "^{commit}", cwd=REPO)
    assert config["Env"] and f"MLOPS_GIT_COMMIT={revision}" in config["Env"]
    assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.created"].endswith("Z")
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    expected = {"pipeline": (None, ["mlops"]), "serving": (["python", "-m", "serving"], None)}[name]
    assert (config["Entrypoint"], config["Cmd"] if name == "pipeline" else None) == expected
    done = run_in(ref, "-c", "id -u; id -g; command -v gcc cc g++ make || echo no-compilers", entrypoint="sh")
    assert done.stdout.split() == [str(IMAGE_UID), str(IMAGE_UID), "no-compilers"], done.stdout + done.stderr
    # the environment is the lock's: the image's interpreter imports its stack and the project
    probe = {"pipeline": "import ml_metadata, kfp, mlops.envs", "serving": "import kserve, feast, serving"}[name]
    done = run_in(ref, "-c", probe, entrypoint="python")
    assert done.returncode == 0, done.stderr[-2000:]


def test_entrypoints_answer(images):
    done = run_in(images["pipeline"], "mlops", "--help")
    assert done.returncode == 0 and "pipeline" in done.stdout, done.stderr[-2000:]
    done = run_in(images["serving"], "--help")
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_component_runs_in_the_pipeline_image_through_docker_runner(images, tmp_path):
    """resolve_config runs in its image via kfp.local.DockerRunner, as the image's user."""
    root = tmp_path / "pipeline-root"
    root.mkdir()
    root.chmod(0o777)  # the container's user (uid 10001) writes the outputs into the mount
    script = f"""
import json
from kfp import local
local.init(runner=local.DockerRunner(), pipeline_root={str(root)!r}, raise_on_error=True)
from components.resolve_config.component import resolve_config
task = resolve_config(config_path="configs/flights.yaml", config_overrides="", artifact_root={str(root)!r},
                      epochs=1, learning_rate=0.0, min_auc=-1.0, max_auc_drop=-1.0)
print(json.dumps(task.outputs))
"""
    # The component's image is read when it is defined: point it at the image just built.
    env = {**os.environ, "MLOPS_PIPELINE_IMAGE": images["pipeline"]}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Found image '{images['pipeline']}'" in done.stdout + done.stderr
    outputs = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(outputs["overrides"]) == {"model.epochs": 1}
    # the hash covers the config as resolved in the image (paths under /app), so only its form is checked
    assert len(outputs["config_hash"]) == 16 and int(outputs["config_hash"], 16) >= 0
    written = [p for p in root.rglob("executor_output.json")]
    assert written and all(p.stat().st_uid == IMAGE_UID for p in written)
