"""mlops.alerts over real HTTP on loopback: bad notifications are a 400 naming the part and record
nothing; resolved or non-retrain alerts are recorded without a request; a failed request is
recorded; `mlops alerts receive` is a command."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from mlops.alerts import AlertLog, AlertReceiver


def notification(status="firing", **labels) -> dict:
    labels = {"alertname": "MlopsFeatureDrift", "action": "retrain", "model": "flights", "version": "2", **labels}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "fingerprint": "abc123",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MlopsFeatureDrift"}',
        "status": status,
        "receiver": "mlops-retrain",
        "alerts": [alert],
    }


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/alerts", body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def receiver(tmp_path):
    calls = []

    def request(group_key, model_version, reason):
        calls.append((group_key, model_version))
        if model_version == "flights@broken":
            raise RuntimeError("KFP unreachable")
        return {"started": len(calls) == 1, "key": "k"}

    r = AlertReceiver(str(tmp_path / "artifacts"), request, port=0).start()
    r.calls = calls
    yield r
    r.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body: not JSON"),
        (json.dumps({**notification(), "version": "3"}).encode(), "version: '3'"),
        (json.dumps({**notification(), "groupKey": ""}).encode(), "groupKey"),
        (json.dumps({**notification(), "alerts": []}).encode(), "alerts: a non-empty list"),
        (json.dumps({**notification(), "alerts": [{"status": "firing", "labels": {}}]}).encode(), "alerts[0].labels"),
    ],
)
def test_bad_notifications_are_refused_and_nothing_is_recorded(receiver, tmp_path, body, message):
    status, answer = post(receiver.url, body)
    assert status == 400 and message in answer["error"]
    assert AlertLog(str(tmp_path / "artifacts")).list() == [] and receiver.calls == []


def test_only_firing_retrain_alerts_request_a_run_and_every_alert_is_recorded(receiver, tmp_path):
    assert post(receiver.url, json.dumps(notification("resolved")).encode())[0] == 200
    assert post(receiver.url, json.dumps(notification(action="page")).encode())[0] == 200
    status, answer = post(receiver.url, json.dumps(notification()).encode())
    assert status == 200 and answer["retraining_requested"] == ["flights@2"]
    status, _ = post(receiver.url, json.dumps(notification(version="broken")).encode())
    assert status == 200  # recorded; the request fails later, on the worker
    for _ in range(100):
        if receiver.idle():
            break
        import time

        time.sleep(0.05)
    assert [c[1] for c in receiver.calls] == ["flights@2", "flights@broken"]
    records = AlertLog(str(tmp_path / "artifacts")).list()
    assert [r["retrain"] for r in records] == [None, None, "flights@2", "flights@broken"]
    assert records[2]["trigger"] == {"started": True, "key": "k"}
    assert "KFP unreachable" in records[3]["trigger"]["error"]


def test_the_cli_has_the_receiver():
    from cli.main import cli

    result = CliRunner().invoke(cli, ["alerts", "receive", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "action: retrain" in result.output
