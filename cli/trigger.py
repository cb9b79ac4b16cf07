"""`mlops trigger schedule|new-data|code-change|list|forget`: continuous training triggers.

Each trigger starts at most one run per cause (pipelines/triggers.py, mlops/triggers.py): locally
with kfp.local on the config's artifact root (`--local`, the default without --host), or on the
KFP API at --host. Prints each trigger's record as JSON; exit 1 when a local run failed.
"""

from __future__ import annotations

import datetime as dt
import sys

import click

from cli.common import config_option, emit_json, group, key_values, load, runs_in, verbose_option
from cli.kfp import compile_options, experiment_option, host_option, namespace_option, param_option, token_option
from mlops import envs
from mlops.errors import MlopsError

SLOT_ENV = "MLOPS_TRIGGER_SLOT"


class TriggeredRunFailed(MlopsError):
    """A run a trigger started locally ended FAILED (its record says why)."""


def _launch_options(fn):
    for option in reversed(
        [
            click.option(
                "--pipeline", default="training", show_default=True, help="Pipeline to run (mlops pipeline compile)."
            ),
            config_option,
            param_option,
            click.option("--local", is_flag=True, help="Run with kfp.local here (the default without --host)."),
            host_option,
            token_option,
            namespace_option,
            experiment_option,
            verbose_option,
        ]
    ):
        fn = option(fn)
    return compile_options(fn)


def _launcher(config_path, local, host, token, namespace, experiment, verbose, package, **compile_kwargs):
    from cli.pipeline import StepProgress
    from pipelines.triggers import Launcher

    if local and host:
        raise click.UsageError("--local and --host (or KF_PIPELINES_ENDPOINT) exclude each other")
    if not host and (package or any(compile_kwargs.values())):
        raise click.UsageError("--package, --target, --image-registry and --tag are for submitting (--host)")
    return Launcher(
        config_path,
        load(config_path),
        host=host or None,
        token=token,
        namespace=namespace,
        experiment=experiment,
        package=package,
        verbose=verbose,
        on_step=StepProgress(),
        **compile_kwargs,
    )


def _report(outcomes) -> None:
    """One line per trigger on stderr, the records on stdout; a failed local run fails the command."""
    for outcome in outcomes:
        r = outcome.record
        if outcome.started:
            click.echo(f"trigger {r.key}: started run {r.run_id or '-'} ({r.mode}), now {r.state}", err=True)
        else:
            click.echo(
                f"trigger {r.key}: already triggered at {r.created_at} (run {r.run_id or '-'}, {r.shown_state}); "
                "nothing started",
                err=True,
            )
    emit_json([{"started": o.started, **o.record.to_json()} for o in outcomes])
    canceled = [o.record for o in outcomes if o.started and o.record.state == "CANCELED"]
    if canceled:
        sys.exit(128 + int(canceled[0].details.get("signal", 15)))
    failed = [o.record for o in outcomes if o.started and o.record.state == "FAILED"]
    if failed:
        raise TriggeredRunFailed(f"trigger {failed[0].key}: the run failed: {failed[0].error}")


@group()
def trigger():
    """Continuous training triggers: one run per cause (schedule slot, new span, commit, alert)."""


@trigger.command("schedule")
@click.option("--name", default="nightly", show_default=True, help="Name of the schedule (part of the key).")
@click.option(
    "--slot",
    envvar=SLOT_ENV,
    help=f"The schedule tick this run is for (env {SLOT_ENV}; a CronJob passes its Job's name). "
    "Default: the current UTC minute.",
)
@_launch_options
@runs_in(envs.PIPELINE)
def trigger_schedule(name, slot, pipeline, params, **launch):
    """One run of the pipeline per schedule NAME and SLOT (the Kubernetes CronJob way; `mlops
    schedule` creates a KFP recurring run instead). A retried Job of the same slot starts nothing."""
    from pipelines.triggers import trigger_schedule as fire_schedule

    slot = slot or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%MZ")
    parameters = key_values(params, "--param", True)
    _report([fire_schedule(_launcher(**launch), pipeline, name, slot, parameters)])


@trigger.command("new-data")
@click.option("--dataset", help="Dataset name (default: the config's dataset).")
@click.option("--since", metavar="YYYY-MM", help="Only spans after this one (the ones before are trained on).")
@click.option("--window", type=int, help="Train on the last N spans up to the new one (default: all spans).")
@_launch_options
@runs_in(envs.PIPELINE)
def trigger_new_data(dataset, since, window, pipeline, params, **launch):
    """The new-data sensor: one run per dataset span not triggered yet (key: span + pipeline), with
    dataset_selector FIRST:SPAN. Run it every hour (the mlops-new-data-sensor CronJob)."""
    from pipelines.triggers import trigger_new_data as fire_new_data

    parameters = key_values(params, "--param", True)
    outcomes = fire_new_data(_launcher(**launch), pipeline, dataset, since, window, parameters)
    if not outcomes:
        click.echo("no spans to trigger on", err=True)
    _report(outcomes)


@trigger.command("code-change")
@click.option("--commit", required=True, envvar="GITHUB_SHA", help="The commit (env GITHUB_SHA in GitHub Actions).")
@_launch_options
@runs_in(envs.PIPELINE)
def trigger_code_change(commit, pipeline, params, **launch):
    """One run per commit: CI on the main branch calls it after compiling and pushing images
    (e.g. --tag COMMIT --image-registry R --host URL). A re-run of the CI job submits nothing."""
    from pipelines.triggers import trigger_code_change as fire_code_change

    parameters = key_values(params, "--param", True)
    _report([fire_code_change(_launcher(**launch), pipeline, commit, parameters)])


@trigger.command("list")
@config_option
@click.option("--kind", type=click.Choice(["schedule", "new-data", "code-change", "alert"]))
@click.option("--all", "include_released", is_flag=True, help="Also the released ones (starts that failed).")
@click.option("--json", "as_json", is_flag=True)
@runs_in(envs.PIPELINE)
def trigger_list(config_path, kind, include_released, as_json):
    """The trigger records, oldest first: what fired, why, the key, the run it started, its state."""
    from mlops.triggers import TriggerRecords

    records = TriggerRecords(load(config_path).artifact_root).list(include_released)
    records = [r for r in records if kind is None or r.kind == kind]
    if as_json:
        emit_json([{**r.to_json(), "state": r.shown_state} for r in records])
        return
    for r in records:
        click.echo(f"{r.created_at}\t{r.kind}\t{r.shown_state}\t{r.run_id or '-'}\t{r.key}\t{r.reason}")


@trigger.command("forget")
@click.argument("key")
@config_option
@runs_in(envs.PIPELINE)
def trigger_forget(key, config_path):
    """Re-arm a cause: move its record to released/, so the next trigger for it starts a run."""
    from mlops.triggers import TriggerRecords

    record = TriggerRecords(load(config_path).artifact_root).forget(key)
    click.echo(f"trigger {key}: forgotten (it was {record.shown_state}, run {record.run_id or '-'})", err=True)
