"""`mlops metadata ...`: what ML Metadata recorded (artifacts, executions, runs, lineage)."""

from __future__ import annotations

import click

from cli.common import config_option, emit_json, group, load, runs_in
from mlops import envs


@group()
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

    records = _store(config_path).list_artifacts(type_name)
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
    """List pipeline runs (MLMD run contexts): id, pipeline, run id, state, config hash.

    State: RUNNING, COMPLETE, FAILED or CANCELED as the run's driver recorded it; ABANDONED for a
    RUNNING run whose driver process is gone (killed with SIGKILL; its steps died with it);
    "-" for a run whose steps ran without a local driver (a KFP cluster run)."""
    from mlops.metadata import types as T
    from mlops.metadata.store import run_state

    for r in _store(config_path).list_contexts(T.RUN_CONTEXT):
        click.echo(
            f"{r.id}\t{r.properties.get('pipeline_name', '')}\t{r.name}\t{run_state(r) or '-'}\t"
            f"{r.properties.get('config_hash', '')}"
        )


@metadata.command("lineage")
@config_option
@click.argument("artifact_id", type=int)
@runs_in(envs.PIPELINE)
def metadata_lineage(config_path, artifact_id):
    """Print the upstream lineage of an artifact, as a tree."""
    for step in _store(config_path).lineage(artifact_id):
        a, e = step.artifact, step.execution
        by = f" <- {e.component} [{e.name}]" if e else ""
        via = f" (as {step.consumed_as})" if step.consumed_as else ""
        click.echo(
            f"{'  ' * step.depth}{a.type_name} {a.name or a.uri}{via}{by}{' (see above)' if step.repeated else ''}"
        )
