"""Submitting, scheduling and following pipeline runs on a cluster's KFP (kfp.Client, v2beta1 API).

* the compiled IR is uploaded once per content: a pipeline version is named by the sha256 of the
  IR (canonical JSON of its documents), so re-submitting unchanged code reuses the version and a
  change adds exactly one;
* a recurring run is identified by its name: no backfill (no_catchup), at most one run at a time
  (max_concurrency 1); scheduling again with the same settings changes nothing, with new ones the
  new recurring run is created first and the old one deleted after (a failed create leaves the
  old schedule running);
* auth as kfp.Client does it: a bearer token (`--token`, $MLOPS_KFP_TOKEN), else in a pod the
  projected service account token at $KF_PIPELINES_SA_TOKEN_PATH
  (default /var/run/secrets/kubeflow/pipelines/token), else none (port-forward, kind);
* every API failure is an mlops error naming the request: 400 InvalidInput, 401/403/409 Refused,
  404 NotFound, 5xx and connection failures Unavailable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlops.errors import InvalidInput, MlopsError, NotFound, Refused, Unavailable

DEFAULT_EXPERIMENT = "Default"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
TOKEN_ENV = "MLOPS_KFP_TOKEN"
VERSION_PREFIX = "ir-sha256-"
# Run states of the v2beta1 API (V2beta1RuntimeState) after which nothing changes.
FINAL_STATES = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}


class KfpRequestFailed(MlopsError):
    """The KFP API answered a request with an error the platform does not classify further."""


class KfpInvalidRequest(KfpRequestFailed, InvalidInput):
    pass


class KfpNotFound(KfpRequestFailed, NotFound):
    pass


class KfpRefused(KfpRequestFailed, Refused):
    pass


class KfpUnavailable(KfpRequestFailed, Unavailable):
    pass


class PackageMismatch(InvalidInput):
    """A compiled IR file given as the package of another pipeline than the one named."""


def ir_for_upload(
    pipeline: str,
    workdir: str | Path,
    package: str | None = None,
    target_path: str | None = None,
    image_registry: str | None = None,
    image_tag: str | None = None,
) -> Path:
    """The IR to upload for `pipeline`: `package` (strictly parsed; it must be this pipeline's),
    else a fresh compile for the cluster target (configs/cluster-kfp.yaml unless `target_path`)."""
    from pipelines import runner
    from pipelines.target import DEFAULT_TARGET_PATH, load_target

    if package:
        name = runner.load_ir_strict(package).pipeline_info.name
        if name != runner.pipeline_func(pipeline).pipeline_spec.pipeline_info.name:
            raise PackageMismatch(f"--package {package} is the IR of pipeline {name!r}, not {pipeline}")
        return Path(package)
    target = load_target(target_path or DEFAULT_TARGET_PATH, image_registry, image_tag)
    return Path(runner.compile_pipeline(pipeline, workdir, target))


class ScheduleInvalid(InvalidInput):
    """A cron expression KFP's scheduler (robfig/cron, with a seconds field) would not accept."""


class RunDidNotSucceed(Refused):
    """`runs wait`: the run ended FAILED, CANCELED or SKIPPED."""


class WaitTimedOut(Unavailable):
    """`runs wait`: the run was still going when the timeout passed."""


# ---- connection --------------------------------------------------------------------------------


def _status_error(status: int | None):
    if status in (400, 422):
        return KfpInvalidRequest
    if status in (401, 403, 409):
        return KfpRefused
    if status == 404:
        return KfpNotFound
    return KfpUnavailable if status is None or status >= 500 else KfpRequestFailed


@contextlib.contextmanager
def api_call(what: str) -> Iterator[None]:
    """Turns kfp's and urllib3's exceptions into mlops errors naming the request; kfp's link
    lines ("Run details: ...") go to stderr so stdout stays the command's output."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except kfp_server_api.ApiException as e:
        body = (e.body.decode(errors="replace") if isinstance(e.body, bytes) else str(e.body or "")).strip()
        try:
            body = json.loads(body).get("message") or body
        except (ValueError, AttributeError):
            pass
        raise _status_error(e.status)(f"KFP API {what}: HTTP {e.status} {e.reason}: {body[:300]}") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise KfpUnavailable(f"KFP API {what}: cannot connect: {e}") from None


def _token(token: str | None) -> tuple[str | None, str | None]:
    """(bearer token, service account token path) by the usual KFP means, in that order."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token:
        return token, None
    path = os.environ.get(SA_TOKEN_ENV) or DEFAULT_SA_TOKEN_PATH
    if os.environ.get(SA_TOKEN_ENV) and not os.path.isfile(path):
        raise InvalidInput(f"${SA_TOKEN_ENV}: {path} is not a file (the projected service account token)")
    return None, path if os.path.isfile(path) else None


def _check_reachable(host: str, token: str | None, sa_path: str | None, timeout_s: float) -> None:
    """GET /apis/v2beta1/healthz once with a short timeout: kfp.Client retries an unreachable
    host five times five seconds apart before failing with a bare TimeoutError."""
    import urllib.error
    import urllib.request

    bearer = token or (Path(sa_path).read_text().strip() if sa_path else None)
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz")
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as e:
        raise _status_error(e.code)(f"KFP API GET /apis/v2beta1/healthz at {host}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KfpUnavailable(f"KFP API at {host} is unreachable: {reason} (is `--host` right? port-forward?)") from None


def connect(host: str, token: str | None = None, namespace: str | None = None, timeout_s: float = 10.0):
    """A kfp.Client for the KFP API at `host` (http(s)://...), authenticated as kfp does it."""
    if not re.match(r"^https?://[^/\s]+", host or ""):
        raise InvalidInput(
            f"--host {host!r}: the KFP API URL, e.g. http://localhost:8888 (port-forward of ml-pipeline)"
        )
    host = host.rstrip("/")
    bearer, sa_path = _token(token)
    _check_reachable(host, bearer, sa_path, timeout_s)
    import kfp

    kwargs: dict[str, Any] = {"host": host, "existing_token": bearer}
    if sa_path and not bearer:
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=sa_path)
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings(), api_call("GET /apis/v2beta1/healthz"):
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(**kwargs)


# ---- pipeline versions -------------------------------------------------------------------------


def ir_content_hash(ir_path: str | Path) -> str:
    """sha256 of the IR's documents as canonical JSON: formatting and key order do not count."""
    docs = list(yaml.safe_load_all(Path(ir_path).read_text()))
    return hashlib.sha256(json.dumps(docs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    version_name: str
    reused: bool


def ensure_pipeline_version(client, pipeline_name: str, ir_path: str | Path) -> PipelineVersion:
    """The KFP pipeline `pipeline_name` (created if missing) and its version for this IR: reused
    when one of the same content exists, else uploaded (multipart, as the KFP UI does)."""
    import kfp_server_api

    version_name = VERSION_PREFIX + ir_content_hash(ir_path)[:16]
    with api_call("GET /apis/v2beta1/pipelines"):
        pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        with api_call("POST /apis/v2beta1/pipelines"):
            created = client._pipelines_api.pipeline_service_create_pipeline(
                body=kfp_server_api.V2beta1Pipeline(
                    display_name=pipeline_name,
                    description=f"mlops pipeline {pipeline_name} (versions: {VERSION_PREFIX}*)",
                )
            )
        pipeline_id = created.pipeline_id
    else:
        with api_call(f"GET /apis/v2beta1/pipelines/{pipeline_id}/versions"):
            found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=_name_filter(version_name))
        if found.pipeline_versions:
            return PipelineVersion(pipeline_id, found.pipeline_versions[0].pipeline_version_id, version_name, True)
    with api_call("POST /apis/v2beta1/pipelines/upload_version"):
        version = client.upload_pipeline_version(
            str(ir_path), version_name, pipeline_id=pipeline_id, description=f"IR sha256 {ir_content_hash(ir_path)}"
        )
    return PipelineVersion(pipeline_id, version.pipeline_version_id, version_name, False)


def _experiment_id(client, name: str) -> str:
    with api_call("GET/POST /apis/v2beta1/experiments"):
        return client.create_experiment(name).experiment_id  # get-or-create by name


# ---- runs --------------------------------------------------------------------------------------


def submit(client, pipeline_name: str, ir_path: str | Path, params: dict, experiment: str, run_name: str) -> dict:
    """Creates a run of the IR's pipeline version; returns what the command prints."""
    version = ensure_pipeline_version(client, pipeline_name, ir_path)
    experiment_id = _experiment_id(client, experiment)
    with api_call("POST /apis/v2beta1/runs"):
        run = client.run_pipeline(
            experiment_id, run_name, params=params, pipeline_id=version.pipeline_id, version_id=version.version_id
        )
    return {
        "run_id": run.run_id,
        "name": run_name,
        "state": run.state,
        "experiment": experiment,
        "pipeline_id": version.pipeline_id,
        "pipeline_version": version.version_name,
        "pipeline_version_reused": version.reused,
        "parameters": params,
    }


def run_summary(run) -> dict:
    """The fields of a V2beta1Run that `runs list|get|wait` show."""
    ref = run.pipeline_version_reference
    return {
        "run_id": run.run_id,
        "name": run.display_name,
        "state": run.state,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "experiment_id": run.experiment_id,
        "pipeline_version_id": ref.pipeline_version_id if ref else None,
        "parameters": dict((run.runtime_config.parameters or {}) if run.runtime_config else {}),
        "error": run.error.message if run.error and run.error.message else None,
    }


def _iso(value) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def get_run(client, run_id: str) -> dict:
    with api_call(f"GET /apis/v2beta1/runs/{run_id}"):
        return run_summary(client.get_run(run_id))


def list_runs(client, experiment: str | None = None, limit: int = 20) -> list[dict]:
    experiment_id = None
    if experiment:
        with api_call("GET /apis/v2beta1/experiments"):
            experiment_id = client.get_experiment(experiment_name=experiment).experiment_id
    with api_call("GET /apis/v2beta1/runs"):
        response = client.list_runs(page_size=limit, sort_by="created_at desc", experiment_id=experiment_id)
    return [run_summary(r) for r in response.runs or []]


def wait(client, run_id: str, timeout_s: float, poll_s: float = 5.0, on_state=None) -> dict:
    """Polls a run until it ends. SUCCEEDED returns it; FAILED, CANCELED or SKIPPED raise
    RunDidNotSucceed, a timeout WaitTimedOut (the run goes on)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        run = get_run(client, run_id)
        if on_state is not None and run["state"] != last:
            on_state(run)
        last = run["state"]
        if last in FINAL_STATES:
            if last != "SUCCEEDED":
                why = f": {run['error']}" if run["error"] else ""
                raise RunDidNotSucceed(f"run {run_id} ended {last}{why}")
            return run
        if time.monotonic() >= deadline:
            raise WaitTimedOut(f"run {run_id} is still {last} after {timeout_s:g} s (it goes on)")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


# ---- recurring runs ----------------------------------------------------------------------------

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def kfp_cron(expression: str) -> str:
    """A cron expression as KFP's scheduler reads it: six fields, seconds first. The usual five
    fields get a leading "0" (at second 0)."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ScheduleInvalid(
            f"--cron {expression!r}: expected 5 fields (minute hour day-of-month month day-of-week, e.g. '0 3 * * *') "
            "or 6 with seconds first"
        )
    return " ".join(fields)


def schedule(
    client, pipeline_name: str, ir_path: str | Path, name: str, cron: str, params: dict, experiment: str
) -> dict:
    """Creates the recurring run `name`, or leaves it as it is when it already has these
    settings, or replaces it (create the new one, then delete the old one) when they changed."""
    cron = kfp_cron(cron)
    version = ensure_pipeline_version(client, pipeline_name, ir_path)
    experiment_id = _experiment_id(client, experiment)
    with api_call("GET /apis/v2beta1/recurringruns"):
        existing = client.list_recurring_runs(page_size=100, filter=_name_filter(name)).recurring_runs or []
    wanted = {"version_id": version.version_id, "cron": cron, "parameters": params, "experiment_id": experiment_id}
    matching = [r for r in existing if _recurring_settings(r) == wanted]
    if matching and len(existing) == 1 and matching[0].mode == "ENABLE":
        return _recurring_summary(matching[0], "unchanged", version)
    with api_call("POST /apis/v2beta1/recurringruns"):
        created = client.create_recurring_run(
            experiment_id,
            name,
            description=f"mlops schedule {name}: {pipeline_name} at '{cron}'",
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=params,
            pipeline_id=version.pipeline_id,
            version_id=version.version_id,
        )
    for old in existing:
        with api_call(f"DELETE /apis/v2beta1/recurringruns/{old.recurring_run_id}"):
            client.delete_recurring_run(old.recurring_run_id)
    return _recurring_summary(created, "replaced" if existing else "created", version)


def _recurring_settings(run) -> dict:
    ref = run.pipeline_version_reference
    cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
    return {
        "version_id": ref.pipeline_version_id if ref else None,
        "cron": cron,
        "parameters": dict((run.runtime_config.parameters or {}) if run.runtime_config else {}),
        "experiment_id": run.experiment_id,
    }


def _recurring_summary(run, action: str, version: PipelineVersion) -> dict:
    settings = _recurring_settings(run)
    return {
        "recurring_run_id": run.recurring_run_id,
        "name": run.display_name,
        "action": action,
        "cron": settings["cron"],
        "no_catchup": run.no_catchup,
        "max_concurrency": run.max_concurrency,
        "mode": run.mode,
        "pipeline_version": version.version_name,
        "parameters": settings["parameters"],
    }
