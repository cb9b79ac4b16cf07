"""A monitoring run's numbers as Prometheus metrics.

A monitoring run is a batch job: it has no endpoint that lives long enough to be scraped. The
conventional ways for a batch job are the Pushgateway (push when the job ends; Prometheus scrapes
the gateway) and node_exporter's textfile collector (a `.prom` file in a directory it reads). With
`monitoring.pushgateway_url` set the run pushes (prometheus_client.push_to_gateway, grouped by
job and model, so each model's last run replaces its previous one); without it the run writes the
same exposition as a `.prom` file beside its JSON result, atomically, which a textfile collector
(or a sidecar copying it) exposes: nothing is lost on a machine without a gateway.
"""

from __future__ import annotations

from mlops import storage

JOB = "mlops_monitoring"


def registry_for(result: dict):
    """A CollectorRegistry holding the result's numbers (one sample per model version and feature)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name, doc, labels):
        return Gauge(name, doc, labels, registry=registry)

    model = result["model_name"]
    rows = gauge("mlops_monitoring_window_rows", "Payload-log rows in the window", ["model", "version"])
    drift = gauge(
        "mlops_monitoring_feature_drift", "Effect size of a feature's drift", ["model", "version", "feature", "measure"]
    )
    drifted = gauge(
        "mlops_monitoring_feature_drifted",
        "1 when the feature drifted (effect and p-value)",
        ["model", "version", "feature"],
    )
    pvalue = gauge(
        "mlops_monitoring_feature_drift_p_value",
        "p-value of the feature's drift test",
        ["model", "version", "feature", "test"],
    )
    missing = gauge(
        "mlops_monitoring_feature_missing_rate",
        "Share of window rows missing the feature",
        ["model", "version", "feature"],
    )
    oov = gauge(
        "mlops_monitoring_feature_oov_rate",
        "Share of present values outside the training vocabulary",
        ["model", "version", "feature"],
    )
    prediction = gauge("mlops_monitoring_prediction_drift", "Effect size of the prediction drift", ["model", "version"])
    joint = gauge(
        "mlops_monitoring_joint_drift_score",
        "Joint-space drift score (domain classifier AUC or MMD)",
        ["model", "version", "method"],
    )
    estimate = gauge(
        "mlops_monitoring_estimated_metric", "CBPE estimate of a metric", ["model", "version", "metric", "bound"]
    )
    defaults = gauge(
        "mlops_monitoring_rows_with_store_defaults",
        "Window rows served with feature-store defaults",
        ["model", "version", "group"],
    )
    anomalies = gauge(
        "mlops_monitoring_schema_anomalies", "Schema anomalies of the window's serving statistics", ["model", "version"]
    )
    verdict = gauge(
        "mlops_monitoring_drift_detected", "1 when any drift check of the version fired", ["model", "version"]
    )
    finished = gauge("mlops_monitoring_last_run_timestamp_seconds", "When the monitoring run finished", ["model"])
    finished.labels(model).set(result["finished_at_epoch"])
    for v in result["versions"]:
        version = str(v["version"])
        rows.labels(model, version).set(v["rows"])
        if v.get("skipped"):
            continue
        for d in v["feature_drift"]:
            if d["effect"] is not None:
                drift.labels(model, version, d["feature"], d["effect_name"]).set(d["effect"])
                pvalue.labels(model, version, d["feature"], d["test"]).set(d["p_value"])
            drifted.labels(model, version, d["feature"]).set(int(d["drifted"]))
        for name, q in v["quality"].items():
            missing.labels(model, version, name).set(q["missing_rate"])
            if q["oov_rate"] is not None:
                oov.labels(model, version, name).set(q["oov_rate"])
        if v["prediction_drift"]["effect"] is not None:
            prediction.labels(model, version).set(v["prediction_drift"]["effect"])
        if v["joint_drift"]["score"] is not None:
            joint.labels(model, version, v["joint_drift"]["method"]).set(v["joint_drift"]["score"])
        for metric, e in v["estimated_performance"]["metrics"].items():
            for bound in ("value", "low", "high"):
                if e[bound] is not None:
                    estimate.labels(model, version, metric, bound).set(e[bound])
        for group, n in v["store_defaults"].items():
            defaults.labels(model, version, group).set(n)
        anomalies.labels(model, version).set(len(v["tfdv"]["anomalies"]))
        verdict.labels(model, version).set(int(v["verdict"]["drifted"]))
    return registry


def export(result: dict, pushgateway_url: str | None, textfile_uri: str) -> str:
    """Pushes to the gateway when one is configured, else writes the textfile; returns where to."""
    return publish(registry_for(result), pushgateway_url, textfile_uri, job=JOB, model=result["model_name"])


def publish(
    registry, pushgateway_url: str | None, textfile_uri: str, *, job: str, model: str = "", grouping: dict | None = None
) -> str:
    """One registry of a batch job's numbers to the Pushgateway (grouped by job and model, or by
    job and `grouping` when given, e.g. {"pipeline": name}: that group's previous numbers of the
    job are replaced) or, without one, to a textfile."""
    from prometheus_client import generate_latest, push_to_gateway

    if pushgateway_url:
        from mlops.errors import Unavailable

        try:
            push_to_gateway(
                pushgateway_url, job=job, registry=registry, grouping_key=grouping or {"model": model}, timeout=10
            )
        except OSError as e:
            raise Unavailable(f"monitoring.pushgateway_url {pushgateway_url}: push failed: {e}") from None
        return pushgateway_url
    storage.write_bytes_atomic(textfile_uri, generate_latest(registry))
    return textfile_uri
