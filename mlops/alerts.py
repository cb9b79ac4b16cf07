"""The alert receiver: Alertmanager's webhook (JSON, version 4) in, a durable record and at most one
retraining request per alert group and model version out.

    receiver = AlertReceiver(artifact_root, request_retraining, host="127.0.0.1", port=9095).start()

Every notification is validated, then each of its alerts is written to the artifact store before
the answer (200) goes back, so an alert Alertmanager was told about is never lost:

    <artifact_root>/alerts/<YYYY-MM-DD>/<received UTC>-<fingerprint>-<status>.json

Firing alerts labelled `action: retrain` with `model` and `version` labels (the rules in
manifests/monitoring/rules.yml) request a retraining run: `request_retraining(group_key,
"MODEL@VERSION", reason)` is called once per notification and model version, on one worker thread
(a local run can take minutes; Alertmanager's webhook must not wait for it), and its result is added
to the alert records. The idempotency is the caller's: pipelines.triggers.trigger_for_alert claims one
record per (group, version), so Alertmanager's repeated notifications of a group start one run. A
failed request is recorded; the key it released lets the next repeat notification try again.

Core only (no ML Metadata, no kfp): the trigger is passed in, so the module runs in either image.
Bad input: 400 naming the part of the notification that is wrong, nothing recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import re
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlops import storage
from mlops.config import join_uri
from mlops.errors import InvalidInput, status_of

RETRAIN_ACTION = "retrain"
MAX_BODY_BYTES = 4 * 2**20
_FILE_PART = re.compile(r"[^A-Za-z0-9._-]")

RequestRetraining = Callable[[str, str, str], dict]  # (group key, MODEL@VERSION, reason) -> outcome summary


class AlertNotificationInvalid(InvalidInput):
    """A webhook body that is not an Alertmanager notification (version 4)."""


def parse_notification(body: bytes) -> dict:
    """The notification, checked for what the receiver uses; AlertNotificationInvalid names the part."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AlertNotificationInvalid(f"request body: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise AlertNotificationInvalid("request body: a JSON object expected")
    if doc.get("version") != "4":
        raise AlertNotificationInvalid(f'version: {doc.get("version")!r}, expected "4" (Alertmanager webhook)')
    for name in ("groupKey", "status"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise AlertNotificationInvalid(f"{name}: a non-empty string expected")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise AlertNotificationInvalid("alerts: a non-empty list expected")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise AlertNotificationInvalid(f"alerts[{i}]: an object expected")
        if alert.get("status") not in ("firing", "resolved"):
            raise AlertNotificationInvalid(f"alerts[{i}].status: {alert.get('status')!r}, expected firing|resolved")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not isinstance(labels.get("alertname"), str):
            raise AlertNotificationInvalid(f"alerts[{i}].labels: an object with an alertname expected")
        if not all(isinstance(v, str) for v in labels.values()):
            raise AlertNotificationInvalid(f"alerts[{i}].labels: string values expected")
    return doc


def retraining_target(alert: dict) -> str | None:
    """MODEL@VERSION when the alert asks for retraining (firing, action=retrain, model and version)."""
    labels = alert["labels"]
    if alert["status"] != "firing" or labels.get("action") != RETRAIN_ACTION:
        return None
    model, version = labels.get("model"), labels.get("version")
    return f"{model}@{version}" if model and version else None


class AlertLog:
    """The alert records of an artifact root."""

    def __init__(self, artifact_root: str):
        self.root = join_uri(artifact_root, "alerts")

    def record(self, notification: dict) -> list[tuple[str, dict]]:
        """Writes one record per alert (atomically); returns (uri, record) pairs."""
        now = dt.datetime.now(dt.UTC)
        day = join_uri(self.root, now.strftime("%Y-%m-%d"))
        storage.makedirs(day)
        written = []
        for i, alert in enumerate(notification["alerts"]):
            record = {
                "received_at": now.isoformat(timespec="microseconds"),
                "receiver": notification.get("receiver"),
                "group_key": notification["groupKey"],
                "group_labels": notification.get("groupLabels", {}),
                "external_url": notification.get("externalURL"),
                "status": alert["status"],
                "labels": alert["labels"],
                "annotations": alert.get("annotations", {}),
                "starts_at": alert.get("startsAt"),
                "ends_at": alert.get("endsAt"),
                "fingerprint": alert.get("fingerprint"),
                "retrain": retraining_target(alert),
                "trigger": None,
            }
            name = "-".join(
                _FILE_PART.sub("_", part)
                for part in (now.strftime("%Y%m%dT%H%M%S%fZ"), str(alert.get("fingerprint") or i), alert["status"])
            )
            uri = join_uri(day, f"{name}-{i}.json")
            storage.write_bytes_atomic(uri, _json_bytes(record))
            written.append((uri, record))
        return written

    def update(self, uri: str, record: dict) -> None:
        storage.write_bytes_atomic(uri, _json_bytes(record))

    def list(self) -> list[dict]:
        """Every record, oldest first."""
        records = []
        for day in sorted(storage.listdir(self.root)) if storage.exists(self.root) else []:
            folder = join_uri(self.root, day)
            records += [storage.read_json(join_uri(folder, n)) for n in sorted(storage.listdir(folder))]
        return sorted(records, key=lambda r: r["received_at"])


def _json_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()


class AlertReceiver:
    """The webhook server (POST any path; GET /-/healthy) and its trigger worker."""

    def __init__(self, artifact_root: str, request_retraining: RequestRetraining, host="127.0.0.1", port=9095):
        self.log = AlertLog(artifact_root)
        self.request_retraining = request_retraining
        self._work: queue.Queue = queue.Queue()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._threads: list[threading.Thread] = []

    def start(self) -> AlertReceiver:
        for target in (self.server.serve_forever, self._work_forever):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def serve_forever(self) -> None:
        """Serves in this thread until interrupted (the CLI)."""
        worker = threading.Thread(target=self._work_forever, daemon=True)
        worker.start()
        try:
            self.server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._work.put(None)

    def idle(self) -> bool:
        """No retraining request waiting or running."""
        return self._work.unfinished_tasks == 0

    def receive(self, body: bytes) -> dict:
        """Records a notification and queues its retraining requests; returns the answer."""
        notification = parse_notification(body)
        written = self.log.record(notification)
        targets: dict[str, list[tuple[str, dict]]] = {}
        for uri, record in written:
            if record["retrain"]:
                targets.setdefault(record["retrain"], []).append((uri, record))
        for model_version, records in targets.items():
            names = sorted({r["labels"]["alertname"] for _, r in records})
            reason = f"alert {', '.join(names)} on {model_version} (group {notification['groupKey']})"
            self._work.put((notification["groupKey"], model_version, reason, records))
        return {"recorded": [uri for uri, _ in written], "retraining_requested": sorted(targets)}

    def _work_forever(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                self._work.task_done()
                return
            group_key, model_version, reason, records = item
            try:
                outcome = self.request_retraining(group_key, model_version, reason)
            except Exception as e:  # noqa: BLE001 - recorded; the released key lets a repeat notification retry
                outcome = {"error": f"{type(e).__name__}: {e}"}
                print(f"alerts: retraining {model_version} for group {group_key}: {outcome['error']}", file=sys.stderr)
            for uri, record in records:
                record["trigger"] = outcome
                self.log.update(uri, record)
            self._work.task_done()


def _handler(receiver: AlertReceiver):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path in ("/-/healthy", "/-/ready"):
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"error": f"{self.path}: POST Alertmanager notifications here"})

        def do_POST(self):  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length <= 0 or length > MAX_BODY_BYTES:
                self._answer(400 if length <= 0 else 413, {"error": f"Content-Length: {length} bytes"})
                return
            try:
                self._answer(200, receiver.receive(self.rfile.read(length)))
            except Exception as e:  # noqa: BLE001 - every error is an answer, never a dropped connection
                self._answer(status_of(e).http, {"error": str(e)})

        def _answer(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per request is noise for a webhook
            pass

    return Handler
