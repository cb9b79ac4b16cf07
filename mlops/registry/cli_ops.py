"""What `mlops models list|show|versions|history|promote|rollback` and `mlops lineage MODEL@V`
do, as plain dicts and rows: the click wiring (elsewhere) only prints them, as a table or JSON.
Errors are `RegistryError`s with a one-line message for the CLI to print."""

from __future__ import annotations

from typing import Any

from mlops.registry.errors import RegistryError
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
        rows.append({"name": name, "versions": len(versions), "latest": versions[-1].version if versions else None,
                     "aliases": registry.aliases(name)})
    return rows


def _version_row(v: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    m = v.manifest
    return {"version": v.version, "created_at": m.get("created_at"), "blessed": v.blessed, "aliases": aliases,
            "metrics": v.metrics, "dataset_versions": m.get("dataset_versions", []), "git_commit": m.get("git_commit"),
            "uri": v.uri}


def list_versions(artifact_root: str, name: str) -> list[dict[str, Any]]:
    """One row per version of `name`, oldest first."""
    registry = ModelRegistry(artifact_root)
    by_version = _aliases_by_version(registry.aliases(name))
    return [_version_row(v, by_version.get(v.version, [])) for v in registry.versions(name)]


def show(artifact_root: str, selector: str) -> dict[str, Any]:
    """One version (any selector form) with its manifest and the aliases pointing at it."""
    registry = ModelRegistry(artifact_root)
    v = registry.resolve(selector)
    aliases = _aliases_by_version(registry.aliases(v.name)).get(v.version, [])
    return {"selector": v.selector, "uri": v.uri, "serving_model_uri": v.serving_model_uri,
            "tflite_uri": v.tflite_uri, "aliases": aliases, "manifest": v.manifest}


def history(artifact_root: str, name: str) -> list[dict[str, Any]]:
    """Every alias move of `name`, oldest first."""
    return [m.to_json() for m in ModelRegistry(artifact_root).history(name)]


def promote(artifact_root: str, selector: str, alias: str = PRODUCTION, reason: str = "",
            actor: str | None = None) -> dict[str, Any]:
    """Points `alias` at the version `selector` names: "flights@3", or "flights@staging" to
    promote whatever staging holds. `changed` is False when the alias already pointed there."""
    name, ref = parse_selector(selector)
    if ref is None:
        raise RegistryError(f"promote {selector!r}: say which version, e.g. {selector}@3 or {selector}@staging")
    registry = ModelRegistry(artifact_root)
    move = registry.promote(name, registry.resolve(selector).version, alias, reason, actor=actor)
    return {"model": name, **move.to_json(), "changed": move.recorded}


def rollback(artifact_root: str, name: str, alias: str = PRODUCTION, reason: str = "",
             actor: str | None = None) -> dict[str, Any]:
    move = ModelRegistry(artifact_root).rollback(name, alias, reason, actor=actor)
    return {"model": name, **move.to_json(), "changed": True}


def lineage_rows(config, selector: str) -> list[dict[str, Any]]:
    """Upstream lineage of a registered version, one row per step (pipeline environment only)."""
    from mlops.registry.lineage import lineage_for

    return [{"depth": s.depth, "type": s.artifact.type_name, "artifact_id": s.artifact.id, "uri": s.artifact.uri,
             "name": s.artifact.name, "produced_by": s.execution.name if s.execution else None,
             "component": s.execution.component if s.execution else None, "consumed_as": s.consumed_as,
             "repeated": s.repeated}
            for s in lineage_for(config, selector)]
