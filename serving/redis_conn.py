"""One way to reach Redis from the serving code (payload log sink, streaming).

Config values are `host:port` (the form Feast's online store config uses, e.g. "127.0.0.1:6379")
or a full URL (`redis://[:password@]host:port/db`, `rediss://...`, `unix://...`). redis-py is
installed in the serving environment only, so it is imported here, on first use, with an error
that says so instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

import sys

from mlops.errors import MlopsError


class RedisUnavailable(MlopsError):
    """redis-py is not installed in this interpreter, or the URL is not one."""


def connect(url: str, *, purpose: str):
    """A redis.Redis for `url` (no round trip yet). `purpose` names the config field in errors."""
    try:
        import redis
    except ImportError:
        raise RedisUnavailable(
            f"{purpose}: the redis package is not installed in {sys.executable}; Redis sinks and streams "
            f"run in the serving environment (.venv/serving)"
        ) from None
    if "://" in url:
        return redis.Redis.from_url(url)
    host, sep, port = url.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RedisUnavailable(f"{purpose}: {url!r} is neither host:port nor a redis:// URL")
    return redis.Redis(host=host, port=int(port))
