"""What every pipeline step does around its work: load the config it was given, and record its
execution with inputs and outputs in ML Metadata under the run's context.

KFP components call these from their (tiny) function bodies; the same functions serve a plain
Python caller, so a step's implementation never depends on KFP.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.config import ConfigError, PlatformConfig, load_config
from mlops.envs import REPO_ROOT

# ---------------------------------------------------------------------------------------------
# The one executor contract. Every step's executor module exposes
#
#     execute(config, inputs, outputs, context, **params) -> StepResult
#
# inputs / outputs: artifact name -> Location (the path this process reads or writes, and the
# URI that identifies the artifact in the store and in ML Metadata: under KFP the path is the
# mount of the URI); context: the run the step belongs to; params: the step's own parameters
# (plain JSON values). A component body only maps KFP's parameters and artifacts to this call and
# the result back to KFP metadata; the CLI and tests call the same function without KFP. Errors
# are mlops.errors.MlopsError subclasses, mapped to exit codes once (cli/) and, under KFP, shown
# as the step's last log line.


@dataclass(frozen=True)
class Location:
    """Where an artifact is: `path` for this process's file I/O, `uri` for its identity."""

    path: str
    uri: str = ""

    def __post_init__(self):
        if not self.uri:
            object.__setattr__(self, "uri", self.path)


@dataclass(frozen=True)
class RunContext:
    """The pipeline run a step execution belongs to (its ML Metadata context) and whether the step
    cache may serve it."""

    pipeline: str
    run_id: str
    enable_cache: bool = True


@dataclass
class StepResult:
    """What a step reports: JSON-able values (counts, metrics, blessing, ...) and whether the step
    cache served it. `values` is what a component logs as KFP metadata."""

    values: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def load_step_config(config_path: str, overrides_json: str = "", artifact_root: str = "") -> PlatformConfig:
    """Config as a KFP step receives it: a path (relative to the project root, which is the
    image's install dir in a container), JSON overrides from pipeline parameters, and an
    optional artifact root (e.g. s3://bucket/mlops on a cluster)."""
    path = Path(config_path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    overrides: dict[str, Any] = json.loads(overrides_json) if overrides_json else {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"config overrides must be a JSON object of dotted keys, got {overrides_json!r}")
    if artifact_root:
        overrides["artifact_root"] = artifact_root
    return load_config(path, overrides=overrides)


def git_commit() -> str:
    """The code version: $MLOPS_GIT_COMMIT (baked into images), else the checkout's HEAD."""
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return os.environ["MLOPS_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def record_step(
    config: PlatformConfig,
    *,
    pipeline: str,
    run_id: str,
    component: str,
    inputs: dict | None = None,
    outputs: dict | None = None,
    properties: dict | None = None,
    state: str = "COMPLETE",
):
    """Records one step execution in MLMD (idempotent per run and component)."""
    from mlops.metadata.store import open_store

    store = open_store(config)
    run = store.run_context(pipeline, run_id, {"config_hash": config.content_hash(), "git_commit": git_commit()})
    return store.record_execution(
        run,
        component,
        inputs or {},
        outputs or {},
        properties={"config_hash": config.content_hash(), "git_commit": git_commit(), **(properties or {})},
        state=state,
    )


# ---------------------------------------------------------------------------------------------
# Step cache: a re-run with unchanged inputs skips the step and reuses its outputs.
#
# Key = component + its code version + the config sections it reads + the fingerprints of its
# input artifacts + its parameters. Every output directory gets a `_fingerprint` file derived
# from the key, so a downstream key changes exactly when something upstream changed. kfp.local
# has no cache of its own and a cluster's KFP cache keys on the pipeline spec, not on data:
# this one keys on content, and it works the same under both.

FINGERPRINT_FILE = "_fingerprint"
RESULT_FILE = "result.json"


def fingerprint_of(artifact_dir: str) -> str:
    from mlops import storage

    marker = f"{artifact_dir.rstrip('/')}/{FINGERPRINT_FILE}"
    if storage.exists(marker):
        return storage.read_bytes(marker).decode().strip()
    # Not produced by a platform step (e.g. a file the user passed): hash what is there.
    return storage.tree_hash(artifact_dir)


# Top-level packages of this project: a step's code version follows imports into these only
# (third-party code is pinned by the image's lock file, which is part of the image, not the key).
PROJECT_PACKAGES = ("mlops", "components", "serving", "pipelines")


def _module_file(module: str) -> str | None:
    spec = _spec_without_importing(module)
    return spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _spec_without_importing(module: str):
    """The module's spec, found without running any module: importlib.util.find_spec("a.b.c")
    imports a.b, so for `from mlops.dask_runner import DaskRunner` it ran mlops.dask_runner and
    Apache Beam with it (seconds at each import of an executor that computes its code version).
    None when a parent is a module, not a package (`from pkg.mod import name`: name is an
    attribute)."""
    import importlib.util
    from importlib.machinery import PathFinder

    parent, _, _ = module.rpartition(".")
    if not parent:
        try:
            return importlib.util.find_spec(module)  # a top-level name: nothing is imported
        except (ImportError, ValueError):
            return None
    parent_spec = _spec_without_importing(parent)
    if parent_spec is None or not parent_spec.submodule_search_locations:
        return None
    return PathFinder.find_spec(module, list(parent_spec.submodule_search_locations))


def _imported_modules(path: str, module: str) -> set[str]:
    """Project modules named by any import statement of a source file (module level or inside
    functions, where this project imports its heavy dependencies lazily)."""
    import ast

    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from pkg import name`: name may be a submodule (a file) or an attribute of pkg.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in PROJECT_PACKAGES:
                continue
            parts = name.split(".")
            # The package __init__ files on the way run too, and belong to the code version.
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def import_closure(*entry_modules: str) -> dict[str, str]:
    """module -> source file of every project module the entry modules import, transitively."""
    seen: dict[str, str] = {}
    todo = list(entry_modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_file(module)
        if path is None:
            if module in entry_modules:
                raise ImportError(f"source_version: module {module} not found")
            continue  # an attribute imported from a package, not a module
        seen[module] = path
        todo.extend(_imported_modules(path, module) - seen.keys())
    return seen


def source_version(name: str, *entry_modules: str) -> str:
    """A step's code version for the step cache: its name and a hash of the source of every
    project module its entry modules import, transitively (the import graph, read from the source
    without importing it), so an edited helper two imports away is a cache miss. Entry modules are
    the executor and any module it runs by name in a child process (a TF worker)."""
    import hashlib

    digest = hashlib.sha256()
    for module, path in sorted(import_closure(*entry_modules).items()):
        with open(path, "rb") as f:
            digest.update(module.encode() + b"\0" + f.read() + b"\0")
    return f"{name}/{digest.hexdigest()[:12]}"


def cache_key(
    component: str,
    code_version: str,
    config: PlatformConfig,
    sections: list[str],
    inputs: dict[str, str],
    params: dict | None = None,
) -> str:
    import hashlib

    body = {
        "component": component,
        "code_version": code_version,
        "config": config.model_dump(mode="json", include=set(sections)),
        "inputs": {name: fingerprint_of(d) for name, d in sorted(inputs.items()) if d},
        "params": params or {},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _copy_tree(src: str, dst: str) -> None:
    """Hard-links files where possible (instant, no extra space), copies otherwise."""
    import shutil

    from mlops import storage

    if storage.is_local(src) and storage.is_local(dst):
        src_p, dst_p = storage.local_path(src), storage.local_path(dst)
        if os.path.isdir(dst_p):
            shutil.rmtree(dst_p)

        def link(s, d):
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)

        shutil.copytree(src_p, dst_p, copy_function=link)
    else:
        storage.copy_tree(src, dst)  # across file systems too (a local output into an s3:// cache)


class StepCache:
    def __init__(self, config: PlatformConfig):
        from mlops.config import join_uri

        self.root = join_uri(config.artifact_root, "cache")

    def _entry(self, component: str, key: str) -> str:
        return f"{self.root}/{component}/{key}"

    def restore(self, component: str, key: str, outputs: dict[str, str]) -> dict | None:
        """Fills `outputs` from a cached run; returns that run's result, or None on a miss."""
        from mlops import storage

        entry = self._entry(component, key)
        result_uri = f"{entry}/{RESULT_FILE}"
        if not storage.exists(result_uri):  # written last: a half-stored entry is a miss
            return None
        for name, out_dir in outputs.items():
            _copy_tree(f"{entry}/{name}", out_dir)
        return storage.read_json(result_uri)

    def store(self, component: str, key: str, outputs: dict[str, str], result: dict) -> None:
        """Stores a run's outputs under its key. Atomic: the entry is built in a private staging
        directory and renamed into place, so two identical runs storing at once (or a reader
        restoring meanwhile) never see a mix; the first complete entry wins, later ones are dropped."""
        import uuid

        from mlops import storage

        entry = self._entry(component, key)
        storage.remove_stale_temps(f"{self.root}/{component}")  # staging dirs of killed runs
        if storage.exists(f"{entry}/{RESULT_FILE}"):
            return  # an identical run stored it first: same key, same content
        staging = f"{self.root}/{component}/.tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            for name, out_dir in outputs.items():
                _copy_tree(out_dir, f"{staging}/{name}")
            storage.write_json_atomic(f"{staging}/{RESULT_FILE}", result)
            if storage.is_local(entry):
                try:
                    # rename(2) of a directory fails when the target exists and is not empty.
                    os.rename(storage.local_path(staging), storage.local_path(entry))
                except OSError:
                    if not storage.exists(f"{entry}/{RESULT_FILE}"):
                        # A half-stored entry left by a killed run of older code: replace it.
                        storage.remove(entry, recursive=True)
                        os.rename(storage.local_path(staging), storage.local_path(entry))
            else:
                # Object stores have no directory rename: copy, RESULT_FILE last (readers key on it).
                for name in outputs:
                    _copy_tree(f"{staging}/{name}", f"{entry}/{name}")
                storage.write_json_atomic(f"{entry}/{RESULT_FILE}", result)
        finally:
            storage.remove(staging, recursive=True)


def run_cached(
    config: PlatformConfig,
    component: str,
    code_version: str,
    *,
    sections: list[str],
    inputs: dict[str, str],
    outputs: dict[str, str],
    params: dict | None,
    work,
    enabled: bool = True,
    log=print,
) -> tuple[dict, bool]:
    """Runs `work()` (which fills the `outputs` dirs and returns a JSON-able dict) unless a run
    with the same key is cached. Returns (result, was_cached)."""
    from mlops import storage

    key = cache_key(component, code_version, config, sections, inputs, params)
    cache = StepCache(config)
    if enabled:
        cached = cache.restore(component, key, outputs)
        if cached is not None:
            log(f"[cache hit] {component}: inputs, config and code unchanged (key {key[:12]}); reused outputs")
            old_outputs = cached.pop(_OUTPUTS_KEY, {})
            return _rebase(cached, {old_outputs[n]: outputs[n] for n in outputs if n in old_outputs}), True
    for out_dir in outputs.values():
        storage.makedirs(out_dir)
    result = work()
    for name, out_dir in outputs.items():
        storage.write_bytes_atomic(f"{out_dir.rstrip('/')}/{FINGERPRINT_FILE}", f"{key}:{name}\n".encode())
    if enabled:
        cache.store(component, key, outputs, {**result, _OUTPUTS_KEY: outputs})
    return result, False


_OUTPUTS_KEY = "__output_dirs__"


def _rebase(value, moves: dict[str, str]):
    """Rewrites paths inside a cached result from the cached run's output dirs to this run's."""
    if isinstance(value, str):
        for old, new in moves.items():
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return new + value[len(old) :]
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, moves) for v in value]
    return value
