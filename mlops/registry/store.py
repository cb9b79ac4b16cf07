"""The model registry in the artifact store: what serving needs, readable without ml-metadata.

    <artifact_root>/registry/<name>/versions/<N>/serving_model/     SavedModel (if the Trainer made one)
                                                /model.tflite  /tflite_preprocessing.json  /training.json
                                                /manifest.json  written last: the version exists once it does
                    <name>/aliases.json  history.jsonl  aliases.lock    (see aliases.py)

Versions are integers 1, 2, 3... per model, never reused: an int in Python and in every JSON
file, its decimal text as the directory name and in selectors ("flights@3"). A number is taken
as max(existing directory names) + 1, so a directory left by a crashed registration burns its
number rather than being mixed with new files.

Race-free publication (two concurrent registrations always get two numbers):
  * local file system: the version is built in a hidden temp dir (files, then manifest), then
    published with one os.rename onto `versions/<N>`. rename fails when `<N>` already exists as
    a non-empty directory (every version has at least its manifest), so the loser of a race
    takes the next number and retries; readers see a complete version or none;
  * object stores have no rename: `versions/<N>/.claim` is created with pipe_file(mode="create")
    (atomic create-if-absent on s3fs and gcsfs), then files, then the manifest as commit point.

Only blessed models get in: `register` and `promote` refuse a model whose blessing is not
`{"blessed": true}`; the Pusher only registers blessed models, and the registry enforces it.

A bare model name resolves to its production version, else its staging version: a server
configured with "flights" serves production once something was promoted and the newest
registration before that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mlops import storage
from mlops.config import join_uri
from mlops.registry import locking
from mlops.registry.aliases import AliasBook, AliasMove, check_alias_name, default_actor
from mlops.registry.errors import InvalidRegistryInput, NotBlessedError, RegistryError, RegistryNotFound

MANIFEST = "manifest.json"
CLAIM = ".claim"
WITHDRAWN = ".withdrawn"  # marks the number of a registration undone after publication
FORMAT_VERSION = 1
STAGING, PRODUCTION = "staging", "production"
DEFAULT_ALIASES = (PRODUCTION, STAGING)  # what a bare model name resolves to, in order
# The Trainer's output files (contract: mlops.artifacts, which imports pandas, too slow for a
# server's start-up; tests/unit/test_registry.py keeps the two lists equal).
MODEL_FILES = {
    "serving_model": "serving_model",
    "tflite": "model.tflite",
    "tflite_preprocessing": "tflite_preprocessing.json",
    "training_info": "training.json",
}
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_MAX_ATTEMPTS = 1000


def check_model_name(name: str) -> None:
    """Lower case only: MLMD names are case-insensitive on MySQL, and the name is a path part."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRegistryInput(f"invalid model name {name!r}: use lower-case letters, digits, '_' and '-'")


def parse_selector(selector: str) -> tuple[str, str | None]:
    """ "flights" -> ("flights", None); "flights@3" / "flights@production" -> ("flights", "3"/...)."""
    name, sep, ref = (selector or "").partition("@")
    if sep and (not ref or "@" in ref):
        raise InvalidRegistryInput(
            f"invalid model selector {selector!r}: use NAME, NAME@VERSION, NAME@ALIAS or NAME@latest"
        )
    check_model_name(name)
    return name, (ref or None)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    uri: str  # the version directory
    manifest: dict[str, Any]

    @property
    def selector(self) -> str:
        return f"{self.name}@{self.version}"

    def file_uri(self, key: str) -> str | None:
        """The URI of a model file by MODEL_FILES key; None if the Trainer did not produce it.
        The manifest stores paths relative to the version directory, so a copied registry works."""
        rel = self.manifest.get("model_paths", {}).get(key)
        return join_uri(self.uri, rel) if rel else None

    @property
    def serving_model_uri(self) -> str | None:
        return self.file_uri("serving_model")

    @property
    def tflite_uri(self) -> str | None:
        return self.file_uri("tflite")

    @property
    def blessed(self) -> bool:
        return _is_blessed(self.manifest.get("blessing"))

    @property
    def features(self) -> list[dict[str, str]]:
        return list(self.manifest.get("features", []))

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics", {}))


class ModelRegistry:
    def __init__(self, artifact_root: str, *, lock_timeout_s: float = 60.0):
        self.root = join_uri(str(artifact_root), "registry")
        self.lock_timeout_s = lock_timeout_s

    @classmethod
    def from_config(cls, config) -> ModelRegistry:
        return cls(config.artifact_root)

    def _versions_uri(self, name: str) -> str:
        return join_uri(self.root, name, "versions")

    def _book(self, name: str) -> AliasBook:
        def exists(version: int) -> bool:
            return storage.exists(join_uri(self._versions_uri(name), str(version), MANIFEST))

        return AliasBook(
            join_uri(self.root, name),
            lock_timeout_s=self.lock_timeout_s,
            version_exists=exists,
            versions=lambda: [v.version for v in self.versions(name)],
        )

    # ---- registering -----------------------------------------------------------------------
    def register(
        self,
        name: str,
        model_dir: str,
        *,
        metrics: Mapping[str, Any],
        blessing: Mapping[str, Any],
        dataset_versions: str | Iterable[str],
        config_hash: str,
        git_commit: str,
        task: Any,
        output_key: str,
        features: Iterable[Any],
        extra: Mapping[str, Any] | None = None,
        mlmd_artifact_id: int | None = None,
        actor: str | None = None,
        training_fingerprint: str | None = None,
    ) -> ModelVersion:
        """Copies the model files of `model_dir` into a new version and points `staging` at it.

        `features`: dicts {"name", "dtype"} or objects with .name/.dtype (mlops.artifacts.RawFeature),
        the raw inputs of the serving signature. `mlmd_artifact_id`: the trained mlops.Model in MLMD,
        if known. `training_fingerprint`: what the model was trained from (the Trainer's step-cache key:
        dataset versions, config sections, code versions of every step up to it), which tells two
        versions with the same inputs from two with different ones (`same_training_inputs`).
        Refuses an unblessed model and a directory without serving_model/ or model.tflite, and
        changes nothing when the model's alias files are damaged (CorruptRegistryFile)."""
        check_model_name(name)
        model_dir = str(model_dir)
        if not _is_blessed(blessing):
            reason = (blessing or {}).get("reason") or "no reason given"
            raise NotBlessedError(
                f"refusing to register model {name!r} from {model_dir}: it is not blessed "
                f"({reason}); only models blessed by the Evaluator are registered"
            )
        if not any(storage.exists(join_uri(model_dir, MODEL_FILES[k])) for k in ("serving_model", "tflite")):
            raise InvalidRegistryInput(
                f"refusing to register model {name!r}: {model_dir} holds neither "
                f"{MODEL_FILES['serving_model']}/ nor {MODEL_FILES['tflite']}"
            )
        actor = actor or default_actor()
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "registered_by": actor,
            "source_uri": model_dir,
            "metrics": _jsonable(metrics, "metrics"),
            "blessing": _jsonable(blessing, "blessing"),
            "dataset_versions": [dataset_versions] if isinstance(dataset_versions, str) else list(dataset_versions),
            "config_hash": config_hash,
            "git_commit": git_commit,
            "mlmd_artifact_id": mlmd_artifact_id,
            "task": getattr(task, "value", task),
            "output_key": output_key,
            "features": _feature_list(features),
            "extra": _jsonable(dict(extra or {}), "extra"),
            "training_fingerprint": training_fingerprint,
        }
        book = self._book(name)
        book.check_move(STAGING)  # damaged alias files: refuse before copying anything
        versions_uri = self._versions_uri(name)
        publish = self._publish_local if storage.is_local(versions_uri) else self._publish_object_store
        version = publish(name, versions_uri, model_dir, manifest)
        try:
            book.move(STAGING, version.version, action="register", reason=f"registered from {model_dir}", by=actor)
        except BaseException:
            self._withdraw(version, book)
            raise
        return version

    def _withdraw(self, version: ModelVersion, book: AliasBook) -> None:
        """Unpublishes a version whose staging move failed, so the failed registration leaves no
        version behind; its number stays burnt (a marker file remains). Best effort, under the
        alias lock, and only while no committed move names it (a concurrent promote might)."""
        with contextlib.suppress(Exception), locking.exclusive(book.lock_uri, timeout_s=min(5.0, self.lock_timeout_s)):
            if any(version.version in (m.from_version, m.to_version) for m in book.load(check_targets=False).history):
                return
            storage.write_bytes_atomic(join_uri(version.uri, WITHDRAWN), b"registration failed at its alias move\n")
            storage.remove(join_uri(version.uri, MANIFEST))  # the version is invisible from here on
            for entry in storage.listdir(version.uri):
                if entry != WITHDRAWN:
                    storage.remove(join_uri(version.uri, entry), recursive=True)

    def _publish_local(self, name: str, versions_uri: str, model_dir: str, manifest: dict) -> ModelVersion:
        storage.makedirs(versions_uri)
        storage.remove_stale_temps(versions_uri)
        tmp = join_uri(versions_uri, storage.new_temp_name())
        storage.makedirs(tmp)
        try:
            manifest.update(_copy_model_files(model_dir, tmp))
            for _ in range(_MAX_ATTEMPTS):
                number = self._next_number(name)
                final = join_uri(versions_uri, str(number))
                stamped = {**manifest, "version": number, "created_at": _now()}
                _write_manifest(tmp, stamped)  # last file of the version
                try:
                    os.rename(storage.local_path(tmp), storage.local_path(final))
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        continue  # a concurrent registration took this number
                    raise
                return ModelVersion(name, number, final, stamped)
            raise RegistryError(f"model {name!r}: no free version number after {_MAX_ATTEMPTS} attempts")
        finally:
            storage.remove(tmp, recursive=True)  # gone already after a successful rename

    def _publish_object_store(self, name: str, versions_uri: str, model_dir: str, manifest: dict) -> ModelVersion:
        fs, _ = storage.fs_and_path(versions_uri)
        for _ in range(_MAX_ATTEMPTS):
            number = self._next_number(name)
            final = join_uri(versions_uri, str(number))
            try:
                claim = json.dumps({"by": manifest["registered_by"], "at": _now()}).encode()
                fs.pipe_file(storage.fs_and_path(join_uri(final, CLAIM))[1], claim, mode="create")
                break
            except FileExistsError:
                continue
        else:
            raise RegistryError(f"model {name!r}: no free version number after {_MAX_ATTEMPTS} attempts")
        try:
            manifest.update(_copy_model_files(model_dir, final))
            stamped = {**manifest, "version": number, "created_at": _now()}
            _write_manifest(final, stamped)  # the commit point
        except BaseException:
            with contextlib.suppress(Exception):
                storage.remove(final, recursive=True)
            raise
        return ModelVersion(name, number, final, stamped)

    def _next_number(self, name: str) -> int:
        return max((int(n) for n in storage.listdir(self._versions_uri(name)) if n.isdigit()), default=0) + 1

    # ---- reading ---------------------------------------------------------------------------
    def list_models(self) -> list[str]:
        return [
            n for n in storage.listdir(self.root) if not n.startswith(".") and storage.exists(self._versions_uri(n))
        ]

    def _require_model(self, name: str) -> None:
        check_model_name(name)
        if not storage.exists(self._versions_uri(name)):
            known = ", ".join(self.list_models()) or "none yet"
            raise RegistryNotFound(f"no model named {name!r} in the registry at {self.root} (models: {known})")

    def versions(self, name: str) -> list[ModelVersion]:
        """Complete versions, oldest first. Directories without a manifest are invisible."""
        self._require_model(name)
        base = self._versions_uri(name)
        out = []
        for entry in storage.listdir(base):
            manifest_uri = join_uri(base, entry, MANIFEST)
            if entry.isdigit() and storage.exists(manifest_uri):
                out.append(ModelVersion(name, int(entry), join_uri(base, entry), storage.read_json(manifest_uri)))
        return sorted(out, key=lambda v: v.version)

    def get(self, name: str, version: int | str) -> ModelVersion:
        self._require_model(name)
        number = _version_number(name, version)
        uri = join_uri(self._versions_uri(name), str(number))
        manifest_uri = join_uri(uri, MANIFEST)
        if not storage.exists(manifest_uri):
            have = ", ".join(str(v.version) for v in self.versions(name)) or "none"
            raise RegistryNotFound(f"model {name!r} has no version {number} (versions: {have})")
        return ModelVersion(name, number, uri, storage.read_json(manifest_uri))

    def resolve(self, selector: str) -> ModelVersion:
        """ "NAME@N" a version, "NAME@ALIAS" an alias's target, "NAME@latest" the newest version,
        "NAME" the production version, else the staging one."""
        name, ref = parse_selector(selector)
        self._require_model(name)
        if ref is not None and ref.isdigit():
            return self.get(name, int(ref))
        if ref == "latest":
            versions = self.versions(name)
            if not versions:
                raise RegistryNotFound(f"model {name!r} has no complete version yet")
            return versions[-1]
        aliases = self.aliases(name)
        if ref is None:
            for alias in DEFAULT_ALIASES:
                if alias in aliases:
                    return self.get(name, aliases[alias])
            raise RegistryNotFound(
                f"model {name!r} has neither a {PRODUCTION} nor a {STAGING} alias; name a version, e.g. {name}@1"
            )
        if ref not in aliases:
            have = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            raise RegistryNotFound(f"model {name!r} has no alias {ref!r} (aliases: {have})")
        return self.get(name, aliases[ref])

    def aliases(self, name: str) -> dict[str, int]:
        self._require_model(name)
        return self._book(name).current()

    def history(self, name: str) -> list[AliasMove]:
        self._require_model(name)
        return self._book(name).history()

    def repair(self, name: str) -> dict[str, Any]:
        """Rebuilds aliases.json from history.jsonl when it is unreadable or disagrees with it;
        writes nothing on a consistent model. Returns {"problem", "changes", "aliases", ...}."""
        self._require_model(name)
        return self._book(name).repair()

    def same_training_inputs(self, name: str, training_fingerprint: str | None) -> list[ModelVersion]:
        """Versions registered from a model trained on the same inputs (data, config, code)."""
        if not training_fingerprint or not storage.exists(self._versions_uri(name)):
            return []
        return [v for v in self.versions(name) if v.manifest.get("training_fingerprint") == training_fingerprint]

    # ---- moving aliases --------------------------------------------------------------------
    def promote(
        self, name: str, version: int | str, alias: str = PRODUCTION, reason: str = "", *, actor: str | None = None
    ) -> AliasMove:
        """Points `alias` at a blessed version (a no-op, seq None, if it already points there)."""
        check_alias_name(alias)
        target = self.get(name, version)
        if not target.blessed:
            why = target.manifest.get("blessing", {}).get("reason") or "no reason given"
            raise NotBlessedError(
                f"refusing to promote {target.selector} to {alias}: version {target.version} "
                f"of model {name!r} is not blessed ({why})"
            )
        return self._book(name).move(alias, target.version, action="promote", reason=reason, by=actor)

    def rollback(self, name: str, alias: str = PRODUCTION, reason: str = "", *, actor: str | None = None) -> AliasMove:
        """Moves `alias` back to the target it had before its current one (see aliases.py)."""
        check_alias_name(alias)
        self._require_model(name)
        return self._book(name).rollback(alias, reason=reason, by=actor, check=lambda v: self.get(name, v))


# ---- helpers ------------------------------------------------------------------------------
def _is_blessed(blessing: Mapping[str, Any] | None) -> bool:
    return isinstance(blessing, Mapping) and blessing.get("blessed") is True


def _version_number(name: str, version: int | str) -> int:
    if isinstance(version, bool) or not (isinstance(version, int) or str(version).isdigit()):
        raise InvalidRegistryInput(f"model {name!r}: invalid version {version!r}: versions are numbers 1, 2, 3...")
    return int(version)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _jsonable(value: Any, what: str) -> Any:
    """A JSON round trip: numpy scalars become numbers, anything else unserialisable is an error."""

    def default(o):
        if hasattr(o, "item"):
            return o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(value, default=default))
    except (TypeError, ValueError) as e:
        raise InvalidRegistryInput(f"{what}: {e}") from None


def _feature_list(features: Iterable[Any]) -> list[dict[str, str]]:
    out = []
    for f in features:
        name, dtype = (f.get("name"), f.get("dtype")) if isinstance(f, Mapping) else (f.name, f.dtype)
        if not name or not isinstance(dtype, str) or not dtype:
            raise InvalidRegistryInput(f"features: {f!r} needs a name and a dtype")
        out.append({"name": str(name), "dtype": dtype})
    names = [f["name"] for f in out]
    if not out or len(set(names)) != len(names):
        raise InvalidRegistryInput(f"features: need a non-empty list of distinct names, got {names}")
    return out


def _write_manifest(version_uri: str, manifest: dict[str, Any]) -> None:
    storage.write_json_atomic(join_uri(version_uri, MANIFEST), manifest)


def _model_members(src_dir: str):
    """(key -> relative path or None, [(absolute member, relative member)]) of MODEL_FILES."""
    src_fs, src_root = storage.fs_and_path(src_dir)
    src_root = src_root.rstrip("/")
    paths: dict[str, str | None] = {}
    members: list[tuple[str, str]] = []
    for key, rel in MODEL_FILES.items():
        src = f"{src_root}/{rel}"
        found = sorted(src_fs.find(src)) if src_fs.isdir(src) else [src] if src_fs.exists(src) else []
        paths[key] = rel if found else None
        members += [(m, m[len(src_root) + 1 :]) for m in found]
    return src_fs, paths, members


def _content_hash(files: list[dict[str, Any]]) -> str:
    """The identity of the model: the files that decide its predictions. training.json is left
    out: it is the training report, and its timings differ on every run, while the Trainer's
    model files are byte-reproducible (seeded, deterministic ops), so a re-run has the same hash."""
    report = MODEL_FILES["training_info"]
    listing = "".join(f"{f['path']}\t{f['sha256']}\n" for f in files if f["path"] != report)
    return hashlib.sha256(listing.encode()).hexdigest()


def model_content_hash(model_dir: str) -> str:
    """The content hash a registration of `model_dir` would get (without copying anything)."""
    src_fs, _, members = _model_members(model_dir)
    files = []
    for member, rel in members:
        digest = hashlib.sha256()
        with src_fs.open(member, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        files.append({"path": rel, "sha256": digest.hexdigest()})
    return _content_hash(files)


def _copy_model_files(src_dir: str, dst_dir: str) -> dict[str, Any]:
    """Copies whatever of MODEL_FILES exists (any fsspec source to any destination); returns the
    manifest fields describing them: relative paths, per-file size and sha256, content hash."""
    src_fs, paths, members = _model_members(src_dir)
    dst_fs, dst_root = storage.fs_and_path(dst_dir)
    dst_root = dst_root.rstrip("/")
    files = [_copy_file(src_fs, member, dst_fs, f"{dst_root}/{rel}", rel) for member, rel in members]
    return {"model_paths": paths, "files": files, "content_hash": _content_hash(files)}


def _copy_file(src_fs, src: str, dst_fs, dst: str, rel: str) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    dst_fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
    with src_fs.open(src, "rb") as fin, dst_fs.open(dst, "wb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return {"path": rel, "size": size, "sha256": digest.hexdigest()}
