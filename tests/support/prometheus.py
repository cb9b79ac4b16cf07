"""Real Prometheus 2.42, Alertmanager 0.25 and Pushgateway 1.5 (Debian's packages) for tests.

Each daemon runs on a free 127.0.0.1 port with its own config and data directory under the test's
tmp dir, and is stopped (SIGTERM, then SIGKILL) when its `with` block ends. Nothing here talks to
anything but loopback. `scripts/ensure-services.sh` installs the packages when they are missing;
a machine without them skips (`needs_prometheus`).

    with Prometheus(tmp, {"global": {...}, "scrape_configs": [...]}, rule_files=[...]) as prom:
        prom.query('up')                      # the result list of /api/v1/query
        prom.wait_for(lambda: prom.alerts())  # polls until truthy (or fails the test with the log)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name (upstream: alertmanager)
PUSHGATEWAY = "prometheus-pushgateway"

needs_prometheus = pytest.mark.skipif(
    not all(shutil.which(b) for b in (PROMETHEUS, PROMTOOL, ALERTMANAGER, PUSHGATEWAY)),
    reason="Debian's prometheus, prometheus-alertmanager, prometheus-pushgateway are not installed "
    "(scripts/ensure-services.sh installs them)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: Any = None, timeout: float = 5) -> Any:
    """GET (or POST `body` as JSON) and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


class Daemon:
    """A daemon subprocess on 127.0.0.1:`port`, ready once GET `ready_path` answers 200."""

    name = "daemon"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, argv: list[str], port: int):
        self.workdir, self.port = Path(workdir), port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self._argv = argv
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Daemon:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self._argv, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_for(self._ready, timeout, f"{self.name} ready at {self.url}{self.ready_path}")
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        if self.proc is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "condition", every=0.2):
        """Polls `predicate` until it returns something truthy (returned); fails the test with the
        daemon's log if it does not within `timeout` seconds or the daemon exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} waiting for {what}:\n{self.log()}")
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name}: no {what} within {timeout} s:\n{self.log()}")
            time.sleep(every)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _write_yaml(path: Path, doc: dict | str) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


class Prometheus(Daemon):
    """Prometheus with `config` (a dict or YAML text; `rule_files` are added to it) and its own TSDB."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: dict | str, rule_files=(), port: int | None = None):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load(config) if isinstance(config, str) else dict(config)
        if rule_files:
            doc["rule_files"] = [*doc.get("rule_files", []), *(str(Path(f).resolve()) for f in rule_files)]
        self.config_path = _write_yaml(workdir / "prometheus.yml", doc)
        port = port or free_port()
        argv = [
            PROMETHEUS,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ]
        super().__init__(workdir, argv, port)

    def api(self, path: str, **params) -> Any:
        """The `data` of a /api/v1 answer (fails the test on an error status)."""
        query = urllib.parse.urlencode(params)
        answer = http_json(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector (result list) of `expr` now."""
        return self.api("query", query=expr)["result"]

    def alerts(self, state: str | None = None, name: str | None = None) -> list[dict]:
        """Alerts (pending or firing), optionally only those in `state` / named `name`."""
        found = self.api("alerts")["alerts"]
        return [
            a
            for a in found
            if (state is None or a["state"] == state) and (name is None or a["labels"]["alertname"] == name)
        ]

    def targets_up(self) -> bool:
        """Every active scrape target has been scraped successfully."""
        targets = self.api("targets")["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)


class Alertmanager(Daemon):
    """Alertmanager with `config` (dict or YAML text), clustering off, its own storage."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: dict | str, port: int | None = None):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = _write_yaml(workdir / "alertmanager.yml", config)
        port = port or free_port()
        argv = [
            ALERTMANAGER,
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: a single instance
        ]
        super().__init__(workdir, argv, port)

    def alerts(self) -> list[dict]:
        return http_json(f"{self.url}/api/v2/alerts")


class Pushgateway(Daemon):
    """Pushgateway (in memory: no persistence file)."""

    name = "pushgateway"

    def __init__(self, workdir: Path, port: int | None = None):
        port = port or free_port()
        super().__init__(workdir, [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], port)


def promtool(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`promtool ARGS` (output captured as text; the caller checks returncode)."""
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ}
    )
