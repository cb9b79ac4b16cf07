"""What pipelines/compiled/*.yaml carries for a cluster: shared state in the cluster (object-store
artifact root, ML Metadata on KFP's metadata-grpc-service), per-step resources and node selectors
from the target file, and the images of --image-registry / --tag."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from mlops.config import ConfigError, load_config
from mlops.steps import StepCache, load_step_config
from pipelines import runner
from pipelines.target import CompileTarget, load_target
from tests.support.fixtures import FLIGHTS_CONFIG, REPO

CLUSTER_CONFIG = REPO / "configs" / "cluster.yaml"
CLUSTER_TARGET = REPO / "configs" / "cluster-kfp.yaml"


def ir_docs(path):
    return list(yaml.safe_load_all(path.read_text()))


def default_parameters(path) -> dict:
    params = ir_docs(path)[0]["root"]["inputDefinitions"]["parameters"]
    return {name: p.get("defaultValue") for name, p in params.items()}


def executors(path) -> dict:
    return ir_docs(path)[0]["deploymentSpec"]["executors"]


def k8s_executors(path) -> dict:
    docs = ir_docs(path)
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}


@pytest.fixture
def no_cluster_env(monkeypatch):
    for var in ("MLOPS_CLUSTER_ARTIFACT_ROOT", "MLOPS_CLUSTER_METADATA_HOST", "MLOPS_CLUSTER_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("name", sorted(runner.PIPELINES))
def test_committed_ir_keeps_shared_state_in_the_cluster(name, no_cluster_env, monkeypatch):
    """The config a step loads from the IR's defaults: nothing a later step or run needs stays in its pod."""
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", "/should/not/matter")  # the cluster config does not read it
    path = runner.COMPILED_DIR / f"{name}.yaml"
    runner.load_ir_strict(path)
    params = default_parameters(path)
    assert params["config_path"] == "configs/cluster.yaml"
    config = load_step_config(params["config_path"], params.get("config_overrides") or "", params["artifact_root"])
    assert config.artifact_root == params["artifact_root"] == "s3://mlpipeline/mlops"
    assert StepCache(config).root == "s3://mlpipeline/mlops/cache"  # the step cache, too
    assert config.metadata.backend == "grpc"
    assert (config.metadata.host, config.metadata.port) == ("metadata-grpc-service.kubeflow", 8080)
    assert config.features.online_store == "redis"
    for value in params.values():  # no container-local path anywhere in the defaults
        assert not (isinstance(value, str) and (value.startswith("/") or value.startswith("file:")))


def test_grpc_backend_connects_to_the_metadata_service(no_cluster_env):
    from ml_metadata.proto import metadata_store_pb2 as pb

    from mlops.metadata.store import connection_config

    config = load_config(CLUSTER_CONFIG)
    connection = connection_config(config.metadata, config.metadata_sqlite_path)
    assert isinstance(connection, pb.MetadataStoreClientConfig)
    assert (connection.host, connection.port) == ("metadata-grpc-service.kubeflow", 8080)


def test_cluster_config_is_the_flights_project_with_cluster_locations(no_cluster_env, monkeypatch):
    monkeypatch.delenv("MLOPS_ARTIFACT_ROOT", raising=False)
    cluster, local = load_config(CLUSTER_CONFIG), load_config(FLIGHTS_CONFIG)
    moved = {"artifact_root", "metadata", "source_path"}
    assert cluster.model_dump(exclude=moved | {"features"}) == local.model_dump(exclude=moved | {"features"})
    on_cluster = {"online_store", "redis_url"}
    assert cluster.features.model_dump(exclude=on_cluster) == local.features.model_dump(exclude=on_cluster)


def test_bucket_is_set_when_compiling(no_cluster_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_CLUSTER_ARTIFACT_ROOT", "s3://my-bucket/mlops")
    path = runner.compile_pipeline("ingest", tmp_path, load_target())
    assert default_parameters(path)["artifact_root"] == "s3://my-bucket/mlops"


def test_resources_and_secrets_of_the_target_are_in_the_committed_ir(no_cluster_env):
    target = yaml.safe_load(CLUSTER_TARGET.read_text())
    path = runner.COMPILED_DIR / "training.yaml"
    quantities = {"500m": 0.5, "1": 1.0, "2": 2.0, "100m": 0.1, "256Mi": 0.268435456, "512Mi": 0.536870912}
    quantities.update({f"{n}Gi": n * 1.073741824 for n in (1, 2, 3, 4)})
    execs, k8s = executors(path), k8s_executors(path)
    assert len(execs) == 10
    for executor_name, executor in execs.items():
        step = executor_name.removeprefix("exec-").replace("-", "_")
        wanted = {**target["steps"]["default"], **target["steps"].get(step, {})}
        resources = executor["container"]["resources"]
        for key, ir_key in (
            ("cpu_request", "cpuRequest"),
            ("cpu_limit", "cpuLimit"),
            ("memory_request", "memoryRequest"),
            ("memory_limit", "memoryLimit"),
        ):
            assert resources[ir_key] == pytest.approx(quantities[wanted[key]]), (step, key)
        env = {e["name"]: e["value"] for e in executor["container"]["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"
        [secret] = k8s[executor_name]["secretAsEnv"]
        assert secret["secretName"] == "mlpipeline-minio-artifact"
        assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }


@pytest.fixture
def target_file(tmp_path):
    made = []

    def make(steps: dict, config: str = "cluster.yaml"):
        # Inside configs/: a target names its platform config relative to itself, inside the project.
        path = REPO / "configs" / f".test-target-{tmp_path.name}.yaml"
        path.write_text(yaml.safe_dump({"config": config, "steps": steps}))
        made.append(path)
        return path

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def test_node_selectors_and_step_overrides_reach_the_ir(no_cluster_env, target_file, tmp_path):
    path = target_file(
        {
            "default": {"cpu_request": "250m", "memory_limit": "1Gi", "node_selector": {"pool": "general"}},
            "trainer": {"cpu_limit": "4", "node_selector": {"pool": "training", "gpu": "none"}},
        }
    )
    ir = runner.compile_pipeline("training", tmp_path, load_target(path))
    runner.load_ir_strict(ir)
    trainer = executors(ir)["exec-trainer"]["container"]["resources"]
    assert trainer["cpuRequest"] == 0.25 and trainer["cpuLimit"] == 4.0 and trainer["memoryLimit"] == 1.073741824
    k8s = k8s_executors(ir)
    assert k8s["exec-trainer"]["nodeSelector"]["labels"] == {"pool": "training", "gpu": "none"}
    assert k8s["exec-transform"]["nodeSelector"]["labels"] == {"pool": "general"}
    assert "cpuLimit" not in executors(ir)["exec-transform"]["container"]["resources"]


@pytest.mark.parametrize(
    ("steps", "config", "message"),
    [
        ({"trainr": {"cpu_request": "1"}}, "cluster.yaml", "steps.trainr: unknown step"),
        ({"trainer": {"memory_limit": "4 GB"}}, "cluster.yaml", "steps.trainer.memory_limit"),
        ({}, "flights.yaml", "artifact_root"),
        ({}, "../../elsewhere.yaml", "outside the project"),
    ],
)
def test_bad_targets_fail_naming_the_field(steps, config, message, target_file, no_cluster_env, monkeypatch):
    monkeypatch.delenv("MLOPS_ARTIFACT_ROOT", raising=False)
    with pytest.raises(ConfigError, match=message):
        load_target(target_file(steps, config))


def test_local_artifact_root_is_refused_for_the_cluster(target_file, no_cluster_env, monkeypatch):
    monkeypatch.setenv("MLOPS_CLUSTER_ARTIFACT_ROOT", "/data/mlops")
    with pytest.raises(ConfigError, match="path inside the container"):
        load_target(target_file({}))


def test_compile_with_image_registry_and_tag(tmp_path, no_cluster_env):
    from cli.main import cli

    out = tmp_path / "ir"
    result = CliRunner().invoke(
        cli,
        [
            "pipeline",
            "compile",
            "training",
            "--out",
            str(out),
            "--image-registry",
            "kind-registry:5000/mlops",
            "--tag",
            "abc123",
        ],
    )
    assert result.exit_code == 0, result.output
    images = {e["container"]["image"] for e in executors(out / "training.yaml").values()}
    # feature_sync runs in the serving image (Feast 0.67 writes), the others in the pipeline image
    assert images == {"kind-registry:5000/mlops/pipeline:abc123", "kind-registry:5000/mlops/serving:abc123"}
    committed = {e["container"]["image"] for e in executors(runner.COMPILED_DIR / "training.yaml").values()}
    assert committed == {"ghcr.io/mlops-platform/pipeline:0.1.0", "ghcr.io/mlops-platform/serving:0.1.0"}


@pytest.mark.parametrize(
    ("option", "value", "hint"), [("--tag", "-bad", "--tag"), ("--image-registry", "Registry:5000", "--image-registry")]
)
def test_bad_image_reference_fails_before_writing(option, value, hint, tmp_path):
    from cli.main import cli

    out = tmp_path / "ir"
    result = CliRunner().invoke(cli, ["pipeline", "compile", "ingest", "--out", str(out), option, value])
    assert result.exit_code == 2 and hint in result.output
    assert not out.exists()


def test_local_compile_keeps_the_local_defaults(tmp_path):
    path = runner.compile_pipeline("ingest", tmp_path, CompileTarget("local"))
    params = default_parameters(path)
    assert params["config_path"] == "configs/flights.yaml" and params["artifact_root"] == ""
    assert "resources" not in executors(path)["exec-ingest"]["container"]
    assert len(ir_docs(path)) == 1
