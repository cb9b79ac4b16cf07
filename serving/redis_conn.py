"""One way to reach Redis from the serving code (payload log sink, streaming), and one way to wait
for it when it is gone.

Config values are `host:port` (the form Feast's online store config uses, e.g. "127.0.0.1:6379")
or a full URL (`redis://[:password@]host:port/db`, `rediss://...`, `unix://...`). redis-py is
installed in the serving environment only, so it is imported here, on first use, with an error
that says so instead of a bare ModuleNotFoundError.

Every client has socket timeouts (redis-py's default is none: a paused Redis, SIGSTOP or a hung
host, would hold a call for ever) and no retry of its own (redis-py's default retries 3 times
with seconds of backoff inside one call): the caller's loop decides when to try again, with
`Backoff`, and logs the outage once (`Outage`).
"""

from __future__ import annotations

import logging
import random
import sys
import time

from mlops.errors import MlopsError, Unavailable

CONNECT_TIMEOUT_S = 2.0  # a TCP connect to a live Redis takes well under a millisecond on a LAN
COMMAND_TIMEOUT_S = 5.0  # a command without a blocking time of its own (XADD, a commit script)


class RedisUnavailable(MlopsError):
    """redis-py is not installed in this interpreter, or the URL is not one."""


class BrokerUnavailable(Unavailable):
    """A Redis the serving code needs does not answer (refused, timed out, loading its data)."""


def connect(url: str, *, purpose: str, socket_timeout: float = COMMAND_TIMEOUT_S):
    """A redis.Redis for `url` (no round trip yet). `purpose` names the config field in errors.
    `socket_timeout`: the longest a call may wait for its reply; a blocking read (XREADGROUP BLOCK)
    needs its block time plus a margin."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise RedisUnavailable(
            f"{purpose}: the redis package is not installed in {sys.executable}; Redis sinks and streams "
            f"run in the serving environment (.venv/serving)"
        ) from None
    options = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    if "://" in url:
        return redis.Redis.from_url(url, **options)
    host, sep, port = url.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RedisUnavailable(f"{purpose}: {url!r} is neither host:port nor a redis:// URL")
    return redis.Redis(host=host, port=int(port), **options)


def broker_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis does not answer now" (refused, reset, timed out, still
    loading its AOF/RDB after a restart): retried with backoff, never a crash."""
    import redis

    return (redis.ConnectionError, redis.TimeoutError)


class Backoff:
    """Exponential backoff with jitter, bounded: the n-th wait after a failure is uniform in
    [d/2, d] with d = min(cap, first * 2**n). Many consumers restarting together spread out."""

    def __init__(self, first: float = 0.05, cap: float = 2.0):
        self.first, self.cap = first, cap
        self.failures = 0

    def next_delay(self) -> float:
        d = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self.failures = 0


class Outage:
    """One log line when a dependency goes away and one when it is back, whatever the number of
    failed attempts in between (a log per retry would flood the logs during an outage)."""

    def __init__(self, logger: logging.Logger, what: str):
        self.log, self.what = logger, what
        self.since: float | None = None  # monotonic start of the current outage
        self.attempts = 0
        self.count = 0  # outages seen

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException, consequence: str) -> None:
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            self.count += 1
            self.log.warning("%s unavailable (%s: %s); %s", self.what, type(error).__name__, error, consequence)

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info(
                "%s back after %.1f s (%d failed attempts)", self.what, time.monotonic() - self.since, self.attempts
            )
            self.since, self.attempts = None, 0
