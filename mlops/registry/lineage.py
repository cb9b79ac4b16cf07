"""Registered versions in ML Metadata (pipeline environment only).

The artifact store says WHAT a version is; MLMD says WHERE IT CAME FROM. Registration is
recorded as a `pusher` execution of the run that trained the model: its inputs are the trained
`mlops.Model` (and, if given, the Evaluator's `mlops.ModelBlessing`), its output an
`mlops.PushedModel` named "<name>@<version>" whose uri is the registry's version directory. So
`MetadataStore.lineage()` from the PushedModel walks back through Evaluator, Trainer, Transform,
ExampleGen... to the Dataset version.

mlops.metadata (ml-metadata) is imported inside the functions: this module imports anywhere,
but only works where ml-metadata is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops.registry.errors import RegistryNotFound
from mlops.registry.store import ModelRegistry, ModelVersion, parse_selector

if TYPE_CHECKING:
    from mlops.config import PlatformConfig
    from mlops.metadata.store import LineageStep, MetadataStore

COMPONENT = "pusher"


def record_registration(
    config: PlatformConfig,
    model_version: ModelVersion,
    *,
    run_id: str,
    pipeline: str,
    model_artifact_uri: str,
    blessing_artifact_uri: str | None = None,
    store: MetadataStore | None = None,
) -> int:
    """Records `model_version` as the PushedModel output of the run's pusher execution; returns
    the PushedModel artifact id. Idempotent (re-recording updates the same execution).

    The trained model must already be in MLMD (recorded by the Trainer): a registration whose
    lineage stops at an unknown model would look complete while hiding where it came from."""
    from mlops.metadata.store import ArtifactRef, open_store

    store = store or open_store(config)
    if store.find_artifact("Model", uri=model_artifact_uri) is None:
        raise RegistryNotFound(
            f"{model_version.selector}: no mlops.Model artifact with uri {model_artifact_uri} in "
            "ML Metadata; record the Trainer's execution before the registration"
        )
    if blessing_artifact_uri and store.find_artifact("ModelBlessing", uri=blessing_artifact_uri) is None:
        raise RegistryNotFound(
            f"{model_version.selector}: no mlops.ModelBlessing artifact with uri "
            f"{blessing_artifact_uri} in ML Metadata; record the Evaluator's execution first"
        )
    manifest = model_version.manifest
    props = {"config_hash": manifest.get("config_hash"), "git_commit": manifest.get("git_commit")}
    run = store.run_context(pipeline, run_id, props)
    version = str(model_version.version)
    inputs = {
        "model": [ArtifactRef("Model", model_artifact_uri, properties={"name": model_version.name, "version": version})]
    }
    if blessing_artifact_uri:
        inputs["model_blessing"] = [ArtifactRef("ModelBlessing", blessing_artifact_uri)]
    pushed = ArtifactRef(
        "PushedModel",
        model_version.uri,
        name=model_version.selector,
        properties={"name": model_version.name, "version": version, "destination": model_version.uri},
    )
    recorded = store.record_execution(run, COMPONENT, inputs, {"pushed_model": [pushed]}, properties=props)
    return recorded.output_ids["pushed_model"][0]


def lineage_for(config: PlatformConfig, selector: str, *, store: MetadataStore | None = None) -> list[LineageStep]:
    """Upstream lineage of a registered version: "flights@3", or an alias ("flights@production",
    "flights"), which is resolved through the registry first."""
    from mlops.metadata.store import open_store

    name, ref = parse_selector(selector)
    if ref is None or not ref.isdigit():
        selector = ModelRegistry.from_config(config).resolve(selector).selector
    else:
        selector = f"{name}@{int(ref)}"
    store = store or open_store(config)
    artifact = store.find_artifact("PushedModel", name=selector)
    if artifact is None:
        raise RegistryNotFound(
            f"{selector}: no mlops.PushedModel named {selector!r} in ML Metadata "
            f"({config.metadata.backend}); it was registered without recording its lineage"
        )
    return store.lineage(artifact.id)
