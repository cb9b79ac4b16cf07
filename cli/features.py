"""`mlops features ...`: the Feast feature repository (apply, materialize, online reads)."""

from __future__ import annotations

import click

from cli.common import config_option, console, emit_json, group, key_values, load, runs_in
from mlops import envs


@group()
def features():
    """Feast feature repository: build sources, apply, materialize, read online features.

    The serving environment's Feast owns the repo's writes (registry, online store); the
    pipeline environment only reads the registry for point-in-time training sets."""


@features.command("apply")
@config_option
@runs_in(envs.SERVING)
def features_apply(config_path):
    """Build the feature sources (rolling aggregates) from the dataset repository and apply the repo."""
    from mlops.features import store

    cfg = load(config_path)
    with console().status("building feature sources and applying the feature repo"):
        sources = store.build_feature_sources(cfg)
        applied = store.apply(cfg)
    for name, version in sources.items():
        console().print(f"source {name}: {version.id} ({version.row_count:,} rows)")
    emit_json(applied)


@features.command("materialize")
@config_option
@click.option("--start", help="ISO time (default: start of the sources).")
@click.option("--end", help="ISO time (default: end of the sources).")
@runs_in(envs.SERVING)
def features_materialize(config_path, start, end):
    """Load feature values into the online store (SQLite by default, Redis by config)."""
    import datetime as dt

    from mlops.features import store

    cfg = load(config_path)
    parse = lambda v: dt.datetime.fromisoformat(v) if v else None
    with console().status("materializing into the online store"):
        store.materialize(cfg, parse(start), parse(end))
    console().print(f"[green]materialized[/green] into the {cfg.features.online_store} online store")


@features.command("get")
@config_option
@click.option(
    "--entity",
    "entities",
    multiple=True,
    required=True,
    metavar="KEY=VALUE",
    help="Entity key or request field, repeatable: --entity origin=JFK --entity tailnum=N14228 ...",
)
@runs_in(envs.SERVING)
def features_get(config_path, entities):
    """Read the model's features for one entity row from the online store."""
    from mlops.features import store

    row = key_values(entities, "--entity", parse_json=False)
    result = store.online_features(load(config_path), [row])
    emit_json(result[0])
