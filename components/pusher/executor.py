"""Pusher: a blessed model becomes a new version in the model registry (alias `staging`);
an unblessed one is not registered, and the step says why. Either way the run succeeds:
a model that does not beat production is an outcome, not an error.

A model already registered is not registered twice: neither the same files (a re-run served
from the step cache) nor a model trained from the same inputs (a `--no-cache` re-run: same
dataset versions, config sections and code, so the same training fingerprint, but new bytes,
since a SavedModel is not byte-reproducible). The step names the existing version, and the
run's MLMD record links its model to it."""

from __future__ import annotations

from dataclasses import dataclass

from mlops import artifacts, storage
from mlops.config import PlatformConfig, join_uri
from mlops.steps import Location, RunContext, StepResult, source_version

CODE_VERSION = source_version("pusher", __name__)


@dataclass
class PushResult:
    pushed: bool
    reason: str
    model_name: str
    version: int | None = None
    uri: str | None = None


def model_name(config: PlatformConfig) -> str:
    return config.project


def training_fingerprint(model_dir: str) -> str | None:
    """The Trainer's step-cache fingerprint of its output: a hash of the dataset versions, the
    config sections and the code of every step up to the Trainer (mlops.steps.cache_key). None
    for a model directory no Trainer step produced."""
    from mlops.steps import FINGERPRINT_FILE

    marker = join_uri(model_dir, FINGERPRINT_FILE)
    if not storage.exists(marker):
        return None
    return storage.read_bytes(marker).decode().strip() or None


def already_registered(registry, name: str, model_dir: str, fingerprint: str | None):
    """(version, why) of a registered version with the same files or the same training inputs."""
    from mlops.registry.errors import RegistryNotFound
    from mlops.registry.store import model_content_hash

    try:
        versions = registry.versions(name)
    except RegistryNotFound:  # the model's first registration
        return None, ""
    digest = model_content_hash(model_dir)
    same = next((v for v in versions if v.manifest.get("content_hash") == digest), None)
    if same is not None:
        return same, "identical model files"
    twins = registry.same_training_inputs(name, fingerprint)
    if twins:
        return twins[-1], "same training inputs: dataset versions, config and code"
    return None, ""


def push(
    config: PlatformConfig,
    *,
    model_dir: str,
    evaluation_dir: str,
    blessing: dict,
    dataset_versions: list[str],
    git_commit: str,
) -> PushResult:
    from mlops.registry.store import ModelRegistry

    name = model_name(config)
    if not blessing.get("blessed"):
        return PushResult(False, f"not registered: {blessing.get('reason', 'not blessed')}", name)
    registry = ModelRegistry(config.artifact_root)
    fingerprint = training_fingerprint(model_dir)
    same, why = already_registered(registry, name, model_dir, fingerprint)
    if same is not None:  # a re-run: nothing new to register
        return PushResult(False, f"already registered as {same.selector} ({why})", name, same.version, same.uri)
    metrics = storage.read_json(join_uri(evaluation_dir, artifacts.METRICS_FILE))
    candidate = metrics["overall"].get("candidate", {})
    version = registry.register(
        name,
        model_dir,
        metrics=candidate,
        blessing=blessing,
        dataset_versions=dataset_versions,
        config_hash=config.content_hash(),
        git_commit=git_commit,
        task=config.dataset.label.task.value,
        output_key=artifacts.OUTPUT_KEY[config.dataset.label.task],
        features=[{"name": f.name, "dtype": f.dtype} for f in artifacts.model_features(config)],
        training_fingerprint=fingerprint,
    )
    return PushResult(True, f"registered {version.selector} (alias staging)", name, version.version, version.uri)


def _require_recorded(config: PlatformConfig, model_uri: str, blessing_uri: str) -> None:
    from mlops.metadata.store import open_store
    from mlops.registry.errors import RegistryNotFound

    store = open_store(config)
    for type_name, uri in (("Model", model_uri), ("ModelBlessing", blessing_uri)):
        if store.find_artifact(type_name, uri=uri) is None:
            raise RegistryNotFound(
                f"pusher: no {type_name} artifact {uri} in ML Metadata: the upstream step did not "
                f"record it, so a registration would have no lineage"
            )


def run_step(
    config: PlatformConfig,
    *,
    model_dir: str,
    model_uri: str,
    evaluation_dir: str,
    blessing_dir: str,
    blessing_uri: str,
    examples_dir: str,
    pipeline: str,
    run_id: str,
    log=print,
) -> PushResult:
    from components.example_gen.executor import read_info
    from mlops.registry.lineage import record_registration
    from mlops.steps import git_commit, record_step

    blessing = storage.read_json(join_uri(blessing_dir, artifacts.BLESSING_FILE))
    _require_recorded(config, model_uri, blessing_uri)  # before registering: no version without lineage
    result = push(
        config,
        model_dir=model_dir,
        evaluation_dir=evaluation_dir,
        blessing=blessing,
        dataset_versions=read_info(examples_dir).dataset_versions,
        git_commit=git_commit(),
    )
    log(f"pusher: {result.reason}")
    if result.version is not None:  # newly registered, or the same files registered before
        from mlops.registry.store import ModelRegistry

        version = ModelRegistry(config.artifact_root).get(result.model_name, result.version)
        record_registration(
            config,
            version,
            run_id=run_id,
            pipeline=pipeline,
            model_artifact_uri=model_uri,
            blessing_artifact_uri=blessing_uri,
        )
    else:
        from mlops.metadata.store import ArtifactRef

        record_step(
            config,
            pipeline=pipeline,
            run_id=run_id,
            component="pusher",
            inputs={"blessing": [ArtifactRef("ModelBlessing", blessing_uri)]},
            properties={"code_version": CODE_VERSION, "error": result.reason},
        )
    from mlops.training_metrics import push_training_success

    push_training_success(config.monitoring.pushgateway_url, result.model_name, pipeline)
    return result


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"model", "evaluation", "blessing", "examples"}; no
    artifact outputs (the registry version is the result)."""
    from dataclasses import asdict

    result = run_step(
        config,
        model_dir=inputs["model"].path,
        model_uri=inputs["model"].uri,
        evaluation_dir=inputs["evaluation"].path,
        blessing_dir=inputs["blessing"].path,
        blessing_uri=inputs["blessing"].uri,
        examples_dir=inputs["examples"].path,
        pipeline=context.pipeline,
        run_id=context.run_id,
    )
    return StepResult(values=asdict(result))
