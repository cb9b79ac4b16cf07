"""An exclusive lock for the registry's read-modify-write updates (aliases and their history).

Local paths: `fcntl.flock` on a lock file. The kernel drops the lock when its holder dies (even
on kill -9), so there are no stale locks to clean up; on NFS, Linux emulates flock with POSIX
byte-range locks. The lock file is never deleted: removing a file that others may have opened
would let two processes each lock "the" lock file on two different inodes.

Object stores (s3://, gs://, memory://): no flock. The lock is an object created with
`pipe_file(mode="create")`, which s3fs (If-None-Match) and gcsfs (ifGenerationMatch=0) turn into
an atomic create-if-absent; on a backend whose create is check-then-write it is best effort.
A holder that dies leaves its lock object behind: it is broken once older than `stale_after_s`
(by the age the holder wrote into it, so hosts need roughly synchronised clocks). A holder that
is merely slow past that age can overlap with the next one: updates under the lock take
milliseconds, keep them that way.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator

from mlops import storage
from mlops.registry.errors import LockTimeout


@contextlib.contextmanager
def exclusive(lock_uri: str, *, timeout_s: float = 60.0, stale_after_s: float = 300.0) -> Iterator[None]:
    """Holds an exclusive lock on `lock_uri` for the duration of the block."""
    if storage.is_local(lock_uri):
        with _flock(storage.local_path(lock_uri), timeout_s):
            yield
    else:
        with _object_lock(lock_uri, timeout_s, stale_after_s):
            yield


def _pause() -> None:
    time.sleep(random.uniform(0.002, 0.02))  # jitter: contenders do not retry in lockstep


@contextlib.contextmanager
def _flock(path: str, timeout_s: float) -> Iterator[None]:
    import fcntl  # POSIX only; imported here so the module still imports elsewhere

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{path}: still locked by another process after {timeout_s:g} s") from None
                _pause()
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def _object_lock(uri: str, timeout_s: float, stale_after_s: float) -> Iterator[None]:
    fs, path = storage.fs_and_path(uri)
    token = uuid.uuid4().hex
    body = json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fs.pipe_file(path, body.encode(), mode="create")
            break
        except FileExistsError:
            if _age_s(fs, path) > stale_after_s:
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(path)  # its holder died; the next create decides who gets it
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"{uri}: still locked by another process after {timeout_s:g} s") from None
            _pause()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(fs.cat_file(path)).get("token") == token:  # never release someone else's lock
                fs.rm(path)


def _age_s(fs, path: str) -> float:
    try:
        return time.time() - float(json.loads(fs.cat_file(path))["at"])
    except FileNotFoundError:
        return 0.0  # released meanwhile: just retry
    except (ValueError, KeyError, TypeError):
        return float("inf")  # unreadable lock object: treat as stale
