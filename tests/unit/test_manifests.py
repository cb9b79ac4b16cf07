"""Kubernetes manifests, checked offline: every overlay renders with `kubectl kustomize`, core kinds
pass kubernetes-validate (strict) for the Kubernetes version the README names, custom resources
pass a strict JSON Schema built from the real CRDs in ../shared/crds, images are the ones
skaffold.yaml builds, and every workload runs under the "restricted" pod security profile."""

from __future__ import annotations

import copy
import re
import shlex
import shutil

import jsonschema
import pytest
import yaml

from mlops.config import ServingSpec
from tests.support.fixtures import REPO
from tests.support.k8s_validation import (
    KUBERNETES_VERSION,
    kustomize,
    needs_shared,
    validate,
)

MANIFESTS = REPO / "manifests"
OVERLAYS = ("local-kind", "production")
# The Kubernetes version of the README's kind walkthrough (kindest/node) and of the validation.
# Images the platform does not build: pinned, never `latest`.
THIRD_PARTY_IMAGES = {"docker.io/library/redis:7.4.2"}
# The model server's drain (serving.shutdown_grace_s) must end before the kubelet's SIGKILL.
SHUTDOWN_MARGIN_S = 5
INFERENCE_PROBES = {"livenessProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    return {overlay: kustomize(MANIFESTS / "overlays" / overlay, tmp) for overlay in OVERLAYS}


def all_docs(rendered) -> list[tuple[str, dict]]:
    return [(overlay, doc) for overlay, docs in rendered.items() for doc in docs]


def label(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- rendering and validation ------------------------------------------------------------------


def test_every_overlay_renders_with_the_platform_objects(rendered):
    for overlay, docs in rendered.items():
        kinds = {label(d) for d in docs}
        for expected in (
            "Namespace/mlops",
            "InferenceService/flights",
            "Deployment/mlops-feature-server",
            "StatefulSet/mlops-redis",
            "Service/mlops-redis",
            "Deployment/mlops-stream",
            "CronJob/mlops-new-data-sensor",
            "CronJob/mlops-training-schedule",
            "PodMonitor/mlops-model-server",
            "PrometheusRule/mlops-serving",
            "Role/mlops-deployer",
        ):
            assert expected in kinds, f"{overlay}: {expected} missing"
        # the kustomize-local ConfigMap carrying the model version is never applied
        assert "ConfigMap/model-version" not in kinds
        assert all(d["metadata"].get("namespace") == "mlops" for d in docs if d["kind"] != "Namespace"), overlay


@needs_shared
def test_every_object_validates_strictly(rendered):
    for overlay, doc in all_docs(rendered):
        try:
            validate(doc)
        except jsonschema.ValidationError as e:
            raise AssertionError(f"{overlay}: {label(doc)}: {e.message} at {list(e.absolute_path)}") from None


@needs_shared
def test_custom_resources_reject_unknown_fields(rendered):
    isvc = next(d for d in rendered["local-kind"] if d["kind"] == "InferenceService")
    validate(isvc)
    typo = copy.deepcopy(isvc)
    typo["spec"]["predictor"]["minReplica"] = 1  # minReplicas
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate(typo)
    nested = copy.deepcopy(isvc)
    nested["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}  # readinessProbe
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        validate(nested)
    rule = copy.deepcopy(next(d for d in rendered["local-kind"] if d["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][1]["expression"] = "up"  # expr
    with pytest.raises(jsonschema.ValidationError, match="expression"):
        validate(rule)
    unknown = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceServise", "metadata": {}, "spec": {}}
    with pytest.raises(AssertionError, match="neither a core kind nor a CRD"):
        validate(unknown)


def test_core_kinds_reject_unknown_fields(rendered):
    deployment = copy.deepcopy(next(d for d in rendered["local-kind"] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(jsonschema.ValidationError, match="readOnlyRootFileSystem"):
        validate(deployment)


# --- images ------------------------------------------------------------------------------------


def skaffold_images() -> set[str]:
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return {a["image"] for a in doc["build"]["artifacts"]}


def containers_of(node, path="") -> list[tuple[str, dict]]:
    """Every container (containers, initContainers) anywhere in an object, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found += [(f"{path}.{key}[{c.get('name')}]", c) for c in value]
            else:
                found += containers_of(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += containers_of(value, f"{path}[{i}]")
    return found


def test_images_are_the_ones_skaffold_builds_never_latest(rendered):
    built = skaffold_images()
    from mlops.images import VERSION

    for overlay, doc in all_docs(rendered):
        for where, container in containers_of(doc):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert tag and "/" not in tag and tag != "latest", f"{overlay} {label(doc)}{where}: {image} (pinned tag)"
            if image in THIRD_PARTY_IMAGES:
                continue
            assert name in built, f"{overlay} {label(doc)}{where}: {image} is not built by skaffold.yaml"
            assert tag == VERSION, f"{overlay} {label(doc)}{where}: {image} (mlops.images.VERSION is {VERSION})"


# --- pod security ------------------------------------------------------------------------------


def pod_specs(doc: dict) -> list[dict]:
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet"):
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "InferenceService":
        return [doc["spec"][c] for c in ("predictor", "transformer", "explainer") if c in doc["spec"]]
    return []


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob", "InferenceService", "DaemonSet", "Job", "Pod"}


def pod_security_violations(pod: dict) -> list[str]:
    """What the "restricted" profile (plus our own rules: read-only root, requests and limits,
    writable /tmp) finds wrong in a pod spec."""
    problems = []
    pod_ctx = pod.get("securityContext", {})
    if pod_ctx.get("runAsNonRoot") is not True:
        problems.append("securityContext.runAsNonRoot is not true")
    if pod_ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("securityContext.seccompProfile.type is not RuntimeDefault")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name = container["name"]
        ctx = container.get("securityContext", {})
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities.drop is not [ALL]")
        if ctx.get("privileged") or ctx.get("runAsUser") == 0 or ctx.get("capabilities", {}).get("add"):
            problems.append(f"{name}: privileged, root or added capabilities")
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(section, {}))
            if missing:
                problems.append(f"{name}: resources.{section} lacks {sorted(missing)}")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if mounts.get("/tmp") not in empty_dirs:
            problems.append(f"{name}: /tmp is not a writable emptyDir")
    return problems


def test_every_workload_runs_restricted(rendered):
    workloads = 0
    for overlay, doc in all_docs(rendered):
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        specs = pod_specs(doc)
        assert specs, f"{overlay} {label(doc)}: no pod spec found"
        for pod in specs:
            workloads += 1
            assert pod_security_violations(pod) == [], f"{overlay} {label(doc)}"
    assert workloads >= 5 * len(OVERLAYS)


def test_the_security_check_sees_a_weakened_workload(rendered):
    stream = copy.deepcopy(next(d for d in rendered["local-kind"] if label(d) == "Deployment/mlops-stream"))
    pod = stream["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["resources"]["limits"]
    pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    assert pod_security_violations(pod) == [
        "securityContext.seccompProfile.type is not RuntimeDefault",
        "stream: readOnlyRootFilesystem is not true",
        "stream: resources.limits lacks ['cpu', 'memory']",
    ]


def test_namespace_enforces_the_restricted_profile(rendered):
    for overlay, docs in rendered.items():
        ns = next(d for d in docs if d["kind"] == "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted", overlay


# --- RBAC --------------------------------------------------------------------------------------


def test_rbac_is_least_privilege(rendered):
    for overlay, docs in rendered.items():
        accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
        roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], overlay
        for role in roles.values():
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], f"{overlay} {label(role)}: wildcard {field}"
                assert "secrets" not in rule["resources"], f"{overlay} {label(role)}: reads secrets"
        bound = set()
        for binding in (d for d in docs if d["kind"] == "RoleBinding"):
            assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles, label(binding)
            for subject in binding["subjects"]:
                assert subject["kind"] == "ServiceAccount" and subject["name"] in accounts, label(binding)
                bound.add(subject["name"])
        for doc in docs:
            for pod in pod_specs(doc):
                account = pod.get("serviceAccountName")
                assert account in accounts, f"{overlay} {label(doc)}: service account {account!r}"
                # a workload with no Role has no use for an API token
                if account not in bound:
                    assert pod.get("automountServiceAccountToken") is False, f"{overlay} {label(doc)}"
                    assert accounts[account].get("automountServiceAccountToken") is False, account


# --- the model server --------------------------------------------------------------------------


def isvc_of(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "InferenceService")


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}: {values}"
    return values[0]


def test_inference_service_runs_the_model_server_on_its_ports(rendered):
    grace = ServingSpec().shutdown_grace_s
    modes = {}
    for overlay, docs in rendered.items():
        isvc = isvc_of(docs)
        modes[overlay] = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
        predictor = isvc["spec"]["predictor"]
        (container,) = predictor["containers"]
        assert container["name"] == "kserve-container"
        assert container["command"] == ["python", "-m", "serving"]
        args = container["args"]
        assert flag(args, "model_dir") == "/mnt/models" and flag(args, "host") == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http1"] == int(flag(args, "http_port")) == 8080
        if modes[overlay] == "Knative":  # one port per container under Knative
            assert set(ports) == {"http1"}
        else:
            assert ports["h2c"] == int(flag(args, "grpc_port")) == 8081
        for probe, path in INFERENCE_PROBES.items():
            assert container[probe]["httpGet"] == {"path": path, "port": 8080}, f"{overlay} {probe}"
        # SIGTERM drain and exit inside the pod's grace period (Knative: the revision timeout)
        period = predictor.get("terminationGracePeriodSeconds", predictor.get("timeout"))
        assert period >= grace + SHUTDOWN_MARGIN_S, f"{overlay}: {period} s for serving.shutdown_grace_s {grace}"
    assert modes == {"local-kind": "Standard", "production": "Knative"}


def test_storage_uri_is_the_overlays_registry_version(rendered):
    for overlay, docs in rendered.items():
        (container,) = isvc_of(docs)["spec"]["predictor"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        declared = yaml.safe_load((MANIFESTS / "overlays" / overlay / "model-version.yaml").read_text())
        assert env["STORAGE_URI"] == declared["data"]["storageUri"], overlay
        # the layout of a registry version: <artifact_root>/registry/<name>/versions/<n>
        assert re.fullmatch(r"s3://[^/]+/.+/registry/flights/versions/\d+", env["STORAGE_URI"]), overlay


def test_storage_uri_follows_an_edited_model_version(tmp_path):
    """The documented way to serve another version: put its `uri` in the overlay's model-version.yaml."""
    copy_root = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy_root)
    model_version = copy_root / "overlays" / "local-kind" / "model-version.yaml"
    doc = yaml.safe_load(model_version.read_text())
    doc["data"]["storageUri"] = "s3://bucket/mlops/registry/flights/versions/7"
    model_version.write_text(yaml.safe_dump(doc))
    (container,) = isvc_of(kustomize(copy_root / "overlays" / "local-kind", tmp_path))["spec"]["predictor"][
        "containers"
    ]
    assert {e["name"]: e.get("value") for e in container["env"]}["STORAGE_URI"] == doc["data"]["storageUri"]


def test_alerts_cover_the_serving_slos(rendered):
    rules = next(d for d in rendered["production"] if label(d) == "PrometheusRule/mlops-serving")
    alerts = {r["alert"]: r["expr"] for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {
        "MlopsServingErrorRate",
        "MlopsServingLatencyP99",
        "MlopsServingNoTraffic",
        "MlopsPayloadLogDrops",
        "MlopsFeatureDefaultRate",
    }
    # the metric names the model server exports (serving/metrics.py)
    metrics_source = (REPO / "serving" / "metrics.py").read_text()
    for expr in alerts.values():
        for metric in re.findall(r"\b(mlops_[a-z_]+?)(?:_total|_bucket)?\b(?=[{\[])", expr):
            assert f'"{metric}"' in metrics_source, metric
    monitor = next(d for d in rendered["production"] if d["kind"] == "PodMonitor")
    isvc = isvc_of(rendered["production"])
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]
    }
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_trigger_cronjobs_run_the_trigger_commands(rendered):
    from click.testing import CliRunner

    from cli.main import cli as mlops

    crons = {d["metadata"]["name"]: d for d in rendered["local-kind"] if d["kind"] == "CronJob"}
    assert set(crons) == {"mlops-new-data-sensor", "mlops-training-schedule"}
    for cron in crons.values():
        (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["mlops"]
        result = CliRunner().invoke(mlops, [*container["args"], "--help"])
        assert result.exit_code == 0, result.output
        env = {e["name"]: e for e in container.get("env", [])}
        secret_refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
        assert secret_refs == [{"name": "mlops-mlmd-mysql", "key": "password"}]
        assert env["KF_PIPELINES_ENDPOINT"]["value"].startswith("http://ml-pipeline.kubeflow")
    sensor, schedule = crons["mlops-new-data-sensor"], crons["mlops-training-schedule"]
    assert sensor["spec"]["suspend"] is False
    assert sensor["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][:2] == [
        "trigger",
        "new-data",
    ]
    # the alternative to a KFP recurring run: off until chosen; a retried Job keeps its slot
    assert schedule["spec"]["suspend"] is True
    (container,) = schedule["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["trigger", "schedule"]
    slot = next(e for e in container["env"] if e["name"] == "MLOPS_TRIGGER_SLOT")
    assert slot["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"


def test_no_secret_values_are_committed(rendered):
    for overlay, doc in all_docs(rendered):
        assert doc["kind"] != "Secret", f"{overlay}: {label(doc)}"


# --- kind, skaffold and the README walkthrough -------------------------------------------------


def test_kind_config_has_the_local_registry_and_the_readme_ports(rendered):
    kind = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert 'config_path = "/etc/containerd/certs.d"' in kind["containerdConfigPatches"][0]
    (node,) = kind["nodes"]
    assert node["image"].startswith(f"kindest/node:v{KUBERNETES_VERSION}.")
    host_ports = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    node_ports = {
        p["nodePort"]: p["targetPort"]
        for d in rendered["local-kind"]
        if d["kind"] == "Service" and d["spec"].get("type") == "NodePort"
        for p in d["spec"]["ports"]
    }
    assert set(node_ports) <= set(host_ports), "a NodePort the kind node does not publish"
    readme = kind_walkthrough()
    for host_port in host_ports.values():
        assert f"localhost:{host_port}" in readme, f"README never uses localhost:{host_port}"
    registry = yaml.safe_load((MANIFESTS / "kind" / "local-registry-hosting.yaml").read_text())
    validate(registry)
    assert "localhost:5001" in registry["data"]["localRegistryHosting.v1"] and "localhost:5001" in readme


def test_skaffold_deploys_the_overlays_and_builds_what_they_run(rendered):
    doc = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert doc["manifests"]["kustomize"]["paths"] == ["manifests/overlays/local-kind"]
    profiles = {p["name"]: p for p in doc["profiles"]}
    assert profiles["production"]["manifests"]["kustomize"]["paths"] == ["manifests/overlays/production"]
    used = {
        c["image"].rpartition(":")[0]
        for _, d in all_docs(rendered)
        for _, c in containers_of(d)
        if c["image"] not in THIRD_PARTY_IMAGES
    }
    assert used == skaffold_images()
    # skaffold rewrites images only in kinds it is told about: the InferenceService is one
    allowed = {r["groupKind"] for r in doc["resourceSelector"]["allow"]}
    assert "InferenceService.serving.kserve.io" in allowed


def kind_walkthrough() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Run it on kind\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, 'README.md has no "## Run it on kind" section'
    return match.group(1)


def test_readme_walkthrough_commands_that_run_here(tmp_path):
    """Pinned versions, files that exist, and every `kubectl kustomize` in it renders."""
    text = kind_walkthrough()
    assert f"Kubernetes {KUBERNETES_VERSION}" in text
    for tool in ("kind", "cert-manager", "KServe", "KFP"):
        assert re.search(rf"{tool}\s+v?\d+\.\d+\.\d+", text), f"{tool}: no pinned version in the walkthrough"
    for path in re.findall(r"(?<![\w/.-])((?:manifests|pipelines)/[\w./-]+|kind-config\.yaml|skaffold\.yaml)", text):
        assert (REPO / path.rstrip(".")).exists(), path
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.strip().startswith("kubectl kustomize ")
    ]
    assert commands, "the walkthrough renders no overlay"
    for command in commands:
        argv = shlex.split(command.split("|")[0])
        kustomize(argv[2], tmp_path)


def test_no_latest_anywhere_in_the_deploy_files():
    for path in [*MANIFESTS.rglob("*.yaml"), REPO / "skaffold.yaml", REPO / "kind-config.yaml"]:
        assert not re.search(r":latest\b", path.read_text()), path
