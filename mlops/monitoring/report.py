"""The monitoring report: one self-contained HTML page (inline SVG, no external JS or CSS), so it
opens offline, in KFP's sandboxed HTML viewer and as an e-mail attachment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlops.monitoring.drift import NUMERIC, category_counts, present_categorical, present_numeric
from mlops.validation import report as html

REFERENCE_COLOUR, WINDOW_COLOUR = "#7a8fa6", "#d9822b"
BINS = 20
TOP_CATEGORIES = 12


def numeric_histogram(reference, window, bins: int = BINS) -> tuple[list[str], list[float], list[float]]:
    """Shares per bin over the reference's 1st-99th percentile range (the tails go to the edge bins)."""
    ref, cur = present_numeric(reference), present_numeric(window)
    if not ref.size:
        return [], [], []
    lo, hi = np.percentile(ref, [1, 99])
    if hi <= lo:
        lo, hi = float(ref.min()) - 0.5, float(ref.max()) + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    def shares(x):
        if not x.size:
            return np.zeros(bins)
        counts = np.bincount(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1), minlength=bins)
        return counts / x.size

    labels = [f"{edges[i]:.4g}" for i in range(bins)]
    return labels, shares(ref).tolist(), shares(cur).tolist()


def categorical_histogram(reference, window, top: int = TOP_CATEGORIES):
    ref, cur = present_categorical(reference), present_categorical(window)
    if not (ref.size or cur.size):
        return [], [], []
    cats, r, c = category_counts(ref, cur)
    rs, cs = r / max(r.sum(), 1), c / max(c.sum(), 1)
    order = np.argsort(-(rs + cs))[:top]
    return [cats[i] for i in order], rs[order].tolist(), cs[order].tolist()


def bars_svg(labels: Sequence[str], reference: Sequence[float], window: Sequence[float], width=420, height=120) -> str:
    """Paired bars (reference grey, window orange) per bin or category."""
    if not labels:
        return '<p class="note">no values</p>'
    top = max(max(reference, default=0), max(window, default=0)) or 1.0
    slot = width / len(labels)
    bar = max(slot / 2 - 1, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 14}" role="img">']
    for i, (label, r, c) in enumerate(zip(labels, reference, window)):
        x = i * slot
        for j, (share, colour) in enumerate(((r, REFERENCE_COLOUR), (c, WINDOW_COLOUR))):
            h = share / top * height
            side = "reference" if j == 0 else "window"
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.esc(label)}: {side} {share:.3f}</title></rect>'
            )
    parts.append(f'<text x="0" y="{height + 12}" font-size="10">{html.esc(labels[0])}</text>')
    parts.append(f'<text x="{width}" y="{height + 12}" font-size="10" text-anchor="end">{html.esc(labels[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def feature_plot(kind: str, reference, window) -> str:
    hist = numeric_histogram if kind == NUMERIC else categorical_histogram
    return bars_svg(*hist(reference, window))


def render(result: dict, plots: dict[str, str]) -> str:
    """The page for one monitoring result (components/monitor's JSON) and its per-feature plots."""
    sections = [
        f"<p><b>{html.esc(result['model'])}</b>, window {html.esc(result['window']['start'])} &rarr; "
        f"{html.esc(result['window']['end'])}; detector <b>{html.esc(result['detector'])}</b>. "
        f'<span style="color:{REFERENCE_COLOUR}">&#9632; training reference</span> '
        f'<span style="color:{WINDOW_COLOUR}">&#9632; window</span></p>'
    ]
    for version in result["versions"]:
        v = version
        head = f"<h2>Version {html.esc(v['version'])}: {v['rows']:,} rows</h2>"
        if v.get("skipped"):
            sections.append(head + f'<p class="note">{html.esc(v["skipped"])}</p>')
            continue
        verdict = v["verdict"]
        cls = "fail" if verdict["drifted"] else "ok"
        sampled = v.get("sample", {}).get("rows", v["rows"])
        note = (
            f'<p class="note">Counts, missing/OOV rates, categorical drift and TFDV statistics over all '
            f"{v['rows']:,} rows; numeric and prediction drift, the joint check, CBPE and the plots on a "
            f"uniform random sample of {sampled:,} rows.</p>"
            if sampled < v["rows"]
            else ""
        )
        sections.append(
            head + f'<p class="{cls}"><b>{"DRIFT" if verdict["drifted"] else "no drift"}</b>: '
            f"{html.esc(verdict['summary'])}</p>" + note
        )
        est = v["estimated_performance"]
        sections.append(
            "<h3>Estimated performance (CBPE, no labels yet)</h3>"
            + html.table(
                ["metric", "estimate", "band low", "band high", "training evaluation"],
                [(m, e["value"], e["low"], e["high"], e.get("reference")) for m, e in est["metrics"].items()],
                numeric=(1, 2, 3, 4),
            )
        )
        p, j = v["prediction_drift"], v["joint_drift"]
        sections.append(
            "<h3>Prediction and joint drift</h3>"
            + html.table(
                ["check", "score", "threshold", "p-value", "drifted"],
                [
                    ("prediction: " + p["effect_name"], p["effect"], p["threshold"], p["p_value"], p["drifted"]),
                    (j["method"], j["score"], j["threshold"], j.get("p_value"), j["drifted"]),
                ],
                numeric=(1, 2, 3),
            )
            + plots.get(f"{v['version']}/prediction", "")
        )
        rows = []
        for d in v["feature_drift"]:
            q = v["quality"].get(d["feature"], {})
            plot = plots.get(f"{v['version']}/{d['feature']}", "")
            verdict_class = "fail" if d["drifted"] else "ok"
            rows.append(
                f"<tr><td>{html.esc(d['feature'])}</td><td>{html.esc(d['kind'])}</td>"
                f'<td class="num">{html.esc(html.fmt(d["effect"]))}</td>'
                f'<td class="num">{html.esc(html.fmt(d["threshold"]))}</td>'
                f'<td class="num">{html.esc(html.fmt(d["p_value"]))}</td><td class="{verdict_class}">'
                f"{'DRIFT' if d['drifted'] else 'ok'}</td>"
                f'<td class="num">{html.esc(html.fmt(q.get("missing_rate")))}</td>'
                f'<td class="num">{html.esc(html.fmt(q.get("oov_rate")))}</td>'
                f"<td>{plot}</td></tr>"
            )
        sections.append(
            "<h3>Features: training reference vs window</h3><table><thead><tr>"
            + "".join(
                f"<th>{h}</th>"
                for h in (
                    "feature",
                    "kind",
                    "effect size",
                    "threshold",
                    "p-value",
                    "verdict",
                    "missing",
                    "OOV",
                    "distribution",
                )
            )
            + "</tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
        tfdv_rows = [(m["feature"], m["measure"], m["value"], m["threshold"], m["exceeded"]) for m in v["tfdv"]["skew"]]
        sections.append(
            "<h3>TFDV comparators (schema level)</h3>"
            + html.table(["feature", "measure", "value", "threshold", "exceeded"], tfdv_rows, numeric=(2, 3))
            + "<h3>Serving data vs the schema (SERVING environment)</h3>"
            + html.table(
                ["feature", "kind", "severity", "description"],
                [(a["feature"], a["kind"], a["severity"], a["description"]) for a in v["tfdv"]["anomalies"]],
            )
            + "<h3>Rows served with feature-store defaults</h3>"
            + html.table(["group", "rows"], sorted(v["store_defaults"].items()), numeric=(1,))
        )
    return html.page(f"Monitoring: {result['model']}", sections)
