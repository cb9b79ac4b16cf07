"""`mlops pipeline compile|run` and `mlops run`: KFP pipelines compiled to IR and run with kfp.local."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import config_option, console, group, key_values, load_with_overrides, runs_in
from mlops import envs


@group()
def pipeline():
    """Compile KFP pipelines to IR YAML and run them locally with kfp.local (also `mlops run`)."""


@pipeline.command("compile")
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Default: pipelines/compiled/.")
@runs_in(envs.PIPELINE)
def pipeline_compile(names, out_dir):
    """Compile pipelines (all when none named) and check the IR strictly."""
    from pipelines import runner

    for name in names or sorted(runner.PIPELINES):
        path = runner.compile_pipeline(name, out_dir or runner.COMPILED_DIR)
        runner.load_ir_strict(path)
        click.echo(str(path))


@click.command("run")
@click.argument("name")
@config_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Pipeline parameter, e.g. dataset_selector=2013-01:2013-06, epochs=1.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override, e.g. model.epochs=1.")
@click.option("--no-cache", is_flag=True, help="Run every step even if an identical run is cached.")
@runs_in(envs.PIPELINE)
def run(name, config_path, params, overrides, no_cache):
    """Run a pipeline locally (kfp.local, no cluster) on the config's artifact root."""
    from pipelines import runner

    cfg = load_with_overrides(config_path, overrides)
    func = runner.pipeline_func(name)
    args = {"config_path": str(Path(config_path).resolve()),
            "config_overrides": json.dumps(key_values(overrides, "--set", True)),
            "artifact_root": cfg.artifact_root}
    args.update(key_values(params, "--param", True))
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
        runner.run_local(name, cfg.artifact_root, args)
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
