"""The model a process serves, resolved from the registry, with hot reload.

    handle = ModelHandle.from_config(config, "flights@production")   # or a directory / storage URI
    served = handle.current          # ServedModel: name, version, predictor, enricher
    handle.start_watching()          # re-resolves the selector every serving.reload_interval_s

Reload without dropping requests: the new version is loaded and warmed up beside the old one,
then `current` is swapped in one assignment (atomic in CPython). A request takes `handle.current`
once at its start and finishes on that object, so in-flight requests complete on the old
version; the old one is freed when the last of them lets go of it. A version that fails to load
leaves the old one serving, and the failure is counted and logged.

Sources: a registry selector (NAME, NAME@ALIAS, NAME@VERSION) read from the artifact store
without ml-metadata, or a model directory (what KServe's storage initializer mounts at
/mnt/models): a local path, `file://` or an fsspec URI copied to a local cache first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from serving.enrichment import FeatureEnricher
from serving.predictor import Predictor, load_predictor

log = logging.getLogger("mlops.serving")


@dataclass
class ServedModel:
    name: str
    version: str  # registry version number as text, or "dir" for a plain directory
    uri: str
    model_dir: str  # local directory the predictor was loaded from
    predictor: Predictor
    enricher: FeatureEnricher
    manifest: dict = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def _is_dir_source(source: str) -> bool:
    return "/" in source or source.startswith(".") or "://" in source


def local_model_dir(uri: str) -> str:
    """A local directory holding the model files of `uri` (copied from an object store once)."""
    from mlops import storage

    if storage.is_local(uri):
        return storage.local_path(uri)
    fs, path = storage.fs_and_path(uri)
    # Registry versions are immutable, so the URI names the content.
    cache = os.path.join(tempfile.gettempdir(), "mlops-models", hashlib.sha256(uri.encode()).hexdigest()[:16])
    if not os.path.isdir(cache):
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(cache))
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        try:
            os.rename(tmp, cache)
        except OSError:  # another process got there first: same content
            pass
    return cache


class ModelHandle:
    def __init__(self, config, source: str, *, runtime: str | None = None, name: str | None = None,
                 on_swap: Callable[[ServedModel, ServedModel | None], None] | None = None):
        self.config = config
        self.source = source
        self.runtime = runtime or config.serving.runtime
        self.name_override = name
        self.on_swap = on_swap
        self.reload_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time
        self.current: ServedModel = self._load(*self._resolve())
        log.info("serving %s from %s (runtime %s)", self.current.label, self.current.uri, self.runtime)

    @classmethod
    def from_config(cls, config, source: str | None = None, **kw) -> "ModelHandle":
        return cls(config, source or config.serving.model or config.project, **kw)

    # ---- resolution ---------------------------------------------------------------------------
    def _resolve(self) -> tuple[str, str, str, dict]:
        """(name, version, uri, manifest) the source points at now."""
        if _is_dir_source(self.source):
            from mlops import storage
            from mlops.config import join_uri
            from mlops.registry.store import MANIFEST

            manifest_uri = join_uri(self.source, MANIFEST)
            manifest = storage.read_json(manifest_uri) if storage.exists(manifest_uri) else {}
            name = self.name_override or manifest.get("name") or os.path.basename(self.source.rstrip("/")) or "model"
            version = str(manifest.get("version", "dir"))
            return name, version, self.source, manifest
        from mlops.registry.store import ModelRegistry

        mv = ModelRegistry.from_config(self.config).resolve(self.source)
        return self.name_override or mv.name, str(mv.version), mv.uri, mv.manifest

    def _load(self, name: str, version: str, uri: str, manifest: dict) -> ServedModel:
        model_dir = local_model_dir(uri)
        predictor = load_predictor(model_dir, self.runtime, output_key=manifest.get("output_key"))
        # A reload keeps the Feast FeatureStore of the version it replaces (same config): building
        # one takes seconds, which would otherwise stall the first requests on the new version.
        previous = getattr(self, "current", None)
        enricher = FeatureEnricher(self.config, predictor.inputs,
                                   store=previous.enricher._store if previous is not None else None)
        served = ServedModel(name, version, uri, model_dir, predictor, enricher, manifest)
        _warm_up(served)
        return served

    # ---- reload -------------------------------------------------------------------------------
    def reload_if_changed(self) -> bool:
        """Re-resolves the source; loads and swaps in a different version. True if swapped."""
        with self._lock:
            try:
                name, version, uri, manifest = self._resolve()
                if (version, uri) == (self.current.version, self.current.uri):
                    return False
                new = self._load(name, version, uri, manifest)
            except Exception:  # keep serving the old version
                self.reload_failures += 1
                log.exception("reload of %s failed; still serving %s", self.source, self.current.label)
                return False
            old, self.current = self.current, new
            log.info("swapped %s -> %s", old.label, new.label)
            if self.on_swap:
                self.on_swap(new, old)
            return True

    def start_watching(self, interval_s: float | None = None) -> None:
        interval = self.config.serving.reload_interval_s if interval_s is None else interval_s
        if interval <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(interval):
                self.reload_if_changed()

        self._thread = threading.Thread(target=loop, name="model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _warm_up(served: ServedModel) -> None:
    """One prediction on a row of defaults, so the first request does not pay for tracing; and,
    with a feature store, one online read of an unknown entity: the first read builds Feast's
    FeatureStore (measured: ~6 s with the import), which must not happen inside a request."""
    rows = {s.name: (np.array([np.nan], np.float32) if s.dtype == "float32" else np.array([""], object))
            for s in served.predictor.inputs}
    served.predictor.predict(rows)
    enricher = served.enricher
    if enricher.lookup:
        from mlops.features.store import online_features

        online_features(enricher.config, [dict.fromkeys(enricher.lookup_keys, "")], store=enricher.store())
