"""`mlops monitor report`: the recent monitoring runs and live evaluations of one model on one
self-contained HTML page (inline SVG, no JS, no external CSS), for people without Grafana: drift
scores per feature over past windows, estimated (CBPE, with its band) vs realised AUC over time
beside the offline AUC, label lag.

Reads what the runs wrote under <artifact_root>/monitoring/<model>/<run id>/: result.json of a
monitoring run (components/monitor/executor.py), live.json of a live evaluation
(components/monitor/live_evaluation.py). Points are placed at the end of their window.

Beside them, what the pipeline steps used (section 6 of the stage: wall time, CPU seconds and peak
RSS per step, which the local runner, pipelines/runner.py, measures and puts on each step's ML
Metadata execution; mlops.step_resources): the newest pipeline runs' steps, read from ML Metadata.
"""

from __future__ import annotations

import datetime as dt
import json

from mlops import storage
from mlops.config import join_uri
from mlops.errors import MlopsError, NotFound
from mlops.validation import report as html

MONITORING_RESULT, LIVE_RESULT = "result.json", "live.json"
PALETTE = ("#1f77b4", "#d9822b", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
WIDTH, HEIGHT, PAD = 640, 220, 44


class NoMonitoringRuns(NotFound):
    """No monitoring run or live evaluation of the model under the artifact root."""


def load_runs(model_dir: str, limit: int) -> tuple[list[dict], list[dict]]:
    """The newest `limit` monitoring results and live evaluations (each by window end, oldest first)."""
    monitoring, live = [], []
    for run in storage.listdir(model_dir):
        if run.startswith("."):  # a run's staging directory
            continue
        for name, into in ((MONITORING_RESULT, monitoring), (LIVE_RESULT, live)):
            uri = join_uri(model_dir, run, name)
            if storage.exists(uri):
                into.append(json.loads(storage.read_bytes(uri)))
    if not (monitoring or live):
        raise NoMonitoringRuns(f"no monitoring runs under {model_dir}: run `mlops monitor run` first")

    def by_end(results):
        return sorted(results, key=lambda r: (r["window"]["end"], r.get("finished_at", "")))[-limit:]

    return by_end(monitoring), by_end(live)


def _epoch(iso: str) -> float:
    t = dt.datetime.fromisoformat(iso)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def line_chart(series: dict[str, list[tuple[float, float]]], *, band=None, y_label: str = "", threshold=None) -> str:
    """An SVG line chart: one <path> per series (x = epoch seconds), an optional shaded band
    [(x, low, high)] and a dashed threshold line; a legend below."""
    points = [p for pts in series.values() for p in pts] + [(x, v) for x, lo, hi in band or () for v in (lo, hi)]
    if not points:
        return '<p class="note">no points yet</p>'
    xs = [x for x, _ in points]
    ys = [y for _, y in points] + ([threshold] if threshold is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    span = y1 - y0
    y0, y1 = y0 - 0.05 * span, y1 + 0.05 * span

    def sx(x):
        return PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def sy(y):
        return HEIGHT - PAD / 2 - (y - y0) / (y1 - y0) * (HEIGHT - PAD)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 20}" role="img">']
    parts.append(f'<rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - PAD}" fill="#fafafa"/>')
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{PAD - 4}" y="{sy(y) + 3:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    for x, anchor in ((x0, "start"), (x1, "end")):
        label = dt.datetime.fromtimestamp(x, dt.UTC).strftime("%Y-%m-%d %H:%M")
        parts.append(f'<text x="{sx(x):.1f}" y="{HEIGHT + 2}" font-size="10" text-anchor="{anchor}">{label}</text>')
    if y_label:
        parts.append(f'<text x="4" y="12" font-size="10">{html.esc(y_label)}</text>')
    if band:
        upper = " ".join(f"{sx(x):.1f},{sy(hi):.1f}" for x, _, hi in band)
        lower = " ".join(f"{sx(x):.1f},{sy(lo):.1f}" for x, lo, _ in reversed(band))
        parts.append(f'<polygon class="band" points="{upper} {lower}" fill="{PALETTE[1]}" fill-opacity="0.2"/>')
    if threshold is not None:
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{sy(threshold):.1f}" y2="{sy(threshold):.1f}" '
            f'stroke="#a01616" stroke-dasharray="4 3"><title>threshold {threshold:.3g}</title></line>'
        )
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        if pts:
            d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
            parts.append(
                f'<path class="series" d="{d}" fill="none" stroke="{colour}" stroke-width="2"><title>'
                f"{html.esc(name)}</title></path>"
            )
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
        legend.append(f'<span style="color:{colour}">&#9632; {html.esc(name)}</span>')
    parts.append("</svg>")
    return "".join(parts) + f'<p class="note">{" &nbsp; ".join(legend)}</p>'


def _selected_version(result: dict) -> dict | None:
    assessed = [v for v in result["versions"] if not v.get("skipped")]
    return next((v for v in assessed if v.get("selected")), assessed[0] if assessed else None)


STEP_RUNS = 10  # newest pipeline runs whose step resources the page shows


def step_resources(config, runs: int = STEP_RUNS) -> list[dict]:
    """Per step of the newest `runs` pipeline runs that have measured steps (newest run first, its
    steps in order): pipeline, run, step, state, wall_seconds, cpu_seconds, peak_rss_bytes."""
    from mlops.metadata.store import open_store

    store = open_store(config)
    out, seen = [], 0
    for run in sorted(store.list_contexts("PipelineRun"), key=lambda r: (r.create_time_ms, r.id), reverse=True):
        steps = [e for e in store.list_executions(run.name) if "wall_seconds" in e.properties]
        if not steps:
            continue
        for e in steps:
            used = e.properties
            out.append(
                {
                    "pipeline": run.properties.get("pipeline_name", ""),
                    "run": run.name,
                    "step": used.get("step", e.component),
                    "state": e.state,
                    "wall_seconds": used.get("wall_seconds"),
                    "cpu_seconds": used.get("cpu_seconds"),
                    "peak_rss_bytes": used.get("peak_rss_bytes"),
                }
            )
        seen += 1
        if seen == runs:
            break
    return out


def _resources_section(steps: list[dict] | str) -> list[str]:
    from mlops.step_resources import human_bytes

    head = "<h2>Pipeline step resources</h2>"
    if isinstance(steps, str):  # ML Metadata could not be read: the page is still written
        return [head, f'<p class="note">{html.esc(steps)}</p>']
    rows = [
        (
            s["pipeline"],
            s["run"],
            s["step"],
            s["state"],
            s["wall_seconds"],
            s["cpu_seconds"],
            human_bytes(s["peak_rss_bytes"]) if s["peak_rss_bytes"] is not None else None,
        )
        for s in steps
    ]
    return [
        head,
        '<p class="note">Measured by the pipeline runner per step (its process tree: CPU = user + system, '
        "peak RSS = the largest process's), recorded in ML Metadata; newest runs first.</p>",
        html.table(["pipeline", "run", "step", "state", "wall s", "CPU s", "peak RSS"], rows, numeric=(4, 5, 6)),
    ]


def render(model: str, monitoring: list[dict], live: list[dict], steps: list[dict] | str = ()) -> str:
    drift: dict[str, list] = {}
    prediction: dict[str, list] = {}
    estimated, band, rows = [], [], []
    offline: dict[float, float] = {}  # one point per window: a monitoring run and a live evaluation both know it
    threshold = None
    for result in monitoring:
        x = _epoch(result["window"]["end"])
        v = _selected_version(result)
        if v is None:
            continue
        for d in v["feature_drift"]:
            if d["effect"] is not None:
                drift.setdefault(d["feature"], []).append((x, d["effect"]))
        if v["prediction_drift"]["effect"] is not None:
            prediction.setdefault(f"prediction v{v['version']}", []).append((x, v["prediction_drift"]["effect"]))
        if v["joint_drift"]["score"] is not None:
            prediction.setdefault(v["joint_drift"]["method"], []).append((x, v["joint_drift"]["score"]))
        auc = v["estimated_performance"]["metrics"].get("auc", {})
        if auc.get("value") is not None:
            estimated.append((x, auc["value"]))
            if auc.get("low") is not None and auc.get("high") is not None:
                band.append((x, auc["low"], auc["high"]))
        if auc.get("reference") is not None:
            offline[x] = auc["reference"]
        threshold = result.get("thresholds", {}).get("numeric_wasserstein", threshold)
        rows.append(
            (
                result["window"]["start"],
                result["window"]["end"],
                f"v{v['version']}",
                v["rows"],
                "DRIFT" if v["verdict"]["drifted"] else "ok",
                sum(d["drifted"] for d in v["feature_drift"]),
                auc.get("value"),
                result.get("run_id"),
            )
        )
    realised, lag, live_rows = [], {}, []
    for result in live:
        x = _epoch(result["window"]["end"])
        if result["metrics"].get("auc") is not None:
            realised.append((x, result["metrics"]["auc"]))
        offline_auc = result.get("offline", {}).get("auc", {}).get("offline")
        if offline_auc is not None:
            offline[x] = offline_auc
        for q, seconds in result.get("label_lag_seconds", {}).items():
            if q != "known":
                lag.setdefault(f"lag {q}", []).append((x, seconds / 3600))
        live_rows.append(
            (
                result["window"]["start"],
                result["window"]["end"],
                f"v{result['version']}",
                result["counts"].get("matched"),
                result["metrics"].get("auc"),
                result.get("concept_drift", {}).get("detected"),
                result.get("run_id"),
            )
        )
    sections = [
        f"<p><b>{html.esc(model)}</b>: {len(monitoring)} monitoring run(s), {len(live)} live evaluation(s); "
        "points at the end of their window (UTC).</p>",
        "<h2>Feature drift over windows</h2>",
        line_chart(drift, y_label="effect size", threshold=threshold),
        "<h2>Prediction and joint drift over windows</h2>",
        line_chart(prediction, y_label="score"),
        "<h2>AUC: estimated (CBPE, shaded band) vs realised vs offline</h2>",
        line_chart(
            {"estimated": estimated, "realised (labels)": realised, "offline": sorted(offline.items())},
            band=band,
            y_label="AUC",
        ),
        "<h2>Label lag</h2>",
        line_chart(lag, y_label="hours"),
        "<h2>Monitoring runs</h2>",
        html.table(
            ["window start", "window end", "version", "rows", "verdict", "features drifted", "estimated AUC", "run"],
            rows,
            numeric=(3, 5, 6),
        ),
        "<h2>Live evaluations</h2>",
        html.table(
            ["window start", "window end", "version", "matched", "AUC", "concept drift", "run"],
            live_rows,
            numeric=(3, 4),
        ),
        *_resources_section(list(steps) if not isinstance(steps, str) else steps),
    ]
    return html.page(f"Monitoring history: {model}", sections)


def write_report(config, model: str, out: str, limit: int = 30) -> dict:
    """Renders the page of `model`'s newest runs to `out` (atomically); returns a summary."""
    model_dir = join_uri(config.artifact_root, "monitoring", model)
    monitoring, live = load_runs(model_dir, limit)
    try:
        steps: list[dict] | str = step_resources(config)
    except MlopsError as e:
        steps = f"step resources not shown: {e}"
    storage.write_bytes_atomic(out, render(model, monitoring, live, steps).encode())
    return {
        "model": model,
        "monitoring_runs": len(monitoring),
        "live_evaluations": len(live),
        "step_resources": len(steps) if isinstance(steps, list) else None,
        "report": out,
    }
