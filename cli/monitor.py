"""`mlops monitor run`: the monitoring run (stage 6) without KFP; `mlops run monitoring` is the
same step as a pipeline. Registered by cli/main.py."""

from __future__ import annotations

import click

from cli.common import config_option, console, emit_json, group, load_with_overrides, runs_in
from mlops import envs


@group()
def monitor():
    """Continuous monitoring: drift, data quality and estimated performance from payload logs."""


@monitor.command("run")
@config_option
@click.option(
    "--model",
    metavar="NAME[@ALIAS|@VERSION]",
    default="",
    help="The model whose payload logs are monitored; ALIAS/VERSION selects the version that must be in the "
    "window (default: the project's name: production, else staging). Every version in the window is assessed.",
)
@click.option("--window", default="", metavar="START:END", help="UTC range, e.g. 2013-07-01:2013-07-02 or ISO times.")
@click.option("--last", default="", metavar="DURATION", help="The window ending now: 30m, 6h, 2d, 1w.")
@click.option("--out", "out_dir", default="", help="Result directory (default <artifact_root>/monitoring/NAME/RUN_ID).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override, e.g. monitoring.detector=alibi."
)
@runs_in(envs.PIPELINE)
def monitor_run(config_path, model, window, last, out_dir, overrides):
    """Monitor a window of payload logs (online, batch and stream) against each logged model version's
    training reference. Writes result.json, report.html and the Prometheus metrics, records the run in
    ML Metadata, prints a summary as JSON; the exit code is 0 whether or not drift was found."""
    from components.monitor.executor import PIPELINE, default_out_dir, monitor, new_run_id, parse_window

    cfg = load_with_overrides(config_path, overrides)
    start, end = parse_window(window, last, cfg.monitoring.window)  # a bad window fails before any read
    run_id = new_run_id()
    name = (model or cfg.project).split("@")[0]
    out = out_dir or default_out_dir(cfg, name, run_id)
    result = monitor(cfg, model, start, end, out, pipeline=PIPELINE, run_id=run_id, log=console().print)
    emit_json(
        {
            "model": result["model"],
            "window": result["window"],
            "rows": result["rows"],
            "drifted": result["drifted"],
            "versions": [
                {
                    "version": v["version"],
                    "rows": v["rows"],
                    **({"skipped": v["skipped"]} if v.get("skipped") else {"summary": v["verdict"]["summary"]}),
                }
                for v in result["versions"]
            ],
            "result": f"{out}/result.json",
            "report": f"{out}/report.html",
            "run_id": run_id,
        }
    )
