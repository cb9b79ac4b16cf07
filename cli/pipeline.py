"""`mlops pipeline compile|run` and `mlops run`: KFP pipelines compiled to IR and run with kfp.local."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.common import config_option, group, key_values, load_with_overrides, runs_in, verbose_option
from mlops import envs


@group()
def pipeline():
    """Compile KFP pipelines to IR YAML and run them locally with kfp.local (also `mlops run`)."""


@pipeline.command("compile")
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Default: pipelines/compiled/ (cluster).")
@click.option(
    "--target",
    "target_path",
    type=click.Path(dir_okay=False),
    help="Cluster target file: platform config of the pods, per-step resources (default configs/cluster-kfp.yaml).",
)
@click.option(
    "--local",
    "local",
    is_flag=True,
    help="Compile for kfp.local instead (configs/flights.yaml, no pod settings) into pipelines/compiled/local/.",
)
@click.option("--image-registry", help="Registry of the images the IR names, e.g. localhost:5001/mlops.")
@click.option("--tag", "image_tag", help="Tag of the images the IR names, e.g. a git commit.")
@runs_in(envs.PIPELINE)
def pipeline_compile(names, out_dir, target_path, local, image_registry, image_tag):
    """Compile pipelines (all when none named) to KFP IR and check it strictly.

    By default for a cluster's KFP (what to upload in the KFP UI or with `mlops submit`): the
    parameters default to configs/cluster.yaml and its object-store artifact root, ML Metadata
    is KFP's metadata-grpc-service, and each step gets the requests, limits and node selectors
    of the target file."""
    from pipelines import runner
    from pipelines.target import DEFAULT_TARGET_PATH, CompileTarget, load_target

    if local and target_path:
        raise click.UsageError("--local and --target exclude each other")
    if local:
        target = CompileTarget("local", image_registry=image_registry, image_tag=image_tag)
        out_dir = out_dir or runner.COMPILED_DIR / "local"
    else:
        target = load_target(target_path or DEFAULT_TARGET_PATH, image_registry, image_tag)
    for name in names or sorted(runner.PIPELINES):
        path = runner.compile_pipeline(name, out_dir or runner.COMPILED_DIR, target)
        runner.load_ir_strict(path)
        click.echo(str(path))


@click.command("run")
@click.argument("name")
@config_option
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pipeline parameter, e.g. dataset_selector=2013-01:2013-06, epochs=1.",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override, e.g. model.epochs=1.")
@click.option("--no-cache", is_flag=True, help="Run every step even if an identical run is cached.")
@verbose_option
@runs_in(envs.PIPELINE)
def run(name, config_path, params, overrides, no_cache, verbose):
    """Run a pipeline locally (kfp.local, no cluster) on the config's artifact root.

    Prints one line per step (time, ok / cache hit) and a summary; each step's full log is kept
    in <run dir>/logs/ (-v shows it live). SIGTERM or Ctrl-C cancels the run: its steps are
    killed, ML Metadata records it CANCELED, the exit code is 128 + the signal number."""
    from pipelines import runner

    chosen = key_values(params, "--param", True)
    if no_cache:
        if "enable_cache" not in (runner.pipeline_func(name).component_spec.inputs or {}):
            raise runner.PipelineParameterInvalid(f"--no-cache: pipeline {name} has no cache to disable")
        chosen["enable_cache"] = False
    runner.check_arguments(name, chosen)  # a bad --param fails in one line, before anything else
    cfg = load_with_overrides(config_path, overrides)
    args = runner.check_arguments(
        name,
        {
            "config_path": str(Path(config_path).resolve()),
            "config_overrides": json.dumps(key_values(overrides, "--set", True)),
            "artifact_root": cfg.artifact_root,
            **chosen,
        },
    )
    progress = StepProgress()
    try:
        result = runner.run_local(name, cfg.artifact_root, args, config=cfg, verbose=verbose, on_step=progress)
    except runner.RunCancelled as e:
        at = f" during step {e.step}" if e.step else ""
        click.echo(
            f"pipeline {name} cancelled ({signal_name(e.signum)}){at}; its steps were stopped and the "
            "run is marked CANCELED in ML Metadata",
            err=True,
        )
        sys.exit(128 + e.signum)
    _print_summary(result)


def signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


class StepProgress:
    """One line per step on stderr: "  transform          44.2 s  ok". On a terminal the step's
    name shows while it runs."""

    def __init__(self):
        self.tty = sys.stderr.isatty()

    def __call__(self, task, result) -> None:
        if result is None:
            if self.tty:
                click.echo(f"  {task:<20} ...", err=True, nl=False)
            return
        line = f"  {task:<20} {result.seconds:7.1f} s  {result.status}"
        click.echo(("\r" if self.tty else "") + line + ("\033[K" if self.tty else ""), err=True)


# What the closing summary shows of the steps' outputs: {output name: label}, for parameters and
# for artifacts' metadata; Metrics artifacts and HTML reports are recognised by type.
_SUMMARY_KEYS = {"model_version": "registry", "version_id": "dataset", "rows": "rows"}


def _print_summary(result) -> None:
    """The run's results: metrics, blessing, registry version, reports, dataset; per step its wall
    time, CPU seconds and peak RSS (also in ML Metadata and the step metrics)."""
    lines = [f"pipeline {result.pipeline} finished in {result.seconds:.1f} s (run {result.run_id}): {result.run_dir}"]
    for step in result.steps:
        for key, value in step.outputs.items():
            lines += [f"  {label:<9} {text}" for label, text in _summary_of(step.task, key, value)]
    lines += [f"  step      {s.task:<20} {_resources_text(s)}" for s in result.steps]
    lines.append(f"  logs      {Path(result.run_dir, 'logs')}/")
    click.echo("\n".join(lines), err=True)


def _resources_text(step) -> str:
    """A step's use, e.g. `44.2 s wall    61.3 s CPU   1.21 GiB peak RSS` ("-" where not measured)."""
    from mlops.step_resources import human_bytes

    used = step.resources
    cpu = f"{used.cpu_seconds:7.1f} s" if used and used.cpu_seconds is not None else f"{'-':>7}  "
    rss = human_bytes(used.peak_rss_bytes) if used and used.peak_rss_bytes is not None else "-"
    return f"{step.seconds:7.1f} s wall {cpu} CPU {rss:>10} peak RSS"


def _summary_of(task: str, key: str, value):
    from kfp import dsl

    if not isinstance(value, dsl.Artifact):
        if key in _SUMMARY_KEYS and value not in ("", None):
            yield _SUMMARY_KEYS[key], str(value)
        return
    meta = value.metadata or {}
    if isinstance(value, dsl.Metrics) and meta:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(meta.items()))
        yield "metrics", f"{shown} ({task})"
    elif isinstance(value, dsl.HTML):
        yield "report", value.path
    elif isinstance(value, dsl.Markdown) and Path(value.path).is_file():  # a step's own summary
        text = [line.strip() for line in Path(value.path).read_text().splitlines()]
        yield task, next((line for line in text if line and not line.startswith("#")), "")
    elif key == "blessing" and "blessed" in meta:
        yield "blessing", f"{'blessed' if meta['blessed'] else 'NOT blessed'}: {meta.get('reason', '')}".rstrip(": ")
    for meta_key, label in _SUMMARY_KEYS.items():
        if meta.get(meta_key) not in (None, ""):
            yield label, str(meta[meta_key])


pipeline.add_command(run)
