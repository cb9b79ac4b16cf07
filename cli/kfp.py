"""`mlops submit`, `mlops schedule`, `mlops runs ...`: pipelines on a cluster's KFP (kfp.Client).

--host is the KFP API (e.g. http://localhost:8888 after `kubectl -n kubeflow port-forward
svc/ml-pipeline 8888:8888`; env KF_PIPELINES_ENDPOINT). Auth: --token / $MLOPS_KFP_TOKEN (bearer),
else in a pod the service account token at $KF_PIPELINES_SA_TOKEN_PATH. `runs list|get|compare`
without --host read ML Metadata of --config (local runs).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile

import click

from cli.common import config_option, emit_json, group, key_values, load, runs_in
from mlops import envs

host_option = click.option(
    "--host",
    envvar="KF_PIPELINES_ENDPOINT",
    help="KFP API URL, e.g. http://localhost:8888 (env KF_PIPELINES_ENDPOINT).",
)
token_option = click.option(
    "--token", help="Bearer token for the KFP API (default $MLOPS_KFP_TOKEN, else the SA token)."
)
namespace_option = click.option("--namespace", help="KFP namespace (multi-user deployments).")
param_option = click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE", help="Pipeline parameter, e.g. epochs=1 (repeatable)."
)
experiment_option = click.option("--experiment", default="Default", show_default=True, help="KFP experiment.")
COMPILE_OPTIONS = [
    click.option(
        "--package", type=click.Path(exists=True, dir_okay=False), help="Compiled IR to use (default: compile now)."
    ),
    click.option("--target", "target_path", type=click.Path(dir_okay=False), help="Cluster target file (compile)."),
    click.option("--image-registry", help="Registry of the images the IR names (compile)."),
    click.option("--tag", "image_tag", help="Tag of the images the IR names (compile)."),
]


def compile_options(fn):
    for option in reversed(COMPILE_OPTIONS):
        fn = option(fn)
    return fn


def _client(host, token, namespace):
    from pipelines.submit import connect

    if not host:
        raise click.UsageError("--host (or KF_PIPELINES_ENDPOINT) is required: the KFP API URL")
    return connect(host, token, namespace)


def _ir_and_params(name, params, package, target_path, image_registry, image_tag, workdir):
    """(KFP pipeline name, IR path, checked parameters). The IR is `package` (strictly parsed) or
    a fresh compile for the cluster target."""
    from pipelines import runner
    from pipelines.submit import ir_for_upload

    arguments = runner.check_arguments(name, key_values(params, "--param", True))
    if package and (target_path or image_registry or image_tag):
        raise click.UsageError("--package is compiled already: --target, --image-registry and --tag do not apply")
    path = ir_for_upload(name, workdir, package, target_path, image_registry, image_tag)
    return runner.load_ir_strict(path).pipeline_info.name, path, arguments


@click.command("submit")
@click.argument("name")
@host_option
@token_option
@namespace_option
@param_option
@experiment_option
@click.option("--run-name", help="Display name of the run (default: NAME and the UTC time).")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the run to end; exit non-zero unless it SUCCEEDED.")
@click.option("--timeout", default=6 * 3600, show_default=True, type=float, help="Seconds to wait (--wait).")
@compile_options
@runs_in(envs.PIPELINE)
def submit(name, host, token, namespace, params, experiment, run_name, wait_, timeout, **compile_kwargs):
    """Run pipeline NAME on KFP: upload its IR as a pipeline version (reused when the same
    content was uploaded before), then create the run. Prints the run as JSON."""
    from pipelines import submit as kfp_api

    with tempfile.TemporaryDirectory(prefix="mlops-submit-") as workdir:
        pipeline_name, path, arguments = _ir_and_params(name, params, workdir=workdir, **compile_kwargs)
        client = _client(host, token, namespace)
        run_name = run_name or f"{name} {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"
        result = kfp_api.submit(client, pipeline_name, path, arguments, experiment, run_name)
    click.echo(
        f"run {result['run_id']} created ({'reused' if result['pipeline_version_reused'] else 'uploaded'} "
        f"pipeline version {result['pipeline_version']})",
        err=True,
    )
    if wait_:
        result = {**result, **kfp_api.wait(client, result["run_id"], timeout, on_state=_show_state)}
    emit_json(result)


@click.command("schedule")
@click.argument("name")
@click.option("--cron", required=True, help="Cron: 5 fields ('0 3 * * *' = daily 03:00 UTC) or 6 with seconds.")
@click.option("--schedule-name", help="Name of the recurring run (default: NAME-schedule); one per name.")
@host_option
@token_option
@namespace_option
@param_option
@experiment_option
@compile_options
@runs_in(envs.PIPELINE)
def schedule(name, cron, schedule_name, host, token, namespace, params, experiment, **compile_kwargs):
    """Create a recurring run of NAME on KFP: no backfill of missed intervals, at most one run at
    a time. Idempotent by name: the same settings again change nothing; new ones replace it."""
    from pipelines import submit as kfp_api

    kfp_api.kfp_cron(cron)  # a bad --cron fails before compiling or connecting
    with tempfile.TemporaryDirectory(prefix="mlops-schedule-") as workdir:
        pipeline_name, path, arguments = _ir_and_params(name, params, workdir=workdir, **compile_kwargs)
        client = _client(host, token, namespace)
        result = kfp_api.schedule(
            client, pipeline_name, path, schedule_name or f"{name}-schedule", cron, arguments, experiment
        )
    click.echo(f"recurring run {result['name']} {result['action']} ({result['recurring_run_id']})", err=True)
    emit_json(result)


@group()
def runs():
    """Pipeline runs: on KFP with --host, else the local runs recorded in ML Metadata."""


@runs.command("list")
@host_option
@token_option
@namespace_option
@click.option("--experiment", help="Only this KFP experiment's runs (--host).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@config_option
@click.option("--json", "as_json", is_flag=True)
@runs_in(envs.PIPELINE)
def runs_list(host, token, namespace, experiment, limit, config_path, as_json):
    """Recent runs, newest first."""
    if host:
        from pipelines.submit import list_runs

        records = list_runs(_client(host, token, namespace), experiment, limit)
    else:
        records = _local_runs(config_path)[-limit:][::-1]
    if as_json:
        emit_json(records)
        return
    for r in records:
        label = r.get("name") or r.get("pipeline") or "-"
        click.echo(f"{r['run_id']}\t{r.get('state') or '-'}\t{label}\t{r.get('created_at') or ''}")


def _local_runs(config_path) -> list[dict]:
    from mlops.metadata import types as T
    from mlops.metadata.store import open_store, run_state

    contexts = open_store(load(config_path)).list_contexts(T.RUN_CONTEXT)
    return [
        {
            "run_id": c.name,
            "pipeline": c.properties.get("pipeline_name", ""),
            "state": run_state(c) or None,
            "created_at": dt.datetime.fromtimestamp(c.create_time_ms / 1000, dt.UTC).isoformat(),
            "config_hash": c.properties.get("config_hash"),
            "git_commit": c.properties.get("git_commit"),
            "parameters": json.loads(c.properties["parameters"]) if c.properties.get("parameters") else None,
        }
        for c in contexts
    ]


@runs.command("get")
@click.argument("run_id")
@host_option
@token_option
@namespace_option
@config_option
@runs_in(envs.PIPELINE)
def runs_get(run_id, host, token, namespace, config_path):
    """One run as JSON: state, parameters, times (KFP), or what ML Metadata recorded (local)."""
    if host:
        from pipelines.submit import get_run

        emit_json(get_run(_client(host, token, namespace), run_id))
        return
    from pipelines.run_compare import RunsNotFound

    found = [r for r in _local_runs(config_path) if r["run_id"] == run_id]
    if not found:
        raise RunsNotFound(f"runs get: no run {run_id} in ML Metadata of {config_path}")
    emit_json(found[0])


@runs.command("wait")
@click.argument("run_id")
@host_option
@token_option
@namespace_option
@click.option("--timeout", default=6 * 3600, show_default=True, type=float, help="Seconds.")
@click.option("--poll", default=5.0, show_default=True, type=float, help="Seconds between polls.")
@runs_in(envs.PIPELINE)
def runs_wait(run_id, host, token, namespace, timeout, poll):
    """Wait for a KFP run to end: exit 0 when it SUCCEEDED, 1 when it FAILED or was CANCELED,
    75 when the timeout passed first (the run goes on)."""
    from pipelines.submit import wait

    emit_json(wait(_client(host, token, namespace), run_id, timeout, poll, on_state=_show_state))


def _show_state(run: dict) -> None:
    click.echo(f"run {run['run_id']}: {run['state']}", err=True)


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@host_option
@token_option
@namespace_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of the table.")
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), help="Also write an HTML page with metric charts."
)
@runs_in(envs.PIPELINE)
def runs_compare(run_ids, host, token, namespace, config_path, as_json, html_path):
    """Parameters, dataset versions, config hash, code commit and metrics of two or more runs
    side by side (* marks what differs). ML Metadata of --config, plus the KFP API with --host."""
    from mlops import storage
    from pipelines.run_compare import compare, render_html, table

    client = _client(host, token, namespace) if host else None
    comparison = compare(list(run_ids), load(config_path), client)
    if html_path:
        storage.write_bytes_atomic(html_path, render_html(comparison).encode())
        click.echo(f"wrote {html_path}", err=True)
    if as_json:
        emit_json(comparison)
    else:
        click.echo(table(comparison))
