"""Scale-out by configuration (README "Scale-out"): one `beam:` section chooses the runner of every
Beam step, the compiled IR carries the step resources and hands the steps the runner settings of
its config (or of a run's overrides), and the serving overlays autoscale the InferenceService.
The DaskRunner itself runs in tests/integration/test_dask_runner.py."""

from __future__ import annotations

import json

import pytest
import yaml

from mlops import beam as mlops_beam
from mlops.config import BeamSpec, ConfigError, DaskSpec, load_config
from mlops.steps import Location, load_step_config
from pipelines import runner
from pipelines.target import load_target
from tests.support.fixtures import FLIGHTS_CONFIG, REPO
from tests.support.k8s_validation import kustomize, needs_shared, validate

CLUSTER_CONFIG = REPO / "configs" / "cluster.yaml"
CLUSTER_TARGET = REPO / "configs" / "cluster-kfp.yaml"
BEAM_STEPS = ("statistics_gen", "transform", "evaluator")
DASK_BEAM = {"runner": "dask", "options": ["--dask_connection_timeout=60"], "dask": {"address": "tcp://dask:8786"}}


@pytest.fixture
def no_cluster_env(monkeypatch):
    for var in ("MLOPS_CLUSTER_ARTIFACT_ROOT", "MLOPS_CLUSTER_METADATA_HOST", "MLOPS_CLUSTER_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)


# --- the beam section ----------------------------------------------------------------------------


def test_the_shipped_configs_run_beam_in_process(artifact_root, no_cluster_env):
    for path in (FLIGHTS_CONFIG, CLUSTER_CONFIG):
        spec = load_config(path).beam
        assert mlops_beam.is_direct(spec) and mlops_beam.workers_share_paths(spec)


@pytest.mark.parametrize(
    ("options", "message"),
    [(["--runner=DataflowRunner"], "the runner is beam.runner"), (["project=x"], "not a pipeline flag")],
)
def test_bad_beam_options_fail_naming_the_field(options, message, artifact_root):
    with pytest.raises(ConfigError, match=rf"beam\.options.*{message}"):
        load_config(FLIGHTS_CONFIG, overrides={"beam.options": options})


def test_the_runner_is_a_run_override_and_not_part_of_the_config_hash(artifact_root):
    local = load_config(FLIGHTS_CONFIG)
    dask = load_config(FLIGHTS_CONFIG, overrides={"beam": DASK_BEAM})
    assert dask.beam == BeamSpec(**DASK_BEAM)
    assert dask.content_hash() == local.content_hash()  # the same outputs on every runner
    with pytest.raises(ConfigError, match="beam.dask.workers"):
        load_config(FLIGHTS_CONFIG, overrides={"beam.dask.workers": 0})


@pytest.mark.parametrize(
    ("spec", "shared"),
    [
        (BeamSpec(), True),
        (BeamSpec(runner="DirectRunner"), True),
        (BeamSpec(runner="dask"), True),  # a LocalCluster on this machine
        (BeamSpec(runner="dask", dask=DaskSpec(address="tcp://dask:8786")), False),
        (BeamSpec(runner="DataflowRunner", options=["--project=p", "--region=r"]), False),
    ],
)
def test_steps_hand_remote_workers_the_artifact_uris(spec, shared):
    location = Location(path="/gcs/bucket/examples", uri="gs://bucket/examples")
    assert mlops_beam.where(spec, location) == (location.path if shared else location.uri)


def test_on_dask_only_the_statistics_leave_the_process():
    """Transform's TFT gives wrong vocabularies on the DaskRunner (README "Scale-out"): it stays
    in-process there, and goes to every other runner."""
    dask = BeamSpec(runner="dask", dask=DaskSpec(address="tcp://dask:8786"))
    assert mlops_beam.for_step(dask, "statistics_gen") == dask
    assert mlops_beam.is_direct(mlops_beam.for_step(dask, "transform"))
    dataflow = BeamSpec(runner="DataflowRunner", options=["--project=p"])
    assert mlops_beam.for_step(dataflow, "transform") == dataflow


# --- the compiled IR -----------------------------------------------------------------------------


def _ir(path):
    return list(yaml.safe_load_all(path.read_text()))


def _defaults(path) -> dict:
    params = _ir(path)[0]["root"]["inputDefinitions"]["parameters"]
    return {name: p.get("defaultValue") for name, p in params.items()}


def test_committed_ir_gives_the_beam_steps_their_resources_and_runner(no_cluster_env):
    """The pods of the Beam steps get the target's requests and limits, and load the runner
    settings of the config the IR names (the same object the steps build their pipeline from)."""
    path = runner.COMPILED_DIR / "training.yaml"
    target = yaml.safe_load(CLUSTER_TARGET.read_text())["steps"]
    executors = _ir(path)[0]["deploymentSpec"]["executors"]
    for step in BEAM_STEPS:
        resources = executors[f"exec-{step.replace('_', '-')}"]["container"]["resources"]
        assert {"cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"} <= set(resources), step
        wanted = {**target["default"], **target[step]}
        assert resources["cpuLimit"] == pytest.approx(float(wanted["cpu_limit"])), step
    params = _defaults(path)
    config = load_step_config(params["config_path"], params.get("config_overrides") or "", params["artifact_root"])
    assert config.beam == load_config(CLUSTER_CONFIG).beam


def test_a_run_sets_the_runner_through_its_config_overrides(no_cluster_env):
    """The KFP UI's config_overrides parameter of a run reaches the steps' config."""
    params = _defaults(runner.COMPILED_DIR / "training.yaml")
    assert "config_overrides" in params
    config = load_step_config(params["config_path"], json.dumps({"beam": DASK_BEAM}), params["artifact_root"])
    assert config.beam.runner == "dask" and config.beam.dask.address == "tcp://dask:8786"
    assert config.beam.options == ["--dask_connection_timeout=60"]


@pytest.fixture
def dask_target(tmp_path):
    """A target (in configs/, as targets must be) whose platform config runs Beam on a Dask cluster."""
    config = yaml.safe_load(CLUSTER_CONFIG.read_text())
    config["beam"] = DASK_BEAM
    config_path = REPO / "configs" / f".test-dask-{tmp_path.name}.yaml"
    target = yaml.safe_load(CLUSTER_TARGET.read_text())
    target["config"] = config_path.name
    target_path = REPO / "configs" / f".test-dask-target-{tmp_path.name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    target_path.write_text(yaml.safe_dump(target))
    yield target_path, config_path
    target_path.unlink(missing_ok=True)
    config_path.unlink(missing_ok=True)


def test_compiling_for_a_dask_config_bakes_it_into_the_ir(dask_target, no_cluster_env, tmp_path):
    target_path, config_path = dask_target
    ir = runner.compile_pipeline("training", tmp_path, load_target(target_path))
    runner.load_ir_strict(ir)
    params = _defaults(ir)
    assert params["config_path"] == f"configs/{config_path.name}"
    config = load_step_config(params["config_path"], params.get("config_overrides") or "", params["artifact_root"])
    assert config.beam == BeamSpec(**DASK_BEAM)
    transform = _ir(ir)[0]["deploymentSpec"]["executors"]["exec-transform"]["container"]["resources"]
    assert transform["cpuLimit"] == 2.0 and transform["memoryLimit"] == pytest.approx(4 * 1.073741824)


# --- serving autoscaling -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inference_services(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("kustomize")
    out = {}
    for overlay in ("local-kind", "production"):
        docs = kustomize(REPO / "manifests" / "overlays" / overlay, tmp)
        [out[overlay]] = [d for d in docs if d["kind"] == "InferenceService" and d["metadata"]["name"] == "flights"]
    return out


def _mode(isvc: dict) -> str:
    return isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]


def test_every_overlay_autoscales_the_model_server(inference_services):
    for overlay, isvc in inference_services.items():
        predictor = isvc["spec"]["predictor"]
        assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"], overlay
        assert predictor["scaleTarget"] > 0, overlay
    production = inference_services["production"]["spec"]["predictor"]
    # Knative: on concurrent requests per pod, never scaled to zero (a cold start would miss the latency SLO)
    assert _mode(inference_services["production"]) == "Knative"
    assert production["scaleMetric"] == "concurrency" and production["minReplicas"] >= 2
    assert production["maxReplicas"] > production["minReplicas"]
    kind = inference_services["local-kind"]["spec"]["predictor"]
    assert _mode(inference_services["local-kind"]) == "Standard" and kind["scaleMetric"] == "cpu"  # an HPA


@needs_shared
def test_autoscaling_fields_are_checked_against_the_kserve_crd(inference_services):
    import copy

    import jsonschema

    validate(inference_services["production"])
    wrong = copy.deepcopy(inference_services["production"])
    wrong["spec"]["predictor"]["scaleMetric"] = "requests"  # not one of KServe's metrics
    with pytest.raises(jsonschema.ValidationError, match="requests"):
        validate(wrong)
