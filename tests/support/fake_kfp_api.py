"""A small fake of the KFP v2beta1 REST API on 127.0.0.1, for the kfp.Client paths of the platform.

It serves the endpoints kfp.Client 2.13 (kfp_server_api 2.4) calls for `mlops submit`, `schedule`
and `runs` (healthz, pipelines incl. the multipart upload of a version, experiments, runs,
recurring runs) and checks what they carry, as the API server would, answering 400 with the
reason otherwise:

* an uploaded IR parses strictly (pipelines.runner.load_ir_strict: unknown fields rejected);
* a run's / recurring run's pipeline version exists and its runtime_config parameters are inputs
  of that IR's root with values of the declared types;
* a recurring run has a cron trigger of six fields, and no_catchup / max_concurrency present;
* with `token` set, every request carries `Authorization: Bearer <token>` (401 otherwise).

Every request is kept in `requests` (method, path, query, headers, JSON body or upload) so tests
assert on contents. Runs move through `run_script` states, one per GET of the run.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PREFIX = "/apis/v2beta1"
_TYPES = {"STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float), "BOOLEAN": (bool,)}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # parsed JSON, or for an upload {"file": bytes, "filename": str}


@dataclass
class FakeKfp:
    token: str | None = None
    run_script: list[str] = field(default_factory=lambda: ["PENDING", "RUNNING", "SUCCEEDED"])
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)  # version id -> version (+ "_spec": the IR docs)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    _gets: dict[str, int] = field(default_factory=dict)

    def calls(self, method: str, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(obj: dict, filter_json: str | None) -> bool:
    """The Filter proto's EQUALS on a string field (operation as number 1 or name)."""
    if not filter_json:
        return True
    for p in json.loads(filter_json).get("predicates", []):
        if p.get("operation") not in (1, "EQUALS"):
            raise ApiError(400, f"filter operation {p.get('operation')} not supported by the fake")
        value = p.get("stringValue", p.get("string_value"))
        if obj.get(p["key"]) != value:
            return False
    return True


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKfp

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str):
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(method, url.path, query, headers)
        self.fake.requests.append(request)
        try:
            if self.fake.token is not None and headers.get("authorization") != f"Bearer {self.fake.token}":
                raise ApiError(401, "missing or wrong bearer token")
            if headers.get("content-type", "").startswith("multipart/form-data"):
                request.body = _multipart(headers["content-type"], raw)
            elif raw:
                try:
                    request.body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "body is not JSON") from None
            status, answer = _route(self.fake, request)
        except ApiError as e:
            status, answer = e.status, {"code": e.status, "message": e.message}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _multipart(content_type: str, raw: bytes) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            return {"file": part.get_payload(decode=True), "filename": part.get_filename()}
    raise ApiError(400, "multipart upload without an `uploadfile` part")


def _route(fake: FakeKfp, r: Request) -> tuple[int, Any]:
    parts = r.path.removeprefix(PREFIX).strip("/").split("/")
    if not r.path.startswith(PREFIX):
        raise ApiError(404, f"no route {r.path}")
    if r.method == "GET" and parts == ["healthz"]:
        return 200, {"multi_user": False}
    if parts[0] == "pipelines":
        return _pipelines(fake, r, parts[1:])
    if parts[0] == "experiments":
        return _experiments(fake, r, parts[1:])
    if parts[0] == "runs":
        return _runs(fake, r, parts[1:])
    if parts[0] == "recurringruns":
        return _recurring(fake, r, parts[1:])
    raise ApiError(404, f"no route {r.method} {r.path}")


def _pipelines(fake: FakeKfp, r: Request, rest: list[str]):
    if r.method == "GET" and not rest:
        found = [p for p in fake.pipelines.values() if _matches(p, r.query.get("filter"))]
        return 200, {"pipelines": found, "total_size": len(found)}
    if r.method == "POST" and not rest:
        name = (r.body or {}).get("display_name")
        if not name:
            raise ApiError(400, "pipeline display_name is required")
        if any(p["display_name"] == name for p in fake.pipelines.values()):
            raise ApiError(409, f"pipeline {name} already exists")
        pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "created_at": _now()}
        pipeline["description"] = r.body.get("description", "")
        fake.pipelines[pipeline["pipeline_id"]] = pipeline
        return 200, pipeline
    if r.method == "POST" and rest == ["upload_version"]:
        return 200, _upload_version(fake, r)
    if r.method == "GET" and len(rest) == 2 and rest[1] == "versions":
        if rest[0] not in fake.pipelines:
            raise ApiError(404, f"pipeline {rest[0]} not found")
        found = [
            _public(v)
            for v in fake.versions.values()
            if v["pipeline_id"] == rest[0] and _matches(v, r.query.get("filter"))
        ]
        return 200, {"pipeline_versions": found, "total_size": len(found)}
    raise ApiError(404, f"no route {r.method} {r.path}")


def _upload_version(fake: FakeKfp, r: Request) -> dict:
    from pipelines.runner import load_ir_strict

    pipeline_id, name = r.query.get("pipelineid"), r.query.get("name")
    if pipeline_id not in fake.pipelines:
        raise ApiError(404, f"pipeline {pipeline_id} not found")
    if not name or any(v["display_name"] == name and v["pipeline_id"] == pipeline_id for v in fake.versions.values()):
        raise ApiError(409, f"pipeline version name {name!r} missing or taken")
    if not isinstance(r.body, dict) or "file" not in r.body:
        raise ApiError(400, "pipeline version upload is not multipart/form-data")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "pipeline.yaml")
        path.write_bytes(r.body["file"])
        try:
            spec = load_ir_strict(path)
        except Exception as e:  # the API server rejects what does not parse as PipelineSpec
            raise ApiError(400, f"invalid pipeline spec: {e}") from None
    inputs = {
        name: param.parameter_type
        for name, param in spec.root.input_definitions.parameters.items()  # type: ignore[attr-defined]
    }
    from kfp.pipeline_spec import pipeline_spec_pb2

    type_names = {k: pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(v) for k, v in inputs.items()}
    version = {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": str(uuid.uuid4()),
        "display_name": name,
        "description": r.query.get("description", ""),
        "created_at": _now(),
        "_inputs": type_names,
        "_ir": r.body["file"],
    }
    fake.versions[version["pipeline_version_id"]] = version
    return _public(version)


def _experiments(fake: FakeKfp, r: Request, rest: list[str]):
    if r.method == "GET" and not rest:
        found = [e for e in fake.experiments.values() if _matches(e, r.query.get("filter"))]
        return 200, {"experiments": found, "total_size": len(found)}
    if r.method == "POST" and not rest:
        name = (r.body or {}).get("display_name")
        if not name:
            raise ApiError(400, "experiment display_name is required")
        if any(e["display_name"] == name for e in fake.experiments.values()):
            raise ApiError(409, f"experiment {name} already exists")
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": name,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        fake.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment
    if r.method == "GET" and len(rest) == 1 and rest[0] in fake.experiments:
        return 200, fake.experiments[rest[0]]
    raise ApiError(404, f"no route {r.method} {r.path}")


def _checked_run_body(fake: FakeKfp, body: dict | None, what: str) -> dict:
    """The pipeline version reference, experiment and parameters of a run or recurring run."""
    body = body or {}
    if body.get("pipeline_spec"):
        raise ApiError(400, f"{what}: the fake expects a pipeline_version_reference, not an inline pipeline_spec")
    ref = body.get("pipeline_version_reference") or {}
    version = fake.versions.get(ref.get("pipeline_version_id", ""))
    if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
        raise ApiError(400, f"{what}: pipeline_version_reference {ref} names no uploaded version")
    if body.get("experiment_id") not in fake.experiments:
        raise ApiError(400, f"{what}: experiment_id {body.get('experiment_id')!r} does not exist")
    if not body.get("display_name"):
        raise ApiError(400, f"{what}: display_name is required")
    params = (body.get("runtime_config") or {}).get("parameters") or {}
    for key, value in params.items():
        declared = version["_inputs"].get(key)
        if declared is None:
            raise ApiError(400, f"{what}: runtime_config.parameters.{key}: not an input of the pipeline")
        if not isinstance(value, _TYPES[declared]) or (declared != "BOOLEAN" and isinstance(value, bool)):
            raise ApiError(400, f"{what}: runtime_config.parameters.{key}: {value!r} is not {declared}")
    return body


def _runs(fake: FakeKfp, r: Request, rest: list[str]):
    if r.method == "POST" and not rest:
        body = _checked_run_body(fake, r.body, "run")
        run = {
            **{k: body[k] for k in ("display_name", "experiment_id", "pipeline_version_reference", "runtime_config")},
            "run_id": str(uuid.uuid4()),
            "created_at": _now(),
            "state": fake.run_script[0],
            "storage_state": "AVAILABLE",
        }
        fake.runs[run["run_id"]] = run
        return 200, run
    if r.method == "GET" and len(rest) == 1:
        run = fake.runs.get(rest[0])
        if run is None:
            raise ApiError(404, f"run {rest[0]} not found")
        seen = fake._gets[rest[0]] = fake._gets.get(rest[0], 0) + 1
        run["state"] = fake.run_script[min(seen, len(fake.run_script) - 1)]
        if run["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
            run.setdefault("finished_at", _now())
        if run["state"] == "FAILED":
            run["error"] = {"code": 2, "message": "step trainer failed"}
        return 200, run
    if r.method == "GET" and not rest:
        found = [x for x in fake.runs.values() if r.query.get("experiment_id") in (None, x["experiment_id"])]
        found.sort(key=lambda x: x["created_at"], reverse="desc" in r.query.get("sort_by", ""))
        return 200, {"runs": found[: int(r.query.get("page_size", 100))], "total_size": len(found)}
    raise ApiError(404, f"no route {r.method} {r.path}")


def _recurring(fake: FakeKfp, r: Request, rest: list[str]):
    if r.method == "POST" and not rest:
        body = _checked_run_body(fake, r.body, "recurring run")
        cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
        if len(cron.split()) != 6:
            raise ApiError(400, f"recurring run: trigger.cron_schedule.cron {cron!r} needs 6 fields (seconds first)")
        for key in ("no_catchup", "max_concurrency", "mode"):
            if key not in body:
                raise ApiError(400, f"recurring run: {key} missing")
        recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": _now(), "status": "ENABLED"}
        recurring["max_concurrency"] = str(body["max_concurrency"])  # int64: a string in proto JSON
        fake.recurring_runs[recurring["recurring_run_id"]] = recurring
        return 200, recurring
    if r.method == "GET" and not rest:
        found = [x for x in fake.recurring_runs.values() if _matches(x, r.query.get("filter"))]
        # The one list field the API names in camelCase (proto json_name; kfp_server_api's attribute_map).
        return 200, {"recurringRuns": found, "total_size": len(found)}
    if r.method == "DELETE" and len(rest) == 1:
        if fake.recurring_runs.pop(rest[0], None) is None:
            raise ApiError(404, f"recurring run {rest[0]} not found")
        return 200, {}
    raise ApiError(404, f"no route {r.method} {r.path}")


class FakeKfpServer:
    """`with FakeKfpServer() as (url, fake):` serves on a free 127.0.0.1 port in a thread."""

    def __init__(self, fake: FakeKfp | None = None):
        self.fake = fake or FakeKfp()
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.url, self.fake

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
