"""Where a compiled pipeline runs: kfp.local on this machine, or a Kubernetes cluster's KFP.

On a cluster every step runs in its own pod with an ephemeral file system, so a pipeline compiled
for it must carry the cluster's locations as its parameter defaults: the platform config the pods
load (configs/cluster.yaml: an object-store artifact root, KFP's metadata-grpc-service for ML
Metadata) and that config's artifact root. A target file (configs/cluster-kfp.yaml) names that
config and says what every step's pod gets:

    config: cluster.yaml                     # the platform config, relative to this file, in the repo
    env: {AWS_ENDPOINT_URL: http://minio-service.kubeflow:9000}
    secret_env: [{secret: mlpipeline-minio-artifact, key: accesskey, env: AWS_ACCESS_KEY_ID}]
    steps:
      default: {cpu_request: 500m, memory_request: 1Gi, cpu_limit: "2", memory_limit: 2Gi}
      trainer: {cpu_request: "2", memory_request: 2Gi, node_selector: {pool: training}}

`steps.default` applies to every step; a step's own entry (by component name) replaces the values
it sets and adds node selector labels. Compiling for the cluster refuses a platform config whose
artifact root or ML Metadata would live inside a pod.
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops import images
from mlops.config import ConfigError, PlatformConfig, format_validation_error, load_config
from mlops.envs import REPO_ROOT

DEFAULT_TARGET_PATH = REPO_ROOT / "configs" / "cluster-kfp.yaml"
DEFAULT_STEP = "default"

# Kubernetes quantities as kfp's task setters accept them (kfp/dsl/pipeline_task.py).
_CPU = r"^([0-9]*[.])?[0-9]+m?$"
_MEMORY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSettings(_Strict):
    """A step's pod: CPU and memory requests and limits, node selector labels."""

    cpu_request: str | None = Field(None, pattern=_CPU)
    cpu_limit: str | None = Field(None, pattern=_CPU)
    memory_request: str | None = Field(None, pattern=_MEMORY)
    memory_limit: str | None = Field(None, pattern=_MEMORY)
    node_selector: dict[str, str] = Field(default_factory=dict)

    def over(self, base: StepSettings) -> StepSettings:
        """These settings on top of `base`: values set here win, node selector labels add up."""
        merged = {**base.model_dump(exclude_none=True), **self.model_dump(exclude_none=True)}
        merged["node_selector"] = {**base.node_selector, **self.node_selector}
        return StepSettings(**merged)


class SecretEnv(_Strict):
    """One key of a Kubernetes Secret as an environment variable of every step."""

    secret: str = Field(min_length=1)
    key: str = Field(min_length=1)
    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class TargetSpec(_Strict):
    config: str = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[SecretEnv] = Field(default_factory=list)
    steps: dict[str, StepSettings] = Field(default_factory=dict)


class CompileTarget:
    """What a pipeline definition applies to its tasks, and the defaults of its parameters.

    `parameters` are the pipeline parameter defaults baked into the IR ({}: the Python defaults,
    i.e. configs/flights.yaml and the config's own artifact root: the local target)."""

    def __init__(
        self,
        name: str,
        *,
        parameters: dict[str, str] | None = None,
        spec: TargetSpec | None = None,
        image_registry: str | None = None,
        image_tag: str | None = None,
    ):
        self.name = name
        self.parameters = parameters or {}
        self.spec = spec or TargetSpec(config="configs/flights.yaml")
        # Neither set: each component keeps its base image (mlops.images); else the image of the
        # same name (pipeline, serving) from this registry / with this tag.
        self.image_registry, self.image_tag = image_registry, image_tag
        if image_registry or image_tag:
            images.image(images.PIPELINE, image_registry, image_tag)  # a bad registry or tag fails here

    def image_of(self, base_image: str) -> str:
        """The image a step runs: its component's base image moved to this target's registry/tag."""
        if not (self.image_registry or self.image_tag):
            return base_image
        name = base_image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
        return images.image(name, self.image_registry, self.image_tag)

    def step_settings(self, step: str) -> StepSettings:
        base = self.spec.steps.get(DEFAULT_STEP, StepSettings())
        own = self.spec.steps.get(step)
        return own.over(base) if own else base

    def configure(self, *tasks) -> None:
        """Sets image, resources, node selectors, environment and secrets on each task."""
        from kfp import kubernetes

        for task in tasks:
            step = task.component_spec.name.replace("-", "_")
            if task.container_spec is None:
                raise ValueError(f"{step}: only single-step components take images and resources")
            # kfp's setters check the same with inspect.stack(), which reads the source of every
            # frame and scans sys.modules for each: seconds per call in a process that imported
            # TensorFlow (a cluster compile inside the test suite took minutes). Checked above.
            task._ensure_container_spec_exists = _container_spec_checked
            if self.image_registry or self.image_tag:
                task.set_container_image(self.image_of(task.container_spec.image))
            s = self.step_settings(step)
            for setter, value in (
                (task.set_cpu_request, s.cpu_request),
                (task.set_cpu_limit, s.cpu_limit),
                (task.set_memory_request, s.memory_request),
                (task.set_memory_limit, s.memory_limit),
            ):
                if value is not None:
                    setter(value)
            for key, value in sorted(s.node_selector.items()):
                kubernetes.add_node_selector(task, key, value)
            for name, value in sorted(self.spec.env.items()):
                task.set_env_variable(name, value)
            by_secret: dict[str, dict[str, str]] = {}
            for item in self.spec.secret_env:
                by_secret.setdefault(item.secret, {})[item.key] = item.env
            for secret, key_to_env in sorted(by_secret.items()):
                kubernetes.use_secret_as_env(task, secret, key_to_env)


def _container_spec_checked() -> None:
    """CompileTarget.configure checked the container spec already (see there)."""


LOCAL = CompileTarget("local")


def known_steps() -> set[str]:
    """The component names a target may configure (one package per component)."""
    import components

    return {m.name for m in pkgutil.iter_modules(components.__path__) if m.ispkg}


def load_target(
    path: str | os.PathLike = DEFAULT_TARGET_PATH, image_registry: str | None = None, image_tag: str | None = None
) -> CompileTarget:
    """Reads a cluster target file and the platform config it names; checks that nothing the steps
    share would stay inside a pod. Errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: target file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        spec = TargetSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, e)) from None
    unknown = sorted(set(spec.steps) - known_steps() - {DEFAULT_STEP})
    if unknown:
        raise ConfigError(
            f"{path}: steps.{unknown[0]}: unknown step; known: {DEFAULT_STEP}, {', '.join(sorted(known_steps()))}"
        )
    config_file = (path.parent / spec.config).resolve()
    try:
        in_image = config_file.relative_to(REPO_ROOT)
    except ValueError:
        raise ConfigError(
            f"{path}: config: {spec.config} is outside the project ({REPO_ROOT}), so not in the image"
        ) from None
    config = load_config(config_file)
    check_shared_state(config, where=f"{in_image}")
    parameters = {"config_path": str(in_image), "artifact_root": config.artifact_root}
    return CompileTarget(
        "cluster", parameters=parameters, spec=spec, image_registry=image_registry, image_tag=image_tag
    )


def check_shared_state(config: PlatformConfig, where: str) -> None:
    """Refuses a config that keeps what steps share (artifact root: dataset repository, registry,
    step cache, Feast registry; ML Metadata) on a pod's own file system, where it is lost."""
    root = config.artifact_root
    if "://" not in root or root.startswith("file://"):
        raise ConfigError(
            f"{where}: artifact_root: {root!r} is a path inside the container; on a cluster each step's pod "
            "would keep its own copy and lose it: use an object store URI (e.g. s3://mlops/artifacts)"
        )
    if config.metadata.backend == "sqlite":
        raise ConfigError(
            f"{where}: metadata.backend: sqlite keeps ML Metadata in a file of one pod: use grpc "
            "(KFP's metadata-grpc-service) or mysql"
        )
