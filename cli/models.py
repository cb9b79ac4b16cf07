"""`mlops models ...` and `mlops lineage`: the model registry (files in the artifact store)."""

from __future__ import annotations

import click

from cli.common import config_option, emit_json, group, load, runs_in
from mlops import envs


@group()
def models():
    """Model registry: versions, aliases (staging, production), promotion and rollback.

    These run in either environment (the serving image too): the registry is files in the
    artifact store and needs no ML Metadata; `mlops lineage` is the MLMD view."""


@models.command("list")
@config_option
@click.argument("name", required=False)
def models_list(config_path, name):
    """List models, or the versions of one model."""
    from mlops.registry import cli_ops

    root = load(config_path).artifact_root
    rows = cli_ops.list_versions(root, name) if name else cli_ops.list_models(root)
    emit_json(rows)


@models.command("show")
@config_option
@click.argument("selector")
def models_show(config_path, selector):
    """Show a version: NAME@VERSION, NAME@ALIAS or NAME."""
    from mlops.registry import cli_ops

    emit_json(cli_ops.show(load(config_path).artifact_root, selector))


@models.command("promote")
@config_option
@click.argument("selector")
@click.option("--to", "alias", default="production", show_default=True)
@click.option("--reason", default="")
def models_promote(config_path, selector, alias, reason):
    """Point an alias (default production) at a blessed version."""
    from mlops.registry import cli_ops

    emit_json(cli_ops.promote(load(config_path).artifact_root, selector, alias, reason))


@models.command("rollback")
@config_option
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="")
def models_rollback(config_path, name, alias, reason):
    """Move an alias back to where it pointed before its last move."""
    from mlops.registry import cli_ops

    emit_json(cli_ops.rollback(load(config_path).artifact_root, name, alias, reason))


@models.command("repair")
@config_option
@click.argument("name")
def models_repair(config_path, name):
    """Rebuild a model's aliases.json from its history.jsonl if it is damaged (prints what changed)."""
    from mlops.registry import cli_ops

    emit_json(cli_ops.repair(load(config_path).artifact_root, name))


@models.command("diff")
@config_option
@click.argument("selector_a")
@click.argument("selector_b")
def models_diff(config_path, selector_a, selector_b):
    """Say why two versions differ: same training inputs but different bytes, or different data/config/code."""
    from mlops.registry import cli_ops

    emit_json(cli_ops.diff(load(config_path).artifact_root, selector_a, selector_b))


@click.command("lineage")
@config_option
@click.argument("selector")
@runs_in(envs.PIPELINE)
def lineage(config_path, selector):
    """Print the chain from a registered model (NAME@VERSION|ALIAS) back to its dataset version."""
    from mlops.registry import cli_ops

    rows = cli_ops.lineage_rows(load(config_path), selector)
    for r in rows:
        depth = r.get("depth", 0)
        produced = f" <- {r['component']}" if r.get("component") else ""
        click.echo(f"{'  ' * depth}{r.get('type')} {r.get('name') or r.get('uri')}{produced}")
