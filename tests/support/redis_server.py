"""A private redis-server for fault-injection tests: its own free port and data directory, paused
(SIGSTOP: a hung broker that still accepts TCP connections), killed (SIGKILL) and restarted from
its append-only file. Never the shared Redis on 6379, which other tests use concurrently.

    with RedisServer(tmp_path / "redis") as server:       # AOF, fsync on every write
        client = server.client()
        server.pause(); server.resume(); server.kill(); server.start()   # back with its data
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path, *, persistent: bool = True):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (the CI image and .ci/run provide it)")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> None:
        """Starts (or restarts on the same port, from the same AOF) and waits until it answers."""
        import redis

        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.directory), "--dbfilename", "dump.rdb", "--daemonize", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):  # not listening yet, or loading the AOF
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited ({self.proc.returncode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def client(self, **kwargs):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write (a paused server dies too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
