"""What `mlops models list|show|versions|history|promote|rollback|repair|diff` and `mlops lineage
MODEL@V` do, as plain dicts and rows: the click wiring (elsewhere) only prints them, as a table or
JSON. Errors are `RegistryError`s with a one-line message for the CLI to print."""

from __future__ import annotations

from typing import Any

from mlops.registry.errors import InvalidRegistryInput
from mlops.registry.store import PRODUCTION, ModelRegistry, ModelVersion, parse_selector


def _aliases_by_version(aliases: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        out.setdefault(version, []).append(alias)
    return out


def list_models(artifact_root: str) -> list[dict[str, Any]]:
    """One row per model: version count, newest version, aliases."""
    registry = ModelRegistry(artifact_root)
    rows = []
    for name in registry.list_models():
        versions = registry.versions(name)
        rows.append(
            {
                "name": name,
                "versions": len(versions),
                "latest": versions[-1].version if versions else None,
                "aliases": registry.aliases(name),
            }
        )
    return rows


def _version_row(v: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    m = v.manifest
    return {
        "version": v.version,
        "created_at": m.get("created_at"),
        "blessed": v.blessed,
        "aliases": aliases,
        "metrics": v.metrics,
        "dataset_versions": m.get("dataset_versions", []),
        "git_commit": m.get("git_commit"),
        "uri": v.uri,
    }


def list_versions(artifact_root: str, name: str) -> list[dict[str, Any]]:
    """One row per version of `name`, oldest first."""
    registry = ModelRegistry(artifact_root)
    by_version = _aliases_by_version(registry.aliases(name))
    return [_version_row(v, by_version.get(v.version, [])) for v in registry.versions(name)]


def show(artifact_root: str, selector: str) -> dict[str, Any]:
    """One version (any selector form) with its manifest, the aliases pointing at it and the other
    versions trained from the same inputs (each explained as by `diff`)."""
    registry = ModelRegistry(artifact_root)
    v = registry.resolve(selector)
    aliases = _aliases_by_version(registry.aliases(v.name)).get(v.version, [])
    twins = [
        t
        for t in registry.same_training_inputs(v.name, v.manifest.get("training_fingerprint"))
        if t.version != v.version
    ]
    return {
        "selector": v.selector,
        "uri": v.uri,
        "serving_model_uri": v.serving_model_uri,
        "tflite_uri": v.tflite_uri,
        "aliases": aliases,
        "manifest": v.manifest,
        "same_training_inputs": [compare(t, v)["verdict"] for t in twins],
    }


def compare(a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """Why two versions differ: their training inputs (the training fingerprint; else which of the
    dataset versions, config hash and git commit differ) and their bytes (which files differ)."""
    ma, mb = a.manifest, b.manifest
    files_a = {f["path"]: f["sha256"] for f in ma.get("files", [])}
    files_b = {f["path"]: f["sha256"] for f in mb.get("files", [])}
    differing_files = sorted(p for p in set(files_a) | set(files_b) if files_a.get(p) != files_b.get(p))
    same_bytes = ma.get("content_hash") == mb.get("content_hash")
    fp_a, fp_b = ma.get("training_fingerprint"), mb.get("training_fingerprint")
    recorded = ("dataset_versions", "config_hash", "git_commit")
    differing_inputs = [k for k in recorded if ma.get(k) != mb.get(k)]
    if fp_a and fp_b:
        same_inputs: bool | None = fp_a == fp_b
    else:  # registered without a fingerprint: the recorded inputs can only prove a difference
        same_inputs = False if differing_inputs else None
    pair = f"{a.selector} and {b.selector}"
    if same_bytes:
        verdict = f"{pair}: identical model files"
    elif same_inputs:
        verdict = (
            f"{pair}: same training inputs, different bytes ({', '.join(differing_files)}): "
            "training is not byte-reproducible"
        )
    elif same_inputs is None:
        verdict = f"{pair}: different bytes; training inputs unknown (registered without a training fingerprint)"
    else:
        why = ", ".join(differing_inputs) or "the inputs or code of an upstream step"
        verdict = f"{pair}: different training inputs ({why})"
    return {
        "a": a.selector,
        "b": b.selector,
        "same_training_inputs": same_inputs,
        "same_bytes": same_bytes,
        "differing_inputs": differing_inputs,
        "differing_files": differing_files,
        "verdict": verdict,
    }


def diff(artifact_root: str, selector_a: str, selector_b: str) -> dict[str, Any]:
    """`mlops models diff A B`: see `compare`."""
    registry = ModelRegistry(artifact_root)
    return compare(registry.resolve(selector_a), registry.resolve(selector_b))


def repair(artifact_root: str, name: str) -> dict[str, Any]:
    """`mlops models repair NAME`: rebuilds aliases.json from the history if it is damaged; a
    consistent model is left as it is (`changed` False)."""
    report = ModelRegistry(artifact_root).repair(name)
    return {**report, "changed": report["problem"] is not None}


def history(artifact_root: str, name: str) -> list[dict[str, Any]]:
    """Every alias move of `name`, oldest first."""
    return [m.to_json() for m in ModelRegistry(artifact_root).history(name)]


def promote(
    artifact_root: str, selector: str, alias: str = PRODUCTION, reason: str = "", actor: str | None = None
) -> dict[str, Any]:
    """Points `alias` at the version `selector` names: "flights@3", or "flights@staging" to
    promote whatever staging holds. `changed` is False when the alias already pointed there."""
    name, ref = parse_selector(selector)
    if ref is None:
        raise InvalidRegistryInput(f"promote {selector!r}: say which version, e.g. {selector}@3 or {selector}@staging")
    registry = ModelRegistry(artifact_root)
    move = registry.promote(name, registry.resolve(selector).version, alias, reason, actor=actor)
    return {"model": name, **move.to_json(), "changed": move.recorded}


def rollback(
    artifact_root: str, name: str, alias: str = PRODUCTION, reason: str = "", actor: str | None = None
) -> dict[str, Any]:
    move = ModelRegistry(artifact_root).rollback(name, alias, reason, actor=actor)
    return {"model": name, **move.to_json(), "changed": True}


def lineage_rows(config, selector: str) -> list[dict[str, Any]]:
    """Upstream lineage of a registered version, one row per step (pipeline environment only)."""
    from mlops.registry.lineage import lineage_for

    return [
        {
            "depth": s.depth,
            "type": s.artifact.type_name,
            "artifact_id": s.artifact.id,
            "uri": s.artifact.uri,
            "name": s.artifact.name,
            "produced_by": s.execution.name if s.execution else None,
            "component": s.execution.component if s.execution else None,
            "consumed_as": s.consumed_as,
            "repeated": s.repeated,
        }
        for s in lineage_for(config, selector)
    ]
