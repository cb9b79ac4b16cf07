"""The model a process serves, resolved from the registry, with hot reload.

    handle = ModelHandle.from_config(config, "flights@production")   # or a directory / storage URI
    served = handle.current          # ServedModel: name, version, predictor, enricher
    handle.start_watching()          # re-resolves the selector every serving.reload_interval_s

Reload without dropping requests: the new version is loaded and warmed up beside the old one,
then `current` is swapped in one assignment (atomic in CPython). A request takes `handle.current`
once at its start and finishes on that object, so in-flight requests complete on the old
version; the old one is freed when the last of them lets go of it. A version that fails to load
leaves the old one serving, and the failure is counted and logged in one line (a registry file
being rewritten by hand would otherwise print a traceback every reload interval).

Start-up logs one line per phase (resolving, importing TensorFlow, loading, warming up). Feast's
FeatureStore is built in a background thread from the start, while TensorFlow imports and the model
loads, and the warm-up waits for it (a first request never builds it; readiness still means
"Feast is warm"). Feast is imported without typeguard's instrumentation (see _without_typeguard).

Sources: a registry selector (NAME, NAME@ALIAS, NAME@VERSION) read from the artifact store
without ml-metadata, or a model directory (what KServe's storage initializer mounts at
/mnt/models): a local path, `file://` or an fsspec URI copied to a local cache first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from mlops.errors import MlopsError
from serving.enrichment import FeatureEnricher
from serving.predictor import Predictor, load_predictor

log = logging.getLogger("mlops.serving")

# Optional imports TensorFlow 2.16-2.21 make at import time, each inside `try: ... except
# ImportError`, which a model called by its serving signature never uses: see tensorflow_without_unused_imports.
_TF_OPTIONAL_IMPORTS = (
    "keras.src.optimizers",  # Keras 3's optimizers, for reviving them from a SavedModel
    "tf_keras.src.optimizers",  # the same under TF_USE_LEGACY_KERAS
    "googleapiclient",  # the GCE and Cloud TPU cluster resolvers
)


@contextlib.contextmanager
def tensorflow_without_unused_imports():
    """While TensorFlow is imported (by the model handle, once per process), the optional imports
    it makes for things the model server and batch inference never use (_TF_OPTIONAL_IMPORTS) are
    skipped.

    TensorFlow's __init__ imports Keras's optimizers, only so that a SavedModel holding a Keras
    optimizer revives it as a Keras object rather than a plain one; that pulls all of Keras 3 and
    with it matplotlib, scikit-learn, scipy.stats and IPython. Its distribute package imports
    googleapiclient for the GCE cluster resolver, and google.api_core then scans every installed
    distribution's metadata. Together half of the import's CPU time (measured, TF 2.16: 4.4 s ->
    2.2 s), the largest part of a short `mlops predict batch` and of a server's cold start; both
    call the model's serving signature only. Each is skipped by the import system's own switch (a None in
    sys.modules makes that one import raise ModuleNotFoundError, which TensorFlow catches), and
    the switches are removed on the way out: `tf.keras`, `import keras` and `import
    googleapiclient` load as usual afterwards. Predictions are the same (tested). Nothing is
    skipped in a process that imported TensorFlow before (a test process)."""
    if "tensorflow" in sys.modules:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as serving.predictor: no start-up INFO lines
    skipped = [name for name in _TF_OPTIONAL_IMPORTS if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in skipped:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


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
    def __init__(
        self,
        config,
        source: str,
        *,
        runtime: str | None = None,
        name: str | None = None,
        on_swap: Callable[[ServedModel, ServedModel | None], None] | None = None,
    ):
        self.config = config
        self.source = source
        self.runtime = runtime or config.serving.runtime
        self.name_override = name
        self.on_swap = on_swap
        self.reload_failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time
        self._feast = _build_feature_store_in_background(config)
        log.info("resolving %s", source)
        self.current: ServedModel = self._load(*self._resolve())
        log.info("serving %s from %s (runtime %s)", self.current.label, self.current.uri, self.runtime)

    @classmethod
    def from_config(cls, config, source: str | None = None, **kw) -> ModelHandle:
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
        if self.runtime != "tflite" and "tensorflow" not in sys.modules:
            log.info("importing TensorFlow")
            started = time.perf_counter()
            # without Keras 3 and the GCE resolver's imports (the model is called by its serving
            # signature only): about half of the import's CPU time, the largest part of a cold start
            with tensorflow_without_unused_imports():
                import tensorflow  # noqa: F401

            log.info("imported TensorFlow in %.1f s", time.perf_counter() - started)
        log.info("loading %s@%s from %s (runtime %s)", name, version, uri, self.runtime)
        started = time.perf_counter()
        predictor = load_predictor(model_dir, self.runtime, output_key=manifest.get("output_key"))
        log.info("loaded %s@%s in %.1f s", name, version, time.perf_counter() - started)
        # A reload keeps the Feast FeatureStore of the version it replaces (same config): building
        # one takes seconds, which would otherwise stall the first requests on the new version.
        previous = getattr(self, "current", None)
        enricher = FeatureEnricher(
            self.config, predictor.inputs, store=previous.enricher._store if previous is not None else None
        )
        if enricher.lookup and previous is None and self._feast is not None:
            if not self._feast.done():
                log.info("waiting for the Feast FeatureStore (built in the background)")
            enricher = FeatureEnricher(self.config, predictor.inputs, store=self._feast.result())
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
            except Exception as e:  # keep serving the old version
                self.reload_failures += 1
                reason = str(e) if isinstance(e, MlopsError) else f"{type(e).__name__}: {e}"
                log.warning(
                    "reload of %s failed (%d so far): %s; still serving %s",
                    self.source,
                    self.reload_failures,
                    reason,
                    self.current.label,
                )
                log.debug("reload failure", exc_info=True)
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


def _build_feature_store_in_background(config) -> Future | None:
    """Feast's FeatureStore for `config` (import included, ~5-10 s), built in a thread while the
    model loads; None when the config has no feature lookup. (Whether the model reads any store
    feature is known only once it is loaded: if not, the thread was wasted, not waited for.)"""
    if config.features is None or not config.serving.feature_lookup:
        return None
    future: Future = Future()

    def build():
        from mlops.features.store import bound_online_reads, feature_store

        started = time.perf_counter()
        try:
            with _without_typeguard():  # Feast and the online store module it imports for the config
                store = feature_store(config)
            bound_online_reads(store, config.serving.feature_store.timeout_ms / 1000)
        except BaseException as e:  # noqa: BLE001 - re-raised by the load that waits for it
            future.set_exception(e)
            return
        log.info("built the Feast FeatureStore in %.1f s (in the background)", time.perf_counter() - started)
        _first_online_read(config, store)
        future.set_result(store)

    threading.Thread(target=build, name="feast-store", daemon=True).start()
    return future


def _first_online_read(config, store) -> None:
    """The first online read plans the feature service and opens the online store (~0.5 s): done
    here, while TensorFlow imports, so _warm_up's read after the model load is quick. A failure
    is left for _warm_up to report (it reads again)."""
    from mlops.features.store import online_features

    keys = [k for k in config.dataset.entity_keys if k != config.dataset.event_timestamp]
    try:
        online_features(config, [dict.fromkeys(keys, "")], store=store)
    except Exception:  # noqa: BLE001 - _warm_up reads again and says what is wrong
        log.debug("background warm-up read failed", exc_info=True)


@contextlib.contextmanager
def _without_typeguard():
    """Modules imported meanwhile (Feast's) get typeguard's @typechecked as a no-op: that decorator
    re-parses and recompiles each class's source at import, ~90% of Feast's import time (measured,
    Feast 0.67, `import feast`: 5.7-6.4 s vs 0.5-0.7 s). What it adds is argument type checks on
    Feast's API, which the server calls with the registry's own objects only. (typeguard's own off
    switch is `python -O`, which would drop every assert too.)"""
    import typeguard

    def unchecked(target=None, **_options):
        return target if target is not None else unchecked

    checked, typeguard.typechecked = typeguard.typechecked, unchecked
    try:
        yield
    finally:
        typeguard.typechecked = checked


def _warm_up(served: ServedModel) -> None:
    """One prediction on a row of defaults, so the first request does not pay for tracing; and,
    with a feature store, one online read of an unknown entity (the first read plans the feature
    service and opens the online store), which must not happen inside a request."""
    rows = {
        s.name: (np.array([np.nan], np.float32) if s.dtype == "float32" else np.array([""], object))
        for s in served.predictor.inputs
    }
    served.predictor.predict(rows)
    enricher = served.enricher
    if enricher.lookup:
        from mlops.features.store import online_features

        log.info("warming up the Feast online read")
        started = time.perf_counter()
        try:
            online_features(enricher.config, [dict.fromkeys(enricher.lookup_keys, "")], store=enricher.store())
        except MlopsError:  # the feature repo itself is wrong: the server cannot serve
            raise
        except Exception as e:  # noqa: BLE001 - the store is down: requests get serving.feature_store.on_failure
            log.warning(
                "the Feast online store did not answer the warm-up read (%s); serving with on_failure=%s",
                type(e).__name__,
                enricher.config.serving.feature_store.on_failure,
            )
            return
        log.info("warmed up the Feast online read in %.2f s", time.perf_counter() - started)
