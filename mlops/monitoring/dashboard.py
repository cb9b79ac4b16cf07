"""The platform's Grafana dashboard, built in code with grafana-foundation-sdk (typed builders: a
panel, query or option that does not exist is an AttributeError here, not a blank panel in Grafana).

Rows: serving (throughput, latency, errors, payload log), the serving process's CPU and memory,
drift per feature, performance (CBPE estimate vs live vs offline AUC, label lag), data quality,
pipeline steps (wall time, CPU seconds, peak RSS per step of each pipeline's last local run).
Metric names: serving/metrics.py (the model server), mlops/monitoring/prometheus.py (a monitoring
run), components/monitor/live_evaluation.py (continuous evaluation: LIVE_METRIC, OFFLINE_METRIC,
LABEL_LAG below), mlops/step_resources.py (pipeline steps, measured by pipelines/runner.py).

    python -m mlops.monitoring.dashboard            rewrite manifests/base/grafana-dashboard.yaml
    python -m mlops.monitoring.dashboard --check    exit 1 when the committed file is stale

The ConfigMap carries the label `grafana_dashboard: "1"`, which Grafana's dashboard sidecar
(kube-prometheus-stack's default) watches; the datasource is a variable, so the dashboard binds to
whatever Prometheus the Grafana has. Imported only by that command and its test: the SDK is in the
pipeline environment only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlops import step_resources

UID = "mlops-platform"
TITLE = "MLOps platform: serving and monitoring"
CONFIGMAP = "mlops-grafana-dashboard"
MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "base" / "grafana-dashboard.yaml"

INFERENCE = 'endpoint=~"v2_infer|v1_predict|v1_explain|ModelInfer"'
MODEL = 'model=~"$model"'
# The serving processes are the ones exporting mlops_model_info: their process_* series, whatever
# the scrape job is called (a PodMonitor names it namespace/name).
SERVING_PROCESS = "and on (job, instance) group by (job, instance) (mlops_model_info)"
# Continuous evaluation (`mlops monitor evaluate`, components/monitor/live_evaluation.py) exports these.
LIVE_METRIC = "mlops_live_metric"  # {model, version, metric} realised on labelled predictions
OFFLINE_METRIC = "mlops_live_offline_metric"  # {model, version, metric} the version's offline evaluation
LABEL_LAG = "mlops_live_label_lag_seconds"  # {model, version, quantile} prediction -> label


def _rate(expr: str) -> str:
    return expr.replace("[R]", "[$__rate_interval]")


def panels() -> list[tuple[str, list[dict]]]:
    """(row title, [panel spec]) in display order. A spec: title, kind (timeseries|stat), unit,
    queries [(PromQL, legend)], description. The test runs every query against a real Prometheus."""
    errors_or_zero = _rate(
        f"(sum by (endpoint) (rate(mlops_request_errors_total{{{INFERENCE}}}[R]))"
        f" or sum by (endpoint) (rate(mlops_requests_total{{{INFERENCE}}}[R])) * 0)"
        f" / sum by (endpoint) (rate(mlops_requests_total{{{INFERENCE}}}[R]))"
    )
    return [
        (
            "Serving",
            [
                {
                    "title": "Inference requests",
                    "unit": "reqps",
                    "queries": [
                        (_rate(f"sum by (endpoint) (rate(mlops_requests_total{{{INFERENCE}}}[R]))"), "{{endpoint}}")
                    ],
                    "description": "REST and gRPC inference calls per second (probes and scrapes excluded).",
                },
                {
                    "title": "Predicted rows",
                    "unit": "rowsps",
                    "queries": [
                        (
                            _rate(f"sum by (model, version) (rate(mlops_predicted_rows_total{{{MODEL}}}[R]))"),
                            "{{model}}@{{version}}",
                        )
                    ],
                },
                {
                    "title": "Latency in the server (p50, p99)",
                    "unit": "s",
                    "queries": [
                        (
                            _rate(
                                f"histogram_quantile({q}, sum by (le, endpoint) "
                                f"(rate(mlops_request_seconds_bucket{{{INFERENCE}}}[R])))"
                            ),
                            f"p{round(q * 100)} {{{{endpoint}}}}",
                        )
                        for q in (0.5, 0.99)
                    ],
                },
                {
                    "title": "Error ratio",
                    "unit": "percentunit",
                    "queries": [(errors_or_zero, "{{endpoint}}")],
                    "description": "Failed inference requests (4xx/5xx, gRPC not OK) over all; 0 when none failed.",
                },
                {
                    "title": "Payload log rows",
                    "unit": "short",
                    "queries": [(f"sum by (model, state) (mlops_payload_log_rows{{{MODEL}}})", "{{model}} {{state}}")],
                    "description": "Rows logged for monitoring by state: dropped or lost rows are unseen by drift.",
                },
            ],
        ),
        (
            "Serving process resources",
            [
                {
                    "title": "CPU (cores)",
                    "unit": "short",
                    "queries": [(_rate(f"rate(process_cpu_seconds_total[R]) {SERVING_PROCESS}"), "{{instance}}")],
                },
                {
                    "title": "Resident memory",
                    "unit": "bytes",
                    "queries": [(f"process_resident_memory_bytes {SERVING_PROCESS}", "{{instance}}")],
                },
            ],
        ),
        (
            "Drift (last monitoring run)",
            [
                {
                    "title": "Feature drift effect size",
                    "unit": "short",
                    "queries": [
                        (
                            f"max by (version, feature, measure) (mlops_monitoring_feature_drift{{{MODEL}}})",
                            "v{{version}} {{feature}} ({{measure}})",
                        )
                    ],
                    "description": "Wasserstein in reference SDs (numeric), Jensen-Shannon (categorical); "
                    "thresholds in monitoring.thresholds.",
                },
                {
                    "title": "Features drifted",
                    "kind": "stat",
                    "unit": "short",
                    "queries": [(f"sum by (version) (mlops_monitoring_feature_drifted{{{MODEL}}})", "v{{version}}")],
                },
                {
                    "title": "Prediction and joint drift",
                    "unit": "short",
                    "queries": [
                        (f"mlops_monitoring_prediction_drift{{{MODEL}}}", "prediction v{{version}}"),
                        (f"mlops_monitoring_joint_drift_score{{{MODEL}}}", "{{method}} v{{version}}"),
                    ],
                },
                {
                    "title": "Last monitoring run",
                    "kind": "stat",
                    "unit": "s",
                    "queries": [(f"time() - mlops_monitoring_last_run_timestamp_seconds{{{MODEL}}}", "{{model}}")],
                    "description": "Seconds since the model's last monitoring run finished.",
                },
            ],
        ),
        (
            "Model performance",
            [
                {
                    "title": "AUC: estimated (CBPE) vs live vs offline",
                    "unit": "short",
                    "queries": [
                        (
                            f'mlops_monitoring_estimated_metric{{{MODEL}, metric="auc", bound="value"}}',
                            "estimated v{{version}}",
                        ),
                        (
                            f'mlops_monitoring_estimated_metric{{{MODEL}, metric="auc", bound=~"low|high"}}',
                            "estimate {{bound}} v{{version}}",
                        ),
                        (f'{LIVE_METRIC}{{{MODEL}, metric="auc"}}', "live v{{version}}"),
                        (f'{OFFLINE_METRIC}{{{MODEL}, metric="auc"}}', "offline v{{version}}"),
                    ],
                },
                {
                    "title": "Label lag",
                    "unit": "s",
                    "queries": [
                        (
                            f"max by (model, version, quantile) ({LABEL_LAG}{{{MODEL}}})",
                            "v{{version}} q{{quantile}}",
                        )
                    ],
                    "description": "How far behind the predictions the labels are (continuous evaluation).",
                },
            ],
        ),
        (
            "Data quality (last monitoring run)",
            [
                {
                    "title": "Missing rate per feature",
                    "unit": "percentunit",
                    "queries": [(f"mlops_monitoring_feature_missing_rate{{{MODEL}}}", "v{{version}} {{feature}}")],
                },
                {
                    "title": "Out-of-vocabulary rate per feature",
                    "unit": "percentunit",
                    "queries": [(f"mlops_monitoring_feature_oov_rate{{{MODEL}}}", "v{{version}} {{feature}}")],
                },
                {
                    "title": "Rows served with feature-store defaults",
                    "unit": "short",
                    "queries": [
                        (
                            f"mlops_monitoring_rows_with_store_defaults{{{MODEL}}}",
                            "v{{version}} {{group}}",
                        )
                    ],
                },
            ],
        ),
        (
            "Pipeline steps (last run of each pipeline)",
            [
                {
                    "title": title,
                    "unit": unit,
                    "queries": [(f"max by (pipeline, step) ({metric})", "{{pipeline}} {{step}}")],
                    "description": description,
                }
                for title, unit, metric, description in (
                    ("Step wall time", "s", step_resources.WALL, "Wall time of each step."),
                    (
                        "Step CPU time",
                        "s",
                        step_resources.CPU,
                        "User + system CPU seconds of the step's process tree (its workers included).",
                    ),
                    (
                        "Step peak RSS",
                        "bytes",
                        step_resources.PEAK_RSS,
                        "Peak resident memory of the step's largest process: compare with its memory limit.",
                    ),
                )
            ],
        ),
    ]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard."""
    return [(p["title"], expr) for _, specs in panels() for p in specs for expr, _ in p["queries"]]


def build() -> dict:
    """The dashboard model as Grafana's JSON (a dict)."""
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh

    datasource = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (
        db.Dashboard(TITLE)
        .uid(UID)
        .tags(["mlops"])
        .refresh("1m")
        .time("now-24h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            db.QueryVariable("model")
            .label("Model")
            .datasource(datasource)
            .query("label_values(mlops_model_info, model)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
        )
    )
    for row, specs in panels():
        board = board.with_row(db.Row(row))
        for spec in specs:
            panel = (stat.Panel() if spec.get("kind") == "stat" else timeseries.Panel()).title(spec["title"])
            panel = panel.unit(spec["unit"]).datasource(datasource).height(8).span(24 // min(len(specs), 3))
            if spec.get("description"):
                panel = panel.description(spec["description"])
            for ref, (expr, legend) in zip("ABCDEFGH", spec["queries"]):
                panel = panel.with_target(prometheus.Dataquery().ref_id(ref).expr(expr).legend_format(legend))
            board = board.with_panel(panel)
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def configmap_yaml(dashboard: dict) -> str:
    """The ConfigMap Grafana's sidecar loads (label grafana_dashboard: "1"), the JSON as a literal
    block so a diff of the file reads as a diff of the dashboard."""
    body = json.dumps(dashboard, indent=2, sort_keys=True)
    return (
        "# Generated by `python -m mlops.monitoring.dashboard` (grafana-foundation-sdk): do not edit.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        f'  name: {CONFIGMAP}\n  labels:\n    grafana_dashboard: "1"\ndata:\n  {UID}.json: |\n'
        + "".join(f"    {line}\n" for line in body.splitlines())
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = configmap_yaml(build())
    if "--check" in argv:
        if not MANIFEST.exists() or MANIFEST.read_text() != text:
            print(f"{MANIFEST} is stale: run python -m mlops.monitoring.dashboard", file=sys.stderr)
            return 1
        return 0
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(MANIFEST)
    print(MANIFEST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
