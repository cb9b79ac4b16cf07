"""`mlops runs compare`: two or more pipeline runs side by side.

For each run: its parameters, the dataset versions it read, the config hash and code commit its
steps recorded, and the model metrics of its evaluation. ML Metadata (the config's store: SQLite
locally, KFP's metadata-grpc-service on a cluster) holds what the steps recorded under the run id;
with a KFP client the run's state and parameters come from the KFP API (a local run's parameters
were recorded by its driver). Output: JSON, a text table, or an HTML page with one bar chart per
metric.
"""

from __future__ import annotations

import html
import json
from typing import Any

from mlops.config import PlatformConfig
from mlops.errors import InvalidInput, NotFound


class RunsNotFound(NotFound):
    """A run id that neither ML Metadata nor the KFP API knows."""


def compare(run_ids: list[str], config: PlatformConfig | None, client=None) -> dict[str, Any]:
    """{"runs": [one record per run id, in the order given], "differs": [fields whose values differ]}."""
    if len(run_ids) < 2:
        raise InvalidInput("runs compare: give two or more run ids")
    store = None
    if config is not None:
        from mlops.metadata.store import open_store

        store = open_store(config)
    records, missing = [], []
    for run_id in run_ids:
        record = {"run_id": run_id, **(_from_metadata(store, run_id) if store else {})}
        if client is not None:
            from pipelines.submit import KfpNotFound, get_run

            try:
                kfp_run = get_run(client, run_id)
            except KfpNotFound:
                kfp_run = None
            if kfp_run is not None:
                record.update(name=kfp_run["name"], state=kfp_run["state"], parameters=kfp_run["parameters"])
                record["found_in"] = [*record.get("found_in", []), "kfp"]
        if not record.get("found_in"):
            missing.append(run_id)
        records.append(record)
    if missing:
        where = "ML Metadata" + (" or the KFP API" if client is not None else "")
        raise RunsNotFound(f"runs compare: no run {', '.join(missing)} in {where}")
    fields = ("parameters", "datasets", "config_hash", "git_commit", "metrics")
    differs = [f for f in fields if len({json.dumps(r.get(f), sort_keys=True) for r in records}) > 1]
    return {"runs": records, "differs": differs}


def _from_metadata(store, run_id: str) -> dict[str, Any]:
    from mlops.metadata import types as T
    from mlops.metadata.store import run_state

    context = next((c for c in store.list_contexts(T.RUN_CONTEXT) if c.name == run_id), None)
    if context is None:
        return {}
    in_run = {a.id for a in store.mlmd.get_artifacts_by_context(context.id)}
    datasets = sorted(
        a.name or a.properties.get("version_id") or a.uri for a in store.list_artifacts("Dataset") if a.id in in_run
    )
    evaluations = [a for a in store.list_artifacts("ModelEvaluation") if a.id in in_run]
    models = [a for a in store.list_artifacts("Model") if a.id in in_run]
    metrics: dict[str, Any] = {}
    for artifact in evaluations or models:
        metrics.update(json.loads(artifact.properties.get("metrics") or "{}"))
    props = context.properties
    return {
        "pipeline": props.get("pipeline_name", ""),
        "state": run_state(context) or None,
        "parameters": json.loads(props["parameters"]) if props.get("parameters") else None,
        "datasets": datasets,
        "models": sorted(f"{a.properties.get('name')}@{a.properties.get('version')}" for a in models),
        "config_hash": props.get("config_hash"),
        "git_commit": props.get("git_commit"),
        "metrics": {k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) or v is None},
        "found_in": ["mlmd"],
    }


def table(comparison: dict[str, Any]) -> str:
    """Runs as columns, fields as rows (parameters and metrics one row per key); * marks a difference."""
    runs = comparison["runs"]
    rows: list[tuple[str, list[str]]] = [("run", [r["run_id"] for r in runs])]
    for field in ("pipeline", "state", "config_hash", "git_commit"):
        rows.append((field, [str(r.get(field) or "-") for r in runs]))
    rows.append(("datasets", [", ".join(r.get("datasets") or []) or "-" for r in runs]))
    for group in ("parameters", "metrics"):
        keys = sorted({k for r in runs for k in (r.get(group) or {})})
        for key in keys:
            rows.append(
                (f"{group[:-1] if group == 'parameters' else 'metric'} {key}", [_cell(r, group, key) for r in runs])
            )
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(values[i]) for _, values in rows) for i in range(len(runs))]
    lines = []
    for label, values in rows:
        mark = "*" if len(set(values)) > 1 and label != "run" else " "
        lines.append(mark + label.ljust(width) + "  ".join(v.ljust(c) for v, c in zip(values, cols)).rstrip())
    return "\n".join(lines)


def _cell(record: dict, group: str, key: str) -> str:
    value = (record.get(group) or {}).get(key)
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_html(comparison: dict[str, Any]) -> str:
    """A self-contained page: the table, then one horizontal bar chart (inline SVG) per metric."""
    runs = comparison["runs"]
    metrics = sorted({k for r in runs for k, v in (r.get("metrics") or {}).items() if isinstance(v, (int, float))})
    charts = []
    for metric in metrics:
        values = [(r["run_id"], (r.get("metrics") or {}).get(metric)) for r in runs]
        top = max((abs(v) for _, v in values if isinstance(v, (int, float))), default=0) or 1
        bars = []
        for i, (run_id, value) in enumerate(values):
            y = 8 + i * 26
            length = 0 if value is None else 360 * abs(value) / top
            shown = "-" if value is None else f"{value:.4g}"
            bars.append(
                f'<text x="0" y="{y + 14}" font-size="12">{html.escape(run_id[:28])}</text>'
                f'<rect x="200" y="{y}" width="{length:.1f}" height="18" fill="#4c78a8"/>'
                f'<text x="{206 + length:.1f}" y="{y + 14}" font-size="12">{shown}</text>'
            )
        height = 16 + 26 * len(values)
        charts.append(
            f"<h3>{html.escape(metric)}</h3>"
            f'<svg width="640" height="{height}" role="img" aria-label="{html.escape(metric)}">{"".join(bars)}</svg>'
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Run comparison</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style></head><body>"
        f"<h1>Run comparison</h1><p>Differs: {html.escape(', '.join(comparison['differs']) or 'nothing')}</p>"
        f"<pre>{html.escape(table(comparison))}</pre>{''.join(charts)}"
        f"<h2>Data</h2><pre>{html.escape(json.dumps(comparison, indent=2, sort_keys=True, default=str))}</pre>"
        "</body></html>\n"
    )
