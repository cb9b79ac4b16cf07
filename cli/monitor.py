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


@monitor.command("evaluate")
@config_option
@click.option(
    "--model", metavar="NAME[@ALIAS|@VERSION]", default="", help="The version whose predictions are evaluated."
)
@click.option(
    "--labels",
    required=True,
    metavar="DATASET_VERSION|NAME@SPAN|URI",
    help="Where the labels are: a dataset version id, NAME@SPAN (e.g. flights@2013-04) or a .parquet/.csv file.",
)
@click.option("--window", default="", metavar="START:END", help="UTC range of the predictions.")
@click.option("--last", default="", metavar="DURATION", help="The window ending now: 30m, 6h, 2d, 1w.")
@click.option("--every", default="", metavar="DURATION", help="Metrics per sub-window of this length (default: one).")
@click.option(
    "--keys",
    default="",
    metavar="COL,COL",
    help="Join key columns (default: request_id, else entity keys + event time).",
)
@click.option("--out", "out_dir", default="", help="Result directory (default <artifact_root>/monitoring/NAME/RUN_ID).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override.")
@runs_in(envs.PIPELINE)
def monitor_evaluate(config_path, model, labels, window, last, every, keys, out_dir, overrides):
    """Join logged predictions with labels that arrived later; live metrics overall, per window and
    slice beside the offline evaluation and the CBPE estimate, concept drift (DDM), label lag. Writes
    live.json, report.html and the Prometheus metrics, records the run in ML Metadata."""
    from components.monitor.executor import default_out_dir, parse_window
    from components.monitor.live_evaluation import evaluate, new_run_id

    cfg = load_with_overrides(config_path, overrides)
    start, end = parse_window(window, last, cfg.monitoring.window)
    run_id = new_run_id()
    out = out_dir or default_out_dir(cfg, (model or cfg.project).split("@")[0], run_id)
    key_list = [k.strip() for k in keys.split(",") if k.strip()]
    result = evaluate(
        cfg, model, labels, start, end, out, run_id=run_id, keys=key_list, every=every, log=console().print
    )
    emit_json(
        {
            "model": result["model"],
            "window": result["window"],
            "counts": result["counts"],
            "metrics": {m: result["metrics"].get(m) for m in ("auc", "precision", "recall", "calibration")},
            "concept_drift": result["concept_drift"]["detected"],
            "result": f"{out}/live.json",
            "report": f"{out}/report.html",
            "run_id": run_id,
        }
    )


@monitor.command("report")
@config_option
@click.option("--model", metavar="NAME", default="", help="The model (default: the project's name).")
@click.option(
    "--runs", "limit", default=30, show_default=True, help="The newest N monitoring runs and live evaluations."
)
@click.option("--out", default="", help="The HTML file (default <artifact_root>/monitoring/NAME/history.html).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override.")
@runs_in(envs.PIPELINE)
def monitor_report(config_path, model, limit, out, overrides):
    """One self-contained HTML page (inline SVG, no JavaScript) of a model's recent monitoring runs and
    live evaluations, for people without Grafana: drift per feature over windows, estimated (CBPE)
    vs realised vs offline AUC, label lag; prints where it wrote it."""
    from mlops.config import join_uri
    from mlops.monitoring.history import write_report

    cfg = load_with_overrides(config_path, overrides)
    name = (model or cfg.project).split("@")[0]
    emit_json(write_report(cfg, name, out or join_uri(cfg.artifact_root, "monitoring", name, "history.html"), limit))
