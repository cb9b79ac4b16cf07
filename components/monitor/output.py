"""The output directory of a monitoring run or a live evaluation, written all at once.

Both write their files (a JSON result, a self-contained HTML report, their own extras) and, when
`monitoring.pushgateway_url` is not set, their Prometheus exposition as METRICS_FILE (for a
textfile collector; mlops.monitoring.prometheus) into a hidden staging directory beside
`out_dir`, moved into place in one rename (a copy on an object store). Then the metrics are pushed
(when a gateway is set) and the run is recorded in ML Metadata. A failure before the move leaves
nothing; a failure after it removes the directory: no result without its record.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

from mlops import storage
from mlops.config import PlatformConfig, join_uri
from mlops.errors import Refused
from mlops.monitoring import prometheus

METRICS_FILE = "metrics.prom"


def result_json(result: dict) -> str:
    """The JSON text of a result (what is written, and what its content hash is taken of)."""
    return json.dumps(result, indent=2, default=str, sort_keys=True)


def _staging_dir(out_dir: str) -> str:
    parent, name = out_dir.rstrip("/").rsplit("/", 1)
    return f"{parent}/.tmp-{name}-{uuid.uuid4().hex[:8]}"


def _move_into_place(staging: str, out_dir: str) -> None:
    if storage.is_local(out_dir):
        target = storage.local_path(out_dir)
        if os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)  # KFP creates the output directory empty
        if os.path.exists(target):
            raise Refused(f"monitoring output {out_dir} already exists: a run id writes once")
        os.rename(storage.local_path(staging), target)
    else:
        fs, src = storage.fs_and_path(staging)
        fs.copy(src, storage.fs_and_path(out_dir)[1], recursive=True)
        storage.remove(staging, recursive=True)


def publish(
    config: PlatformConfig,
    out_dir: str,
    files: dict[str, bytes],
    registry,
    *,
    job: str,
    model: str,
    record: Callable[[], None],
) -> str:
    """Writes `files` (path relative to out_dir -> content) and the metrics of `registry` (a
    prometheus_client CollectorRegistry; pushed as `job`, grouped by `model`, when a gateway is
    configured), then calls `record` (the ML Metadata record). Returns where the metrics went."""
    gateway = config.monitoring.pushgateway_url
    staging = _staging_dir(out_dir)
    storage.makedirs(staging)
    try:
        for name, content in files.items():
            storage.write_bytes_atomic(join_uri(staging, name), content)
        if not gateway:
            prometheus.publish(registry, None, join_uri(staging, METRICS_FILE), job=job, model=model)
        _move_into_place(staging, out_dir)
    except BaseException:
        storage.remove(staging, recursive=True)
        raise
    try:
        if gateway:
            metrics = prometheus.publish(registry, gateway, "", job=job, model=model)
        else:
            metrics = join_uri(out_dir, METRICS_FILE)
        record()
    except BaseException:
        storage.remove(out_dir, recursive=True)  # no result without its record
        raise
    return metrics


def payload_window_ref(config: PlatformConfig, model: str, window: dict, rows: int):
    """The ML Metadata input of both: the payload-log window of `model` ({"start", "end"})."""
    from mlops.metadata.store import ArtifactRef
    from serving.payload_log import payload_log_root

    uri = f"{join_uri(payload_log_root(config), model)}?start={window['start']}&end={window['end']}"
    properties = {"model": model, "start": window["start"], "end": window["end"], "row_count": rows}
    return ArtifactRef("PayloadWindow", uri, properties=properties)


def pushed_model_ref(mv):
    """The ML Metadata input of both: a registry ModelVersion as its PushedModel."""
    from mlops.metadata.store import ArtifactRef

    return ArtifactRef(
        "PushedModel", mv.uri, name=mv.selector, properties={"name": mv.name, "version": str(mv.version)}
    )
