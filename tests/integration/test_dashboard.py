"""The Grafana dashboard (mlops/monitoring/dashboard.py -> manifests/base/grafana-dashboard.yaml).

* The committed ConfigMap is what the generator writes today (pipeline environment: the SDK).
* Every panel query of the COMMITTED dashboard returns series from a real Prometheus scraping a
  real model server under traffic (a few requests refused, so errors exist) and a real Pushgateway
  holding a monitoring run's metrics (exported by mlops.monitoring.prometheus from a result) and
  representative continuous-evaluation and pipeline-step numbers (the latter through
  mlops.step_resources.publish, as the local runner pushes them; serving environment).
"""

from __future__ import annotations

import json
import math
import threading
import time

import pytest
import yaml

from tests.support.fixtures import REPO

MANIFEST = REPO / "manifests" / "base" / "grafana-dashboard.yaml"


def committed_dashboard() -> dict:
    doc = yaml.safe_load(MANIFEST.read_text())
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["labels"] == {"grafana_dashboard": "1"}
    (body,) = doc["data"].values()
    return json.loads(body)


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p.get("targets", [])]


def test_committed_dashboard_is_what_the_generator_writes():
    from mlops.monitoring import dashboard

    assert dashboard.main(["--check"]) == 0, "run: python -m mlops.monitoring.dashboard"
    built = dashboard.build()
    assert committed_dashboard() == built
    titles = {p["title"] for p in built["panels"]}
    for wanted in (
        "Inference requests",
        "Latency in the server (p50, p99)",
        "Error ratio",
        "CPU (cores)",
        "Resident memory",
        "Feature drift effect size",
        "AUC: estimated (CBPE) vs live vs offline",
        "Label lag",
        "Step wall time",
        "Step CPU time",
        "Step peak RSS",
    ):
        assert wanted in titles
    assert all(
        t["refId"] and t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in [
            {**t, "datasource": p["datasource"]} for p in built["panels"] if p["type"] != "row" for t in p["targets"]
        ]
    )


def test_check_fails_on_a_stale_manifest(tmp_path, monkeypatch):
    from mlops.monitoring import dashboard

    stale = tmp_path / "grafana-dashboard.yaml"
    stale.write_text(MANIFEST.read_text().replace("Label lag", "Label delay"))
    monkeypatch.setattr(dashboard, "MANIFEST", stale)
    assert dashboard.main(["--check"]) == 1


def monitoring_result() -> dict:
    """A monitoring run's result with the fields the exporter reads (one drifted feature)."""
    return {
        "model_name": "flights",
        "finished_at_epoch": time.time(),
        "versions": [
            {
                "version": "1",
                "rows": 5000,
                "feature_drift": [
                    {
                        "feature": "temp",
                        "effect": 0.4,
                        "effect_name": "wasserstein_sd",
                        "test": "ks",
                        "p_value": 1e-9,
                        "drifted": True,
                    },
                    {
                        "feature": "carrier",
                        "effect": 0.02,
                        "effect_name": "jensen_shannon",
                        "test": "chi2",
                        "p_value": 0.4,
                        "drifted": False,
                    },
                ],
                "quality": {
                    "temp": {"missing_rate": 0.01, "oov_rate": None},
                    "carrier": {"missing_rate": 0.0, "oov_rate": 0.003},
                },
                "prediction_drift": {"effect": 0.15},
                "joint_drift": {"score": 0.71, "method": "domain_classifier_auc"},
                "estimated_performance": {"metrics": {"auc": {"value": 0.70, "low": 0.68, "high": 0.72}}},
                "store_defaults": {"weather": 12},
                "tfdv": {"anomalies": []},
                "verdict": {"drifted": True},
            }
        ],
    }


def push_monitoring_numbers(gateway_url: str) -> None:
    from prometheus_client import CollectorRegistry, Gauge

    from mlops import step_resources
    from mlops.monitoring import dashboard, prometheus

    prometheus.export(monitoring_result(), gateway_url, "")
    registry = CollectorRegistry()
    live = Gauge(dashboard.LIVE_METRIC, "live", ["model", "version", "metric"], registry=registry)
    offline = Gauge(dashboard.OFFLINE_METRIC, "offline", ["model", "version", "metric"], registry=registry)
    lag = Gauge(dashboard.LABEL_LAG, "lag", ["model", "version", "quantile"], registry=registry)
    live.labels("flights", "1", "auc").set(0.69)
    offline.labels("flights", "1", "auc").set(0.71)
    lag.labels("flights", "1", "0.5").set(3600)
    prometheus.publish(registry, gateway_url, "", job="mlops_live_evaluation", model="flights")
    # a local training run's step numbers, as pipelines.runner publishes them
    steps = {
        "transform": step_resources.StepResources(44.2, 61.3, 1_300_000_000),
        "trainer": step_resources.StepResources(120.5, 190.0, 2_100_000_000),
    }
    step_resources.publish("training", steps, gateway_url, "")


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends: the variables resolved ($model = All = .*)."""
    return expr.replace("$__rate_interval", "15s").replace("$model", ".*")


@pytest.mark.serving_env
def test_every_panel_query_returns_series_from_a_real_prometheus(tmp_path, tiny_model_dirs):
    import httpx

    from serving.server_test import make_registry, serve, v2_body
    from tests.support.prometheus import Prometheus, Pushgateway, needs_prometheus

    if needs_prometheus.args[0]:
        pytest.skip(needs_prometheus.kwargs["reason"])
    queries = panel_queries(committed_dashboard())
    root = make_registry(tmp_path / "artifacts", tiny_model_dirs)
    server = serve(tmp_path, root, name="server")
    stop = threading.Event()
    try:
        server.ready()
        infer = f"{server.url}/v2/models/flights/infer"
        body = v2_body()

        def traffic():
            with httpx.Client(timeout=5) as client:
                while not stop.is_set():
                    client.post(infer, json=body).raise_for_status()
                    client.post(infer, json={"inputs": []})  # refused (4xx): an error to count
                    time.sleep(0.02)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        with Pushgateway(tmp_path / "pushgateway") as gateway:
            push_monitoring_numbers(gateway.url)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "model-server", "static_configs": [{"targets": [f"127.0.0.1:{server.http_port}"]}]},
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}],
                    },
                ],
            }
            with Prometheus(tmp_path / "prometheus", config) as prom:
                prom.wait_for(prom.targets_up, 20, "both targets up")

                def answers():
                    results = {(title, expr): prom.query(grafana_to_promql(expr)) for title, expr in queries}
                    empty = [k for k, r in results.items() if not any(math.isfinite(float(s["value"][1])) for s in r)]
                    return results if not empty else None

                # rate() needs two scrapes of traffic in its window: poll until every query answers
                results = prom.wait_for(answers, 30, "a finite series for every panel query", every=1)
    finally:
        stop.set()
        server.stop()
    assert len(results) == len(queries) >= 21
    drift = results[next(k for k in results if k[0] == "Feature drift effect size")]
    assert {s["metric"]["feature"] for s in drift} == {"temp", "carrier"}
    errors = results[next(k for k in results if k[0] == "Error ratio")]
    assert 0 < float(errors[0]["value"][1]) < 1
    memory = results[next(k for k in results if k[0] == "Resident memory")]
    assert [s["metric"]["job"] for s in memory] == ["model-server"]  # the serving process, not the gateway
    rss = results[next(k for k in results if k[0] == "Step peak RSS")]
    pushed = {(s["metric"]["pipeline"], s["metric"]["step"]): float(s["value"][1]) for s in rss}
    # the values pushed above (a pipeline run elsewhere in the session may add its own steps)
    assert pushed.items() >= {("training", "transform"): 1.3e9, ("training", "trainer"): 2.1e9}.items()
