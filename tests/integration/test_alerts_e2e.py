"""The alert path for real: Prometheus 2.42 scrapes a running model server (tiny registry) and a
Pushgateway holding a monitoring run's numbers, evaluates manifests/monitoring/rules.yml every
second; a drifted window makes MlopsFeatureDrift fire; Alertmanager 0.25 routes it (action=retrain)
to the webhook `mlops alerts receive` serves (mlops.alerts.AlertReceiver with the CLI's requester:
pipelines.triggers.trigger_for_alert); repeated notifications request exactly ONE run (a launcher
that records starts instead of training), and every alert is recorded in the artifact store."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from mlops.envs import SERVING, interpreter
from tests.support.fixtures import FLIGHTS_CONFIG, REPO
from tests.support.prometheus import Alertmanager, Prometheus, Pushgateway, free_port, needs_prometheus

pytestmark = needs_prometheus
RULES = REPO / "manifests" / "monitoring" / "rules.yml"


def monitoring_result(drifted: bool) -> dict:
    """A monitoring run's result as components/monitor writes it (the fields the exporter reads)."""
    effect = 0.8 if drifted else 0.01
    feature = {"feature": "temp", "effect": effect, "effect_name": "wasserstein_sd", "test": "ks"}
    return {
        "model_name": "flights",
        "finished_at_epoch": time.time(),
        "versions": [
            {
                "version": 1,
                "rows": 5000,
                "feature_drift": [{**feature, "p_value": 1e-9 if drifted else 0.6, "drifted": drifted}],
                "quality": {"temp": {"missing_rate": 0.0, "oov_rate": None}},
                "prediction_drift": {"effect": effect},
                "joint_drift": {"score": 0.9 if drifted else 0.5, "method": "domain_auc"},
                "estimated_performance": {"metrics": {"auc": {"value": 0.7, "low": 0.68, "high": 0.72}}},
                "store_defaults": {},
                "tfdv": {"anomalies": []},
                "verdict": {"drifted": drifted},
            }
        ],
    }


class RecordingLauncher:
    """Stands in for kfp.local / KFP: counts the runs trigger_for_alert starts (no training)."""

    def __init__(self, launcher):
        self.launcher, self.started = launcher, []

    def __getattr__(self, name):
        return getattr(self.launcher, name)

    def start(self, record):
        from mlops.triggers import SUBMITTED, StartedRun

        self.started.append(record.key)
        return StartedRun(SUBMITTED, f"run-{len(self.started)}", f"retrain {record.key}")


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, tiny_model_dirs):
    if not os.path.exists(interpreter(SERVING)):
        pytest.skip("the serving environment is missing (make setup)")
    from mlops.registry.store import ModelRegistry
    from tests.integration.test_local_rollout import Process
    from tests.support.serving_models import register

    tmp = tmp_path_factory.mktemp("alerts-server")
    root = tmp / "artifacts"
    register(root, "flights", tiny_model_dirs[1])
    ModelRegistry(str(root)).promote("flights", 1, "production", reason="test")
    port = free_port()
    argv = [interpreter(SERVING), "-m", "serving", "--config", str(FLIGHTS_CONFIG), "--model", "flights@production"]
    argv += ["--http_port", str(port), "--grpc_port", str(free_port())]
    for key, value in {"artifact_root": str(root), "serving.feature_lookup": False}.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    server = Process(argv, tmp / "server.log", f"http://127.0.0.1:{port}")
    try:
        yield server.ready(), root
    finally:
        server.stop()


def test_a_drifted_window_fires_and_requests_one_retraining_run(tmp_path, model_server):
    from cli.alerts import retraining_requester
    from mlops.alerts import AlertLog, AlertReceiver
    from mlops.config import load_config
    from mlops.monitoring.prometheus import export
    from mlops.triggers import TriggerRecords
    from pipelines.triggers import Launcher

    server, _ = model_server
    root = tmp_path / "artifacts"
    config = load_config(FLIGHTS_CONFIG, overrides={"artifact_root": str(root)})
    launcher = RecordingLauncher(Launcher(str(FLIGHTS_CONFIG), config))
    receiver = AlertReceiver(str(root), retraining_requester(launcher, "training", {}), port=0).start()
    notifications = []
    receive = receiver.receive
    receiver.receive = lambda body: notifications.append(json.loads(body)) or receive(body)
    am_config = {
        "route": {
            "receiver": "nobody",
            "group_by": ["alertname", "model", "version"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "2s",
            "routes": [{"receiver": "mlops-retrain", "matchers": ['action="retrain"']}],
        },
        "receivers": [
            {"name": "nobody"},
            {"name": "mlops-retrain", "webhook_configs": [{"url": f"{receiver.url}/alerts", "send_resolved": True}]},
        ],
    }
    try:
        with Pushgateway(tmp_path / "pg") as gateway, Alertmanager(tmp_path / "am", am_config) as alertmanager:
            prom_config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
                "scrape_configs": [
                    {"job_name": "model-server", "static_configs": [{"targets": [server.url.split("//")[1]]}]},
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway.port}"]}],
                    },
                ],
            }
            with Prometheus(tmp_path / "prom", prom_config, rule_files=[RULES]) as prom:
                # a stable window first: nothing fires
                export(monitoring_result(drifted=False), gateway.url, "")
                body = json.dumps(
                    {
                        "instances": [
                            {
                                "hour": 7,
                                "distance": 500,
                                "temp": 50,
                                "seats": 100,
                                "carrier": "UA",
                                "origin": "EWR",
                                "dest": "ATL",
                                "month": "1",
                            }
                        ]
                    }
                )
                request = urllib.request.Request(f"{server.url}/v1/models/flights:predict", body.encode())
                assert urllib.request.urlopen(request, timeout=10).status == 200
                prom.wait_for(prom.targets_up, 30, "both targets scraped")
                prom.wait_for(lambda: prom.query('mlops_monitoring_drift_detected{model="flights"} == 0'), 20, "stable")
                # the model server's own series are there (and with them the saturation rules' join)
                assert prom.query('mlops_model_ready{job="model-server", model="flights"} == 1')
                assert prom.query("process_resident_memory_bytes and on (job, instance) mlops_model_ready")
                time.sleep(2)
                assert prom.alerts(name="MlopsFeatureDrift") == []

                export(monitoring_result(drifted=True), gateway.url, "")  # the drifted window
                (firing,) = prom.wait_for(lambda: prom.alerts("firing", "MlopsFeatureDrift"), 30, "drift alert")
                assert firing["labels"]["model"] == "flights" and firing["labels"]["version"] == "1"
                # Alertmanager notifies, then repeats every ~2 s: at least two notifications
                alertmanager.wait_for(
                    lambda: sum(n["status"] == "firing" for n in notifications) >= 2, 30, "repeated notifications"
                )
                alertmanager.wait_for(receiver.idle, 30, "the retraining requests handled")
    finally:
        receiver.stop()

    group_keys = {n["groupKey"] for n in notifications}
    assert len(group_keys) == 1 and all(
        a["labels"]["alertname"] == "MlopsFeatureDrift" for n in notifications for a in n["alerts"]
    )
    assert len(launcher.started) == 1, launcher.started  # one run, however many notifications
    (trigger,) = TriggerRecords(str(root)).list()
    assert trigger.kind == "alert" and trigger.cause["model_version"] == "flights@1"
    assert trigger.cause["group_key"] == group_keys.pop() and trigger.run_id == "run-1"
    records = AlertLog(str(root)).list()
    assert len(records) >= 2 and {r["labels"]["alertname"] for r in records} == {"MlopsFeatureDrift"}
    assert all(r["retrain"] == "flights@1" for r in records)
    outcomes = [r["trigger"] for r in records]
    assert [o["started"] for o in outcomes].count(True) == 1
    assert {o["key"] for o in outcomes} == {trigger.key} and {o["run_id"] for o in outcomes} == {"run-1"}
