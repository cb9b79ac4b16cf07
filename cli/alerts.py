"""`mlops alerts receive`: the Alertmanager webhook that records alerts and requests retraining.

Alerts labelled `action: retrain` (manifests/monitoring/rules.yml) request one run of --pipeline per
alert group and model version through pipelines.triggers.trigger_for_alert: locally with kfp.local
(the default without --host), or submitted to the KFP API at --host.
"""

from __future__ import annotations

import click

from cli.common import group, key_values, runs_in
from cli.trigger import _launch_options, _launcher
from mlops import envs


def retraining_requester(launcher, pipeline: str, parameters: dict):
    """The receiver's `request_retraining`: trigger_for_alert on `launcher`, summarised as JSON."""
    from pipelines.triggers import trigger_for_alert

    def request(group_key: str, model_version: str, reason: str) -> dict:
        outcome = trigger_for_alert(
            group_key, model_version, pipeline=pipeline, parameters=parameters, reason=reason, launcher=launcher
        )
        r = outcome.record
        return {"started": outcome.started, "key": r.key, "state": r.shown_state, "run_id": r.run_id, "mode": r.mode}

    return request


@group()
def alerts():
    """Alerts: the Alertmanager webhook receiver (records alerts, requests retraining)."""


@alerts.command("receive")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=int, default=9095, show_default=True, help="Port of the webhook (POST any path).")
@_launch_options
@runs_in(envs.PIPELINE)
def alerts_receive(bind, port, pipeline, params, **launch):
    """Serve Alertmanager's webhook (JSON v4): every alert is recorded under <artifact_root>/alerts/,
    and each firing `action: retrain` alert requests ONE run of the pipeline per alert group and
    model version (repeated notifications start nothing new). Point an Alertmanager webhook_configs
    url at http://HOST:PORT/alerts."""
    from mlops.alerts import AlertReceiver

    launcher = _launcher(**launch)
    parameters = key_values(params, "--param", True)
    receiver = AlertReceiver(
        launcher.config.artifact_root, retraining_requester(launcher, pipeline, parameters), host=bind, port=port
    )
    click.echo(f"alerts: receiving on {receiver.url}/alerts (artifact root {launcher.config.artifact_root})", err=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
