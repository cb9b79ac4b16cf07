"""The training pipeline's "I succeeded" metric, for the alert on no successful training in N days.

A training run is a batch job like a monitoring run: its Pusher step (the last one; it runs only
when every step before it succeeded) pushes `mlops_training_last_success_timestamp_seconds{model,
pipeline}` to `monitoring.pushgateway_url`, grouped by job and model so each run replaces the
previous value. Whether the model was registered does not matter: a run that ends with "not
blessed" still trained. Without a gateway nothing is pushed (the alert then fires on the metric's
absence, by design: nobody can tell when training last worked). A failed push is one warning line,
never a failed run: the metric reports training, it is not part of it.
"""

from __future__ import annotations

import sys
import time

JOB = "mlops_training"


def registry_for(model: str, pipeline: str, finished_at: float):
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge(
        "mlops_training_last_success_timestamp_seconds",
        "When a training run last reached its Pusher (it succeeded)",
        ["model", "pipeline"],
        registry=registry,
    ).labels(model, pipeline).set(finished_at)
    return registry


def push_training_success(pushgateway_url: str | None, model: str, pipeline: str, finished_at: float | None = None):
    """Pushes the success timestamp (now by default); returns True when pushed."""
    if not pushgateway_url:
        return False
    from prometheus_client import push_to_gateway

    registry = registry_for(model, pipeline, time.time() if finished_at is None else finished_at)
    try:
        push_to_gateway(pushgateway_url, job=JOB, registry=registry, grouping_key={"model": model}, timeout=10)
    except OSError as e:
        print(f"training metrics: push to monitoring.pushgateway_url {pushgateway_url} failed: {e}", file=sys.stderr)
        return False
    return True
