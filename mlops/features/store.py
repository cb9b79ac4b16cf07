"""The platform's Feast glue: feature sources from the dataset repository, apply, materialize,
online and historical (point-in-time) retrieval.

Two Feast versions use one feature repo (config.features.repo) and one registry:

* serving image, Feast 0.67: owns every write - `apply` (registry + online tables),
  `materialize` - and the online reads (`online_features`). Feast 0.67 cannot materialize into
  SQLite tables created by 0.48.1, so only this side may create them.
* pipeline image, Feast 0.48.1: only reads the registry, for `historical_features` (the
  point-in-time join that builds the training set).

This module imports in both and uses only API present in both; Feast is imported lazily, so
`build_feature_sources` (pandas only) stays cheap to import.

Layout under the artifact root:

    <artifact_root>/feast/sources.json   source name -> parquet path, timestamp field, dataset
                                          version id, entity keys (read by the repo definitions)
                         /registry.db    Feast file registry
                         /online.db      SQLite online store (features.online_store: sqlite)
                         /applied.json   what the last `apply` applied: the identity of its
                                          inputs and the registry it left (apply_if_changed)

The artifact root may be an object store (s3://, as on a cluster): the registry is then Feast's S3
registry (`registry: s3://.../registry.db`, boto3), the sources are s3:// parquet URIs that Feast's
file offline store reads (dask through s3fs, pyarrow for schemas) at the endpoint in
MLOPS_FEAST_S3_ENDPOINT, sources.json and applied.json are objects beside the registry. Only the
SQLite online store needs a local artifact root (a database file): on a cluster it is Redis. The
S3 endpoint and keys come from the environment as for every other client of the bucket
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; FEAST_S3_ENDPOINT_URL wins for Feast).

Time-series sources carry a UTC-day key column `event_day` ("YYYY-MM-DD") as an extra join key;
callers need not provide it: it is derived from the event/request timestamp (see
`historical_features`, `online_features`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import storage
from mlops.config import ConfigError, FeaturesSpec, PlatformConfig, join_uri
from mlops.datasets.ingest import STATIC_FEATURE_TIMESTAMP, STATIC_TIMESTAMP_COLUMN, provided_by_feature_store
from mlops.datasets.repository import DatasetError, DatasetRepository, DatasetVersion
from mlops.errors import MlopsError
from mlops.features.aggregates import DAY_START, rolling_aggregates
from mlops.timestamps import as_utc

FEAST_DIRNAME = "feast"
SOURCES_FILE = "sources.json"
APPLIED_FILE = "applied.json"
DAY_KEY = "event_day"  # UTC date "YYYY-MM-DD": extra join key of every time-series source
FEAST_SOURCE_SUFFIX = "_feast"  # dataset name of a feature table re-keyed for Feast (+ DAY_KEY)
ENTITY_TIMESTAMP = "event_timestamp"  # Feast's entity dataframe timestamp column
YAML_FILES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}

ENV_PROJECT = "MLOPS_FEAST_PROJECT"
ENV_DIR = "MLOPS_FEAST_DIR"
ENV_SOURCES = "MLOPS_FEAST_SOURCES"
ENV_REDIS_URL = "MLOPS_FEAST_REDIS_URL"
ENV_S3_ENDPOINT = "MLOPS_FEAST_S3_ENDPOINT"  # FileSource.s3_endpoint_override (definitions.py)
# Where S3 clients look for a custom endpoint (MinIO), most specific first: Feast's registry store
# reads FEAST_S3_ENDPOINT_URL, botocore the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL pair.
S3_ENDPOINT_VARS = ("FEAST_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class FeatureStoreError(MlopsError):
    pass


# ---- paths and configuration ---------------------------------------------------------------------
def _features(config: PlatformConfig) -> FeaturesSpec:
    if config.features is None:
        raise ConfigError(f"{config.source_path or 'config'}: no `features:` section (Feast is not configured)")
    return config.features


def feast_dir(config: PlatformConfig) -> str:
    """<artifact_root>/feast: a local path for a local artifact root, else the object-store URI."""
    uri = join_uri(config.artifact_root, FEAST_DIRNAME)
    return storage.local_path(uri) if storage.is_local(uri) else uri.rstrip("/")


def _in_object_store(config: PlatformConfig) -> bool:
    return not storage.is_local(join_uri(config.artifact_root, FEAST_DIRNAME))


def _feast_file(config: PlatformConfig, name: str) -> str:
    return f"{feast_dir(config)}/{name}"


def sources_path(config: PlatformConfig) -> str:
    return _feast_file(config, SOURCES_FILE)


def s3_endpoint() -> str:
    """The custom S3 endpoint (MinIO) from the environment, "" for AWS itself."""
    return next((os.environ[v] for v in S3_ENDPOINT_VARS if os.environ.get(v)), "")


def feast_env(config: PlatformConfig) -> dict[str, str]:
    """The variables that the repo's feature_store*.yaml and definitions.py expand."""
    features = _features(config)
    return {
        ENV_PROJECT: features.project,
        ENV_DIR: feast_dir(config),
        ENV_SOURCES: sources_path(config),
        ENV_REDIS_URL: features.redis_url,
        ENV_S3_ENDPOINT: s3_endpoint() if _in_object_store(config) else "",
    }


def read_sources(config: PlatformConfig) -> dict[str, dict[str, Any]]:
    path = sources_path(config)
    if not storage.exists(path):
        raise FeatureStoreError(f"{path} does not exist: run build_feature_sources(config) first")
    return storage.read_json(path)


def day_keys(ts: pd.Series) -> pd.Series:
    """UTC date "YYYY-MM-DD" of each timestamp (naive timestamps are taken as UTC; NaT -> None)."""
    days = as_utc(ts).dt.floor("D")
    codes, uniques = pd.factorize(days)  # format each distinct day once: strftime is slow
    labels = np.append(np.asarray(pd.DatetimeIndex(uniques).strftime("%Y-%m-%d"), dtype=object), None)
    return pd.Series(labels[codes], index=ts.index, dtype=object)


def day_key(value: Any) -> str:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d")


# ---- sources ------------------------------------------------------------------------------------
def _source_entry(version: DatasetVersion, timestamp_field: str, entity_keys: list[str]) -> dict[str, Any]:
    return {
        # a local path, or the object's URI (s3://...) that Feast's file offline store reads
        "path": storage.local_path(version.data_uri) if storage.is_local(version.data_uri) else version.data_uri,
        "timestamp_field": timestamp_field,
        "version": version.id,
        "entity_keys": list(entity_keys),
    }


def build_feature_sources(config: PlatformConfig) -> dict[str, DatasetVersion]:
    """Materializes every Feast source as an immutable dataset version and writes sources.json.

    * static feature tables (no event timestamp, e.g. planes): the ingested version as is;
    * time-series feature tables (e.g. weather): the ingested version plus the `event_day` key,
      stored as dataset `<table>_feast` (derived_from: the ingested version);
    * rolling aggregates: computed from the main dataset (`resolve(name, "latest")`: the newest
      full version, else the newest version of every span), stored as dataset `<aggregate>`.

    Returns source name (table or aggregate name) -> the version Feast reads. Idempotent: the same
    inputs give the same version ids and rewrite nothing but sources.json.
    """
    features = _features(config)
    cfg = config.source_path or "config"
    repo = DatasetRepository(config.artifact_root)
    names = [t.name for t in features.tables] + [a.name for a in features.aggregates]
    derived = [f"{t.name}{FEAST_SOURCE_SUFFIX}" for t in features.tables if t.event_timestamp]
    clash = sorted(
        {n for n in names + derived if (names + derived).count(n) > 1} | (set(names + derived) & {config.dataset.name})
    )
    if clash:
        raise ConfigError(
            f"{cfg}: features: source names {clash} collide (tables, aggregates, derived "
            f"'<table>{FEAST_SOURCE_SUFFIX}' datasets and the main dataset share one namespace)"
        )

    out: dict[str, DatasetVersion] = {}
    sources: dict[str, dict[str, Any]] = {}
    for table in features.tables:
        ingested = repo.latest(table.name)
        if table.event_timestamp:
            df = repo.load(ingested)
            df[DAY_KEY] = day_keys(df[table.event_timestamp])
            keys = [*table.entity_keys, DAY_KEY]
            version, _ = repo.write(
                f"{table.name}{FEAST_SOURCE_SUFFIX}",
                df,
                source=ingested.uri,
                event_timestamp=table.event_timestamp,
                extra={"derived_from": [ingested.id], "role": "feature_table", "entity_keys": keys},
            )
            sources[table.name] = _source_entry(version, table.event_timestamp, keys)
        else:
            version = ingested
            sources[table.name] = _source_entry(version, STATIC_TIMESTAMP_COLUMN, table.entity_keys)
        out[table.name] = version

    if features.aggregates:
        ts = config.dataset.event_timestamp
        if not ts:
            raise ConfigError(f"{cfg}: features.aggregates need dataset.event_timestamp")
        main = repo.resolve(config.dataset.name, "latest")
        columns = list(dict.fromkeys([c for a in features.aggregates for c in (*a.keys, a.value)] + [ts]))
        df = repo.load(main, columns=columns)
        for spec in features.aggregates:
            agg = rolling_aggregates(df, spec, ts)
            if agg.empty:
                raise DatasetError(f"{cfg}: features.aggregates.{spec.name}: no rows (no events with keys {spec.keys})")
            agg[DAY_KEY] = day_keys(agg[DAY_START])
            keys = [*spec.keys, DAY_KEY]
            version, _ = repo.write(
                spec.name,
                agg,
                source=f"rolling_aggregates({config.dataset.name})",
                event_timestamp=DAY_START,
                extra={
                    "derived_from": [v.id for v in main],
                    "role": "feature_table",
                    "entity_keys": keys,
                    "aggregate": spec.model_dump(mode="json"),
                },
            )
            sources[spec.name] = _source_entry(version, DAY_START, keys)
            out[spec.name] = version

    storage.makedirs(feast_dir(config))
    storage.write_json_atomic(sources_path(config), sources)
    return out


# ---- the store ------------------------------------------------------------------------------------
def feature_store(config: PlatformConfig, online: bool = True):
    """A feast.FeatureStore on config.features.repo, with the YAML of config.features.online_store.

    `online=False` (offline/historical use only) always takes the SQLite YAML: registry and
    offline store are the same in both, and the pipeline image has no Redis client (Feast 0.48.1
    imports it while validating a Redis online store config).

    Sets the MLOPS_FEAST_* variables in os.environ (Feast expands them when it loads the YAML, and
    definitions.py reads MLOPS_FEAST_SOURCES when it is applied)."""
    from feast import FeatureStore

    features = _features(config)
    repo_path = Path(features.repo)
    yaml_file = repo_path / YAML_FILES[features.online_store if online else "sqlite"]
    if not yaml_file.is_file():
        raise FeatureStoreError(f"{yaml_file}: feature store YAML not found (features.repo: {features.repo})")
    if online and features.online_store == "sqlite" and _in_object_store(config):
        raise FeatureStoreError(
            f"features.online_store: sqlite needs a local artifact_root (a database file), not "
            f"{config.artifact_root}: use online_store: redis with an object-store artifact root"
        )
    storage.makedirs(feast_dir(config))
    os.environ.update(feast_env(config))
    _read_uri_sources_as_uris()
    return FeatureStore(repo_path=str(repo_path), fs_yaml_file=yaml_file)


def _read_uri_sources_as_uris() -> None:
    """Feast 0.48.1's file offline store joins every source path to the repo directory unless
    pathlib calls it absolute, which an s3:// URI is not (it then reads
    <repo>/s3:/bucket/...). Its dask reader gets a wrapper that reads a URI as is, with the
    source's S3 endpoint, as later Feast versions do (0.67 resolves it with
    FileSource.get_uri_for_file_path); local paths still take Feast's own code. Installed once,
    and only in the Feast versions with the bug (<= 0.48)."""
    major, minor = (int(p) for p in importlib.metadata.version("feast").split(".")[:2])
    if (major, minor) > (0, 48):
        return
    from feast.infra.offline_stores import dask as dask_store

    if getattr(dask_store, "_mlops_uri_sources", False):
        return
    feast_read = dask_store._read_datasource

    def read_datasource(data_source, repo_path):
        if "://" not in data_source.path:
            return feast_read(data_source, repo_path)
        endpoint = data_source.file_options.s3_endpoint_override
        options = {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else None
        return dask_store.dd.read_parquet(data_source.path, storage_options=options)

    dask_store._read_datasource = read_datasource
    dask_store._mlops_uri_sources = True


def _load_definitions(repo_path: Path) -> list:
    """Executes the repo's Python files afresh (not through the sys.modules cache, so a second
    apply in one process sees the current sources.json) and collects their Feast objects."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    objects: list = []
    files = sorted(p for p in repo_path.glob("*.py") if p.name != "__init__.py" and not p.name.startswith("test_"))
    for i, path in enumerate(files):
        module_name = f"_mlops_feature_repo_{i}_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(module_name, None)
        for value in vars(module).values():
            if isinstance(value, kinds) and not any(value is o for o in objects):
                objects.append(value)
    # Sources built inline in a view are objects too (else apply would delete them as stale).
    names = {(_kind(o), o.name) for o in objects}
    for view in [o for o in objects if isinstance(o, FeatureView)]:
        source = view.batch_source
        if source is not None and ("DataSource", source.name) not in names:
            objects.append(source)
            names.add(("DataSource", source.name))
    return objects


def _registry_objects(store) -> list:
    return [
        *store.list_entities(),
        *store.list_data_sources(),
        *store.list_feature_views(),
        *store.list_on_demand_feature_views(),
        *store.list_feature_services(),
    ]


def _kind(obj) -> str:
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView

    for k in (Entity, FeatureService, OnDemandFeatureView, FeatureView):
        if isinstance(obj, k):
            return k.__name__
    return "DataSource"


def apply(config: PlatformConfig) -> dict[str, list[str]]:
    """Registers the repo's definitions (serving side: Feast 0.67) and creates the online tables.

    Objects of the project that the definitions no longer contain are deleted. Checks that the
    feature service carries every model feature the config expects from the store. Returns
    kind -> names applied, and records it with the identity of the inputs (apply_key) and the
    registry's hash in <feast dir>/applied.json, for apply_if_changed."""
    features = _features(config)
    read_sources(config)  # fail early, with a clear message, when sources.json is missing
    key = apply_key(config)
    store = feature_store(config)
    objects = _load_definitions(Path(features.repo))
    _check_service(config, objects)
    wanted = {(_kind(o), o.name) for o in objects}
    stale = [o for o in _registry_objects(store) if (_kind(o), o.name) not in wanted]
    store.apply(objects, objects_to_delete=stale, partial=False)
    summary: dict[str, list[str]] = {}
    for o in objects:
        summary.setdefault(_kind(o), []).append(o.name)
    state = _store_state(config)
    if state is not None and storage.exists(state[0]):
        storage.write_json_atomic(
            _feast_file(config, APPLIED_FILE),
            {"key": key, "registry_sha256": _sha256(state[0]), "applied": summary},
        )
    return summary


def apply_if_changed(config: PlatformConfig) -> tuple[dict[str, list[str]], bool]:
    """apply(config), unless the last apply had the same inputs (apply_key: config sections,
    Feast version, the repo's files, sources.json) and the registry and online store are still
    as it left them (registry file hash; the SQLite online store file exists): re-applying would
    change nothing. Returns (kind -> names applied, whether apply ran)."""
    read_sources(config)
    record = _current_apply(config)
    if record is not None:
        return record["applied"], False
    return apply(config), True


def _current_apply(config: PlatformConfig) -> dict | None:
    """The applied.json record when it describes the repo, sources and registry as they are now."""
    state = _store_state(config)
    record_path = _feast_file(config, APPLIED_FILE)
    if state is None or not storage.exists(record_path):
        return None
    registry, online = state
    try:
        record = storage.read_json(record_path)
    except (OSError, ValueError):
        return None
    if (
        record.get("key") == apply_key(config)
        and storage.exists(registry)
        and record.get("registry_sha256") == _sha256(registry)
        and (online is None or os.path.exists(online))
    ):
        return record
    return None


def definitions_fingerprint(config: PlatformConfig) -> str:
    """sha256 of every file of the feature repo (definitions, store YAMLs): what the features of a
    training set mean, beside the data they are computed from."""
    repo = Path(_features(config).repo)
    h = hashlib.sha256()
    for path in sorted(p for p in repo.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"\0{path.relative_to(repo).as_posix()}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def apply_key(config: PlatformConfig) -> str:
    """Identity of what apply(config) would write: the config's dataset and features sections
    (the feature service check reads both), the Feast variables, Feast's version, every file of
    the feature repo and the content of sources.json."""
    features = _features(config)
    h = hashlib.sha256(
        json.dumps(
            {
                "dataset": config.dataset.model_dump(mode="json"),
                "features": features.model_dump(mode="json"),
                "env": feast_env(config),
                "feast": importlib.metadata.version("feast"),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    h.update(definitions_fingerprint(config).encode())
    h.update(b"\0sources\0" + storage.read_bytes(sources_path(config)))
    return h.hexdigest()


def _store_state(config: PlatformConfig) -> tuple[str, str | None] | None:
    """(registry file or object URI, SQLite online store file or None for Redis) when the repo's
    YAML puts them where this module can check them (a registry file in the artifact store and a
    local SQLite file or Redis), else None: apply_if_changed then always applies."""
    from string import Template

    import yaml

    features = _features(config)
    yaml_file = Path(features.repo) / YAML_FILES[features.online_store]
    if not yaml_file.is_file():
        return None
    env = feast_env(config)  # Feast expands ${VAR} in the YAML from these

    def expand(value) -> str | None:  # a local path (relative: to the repo, as Feast reads it) or a URI
        if not isinstance(value, str):
            return None
        value = Template(value).safe_substitute(env)
        if "://" in value:
            return value if value.startswith(("s3://", "file://")) else None
        return os.path.normpath(os.path.join(features.repo, value))

    doc = yaml.safe_load(yaml_file.read_text()) or {}
    registry = expand(doc.get("registry"))
    online = doc.get("online_store") or {}
    if registry is None or online.get("type") not in ("sqlite", "redis"):
        return None
    if online["type"] == "redis":
        return registry, None
    path = expand(online.get("path"))
    return (registry, path) if path and storage.is_local(path) else None


def _sha256(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def _check_service(config: PlatformConfig, objects: list) -> None:
    from feast import FeatureService

    name = config.features.feature_service
    services = [o for o in objects if isinstance(o, FeatureService) and o.name == name]
    if not services:
        raise FeatureStoreError(f"{config.features.repo}: no FeatureService named {name!r} (features.feature_service)")
    served = {f.name for p in services[0].feature_view_projections for f in p.features}
    expected = {f.name for f in config.dataset.features} & provided_by_feature_store(config)
    missing = sorted(expected - served)
    if missing:
        raise FeatureStoreError(
            f"{config.features.repo}: FeatureService {name!r} lacks model feature(s) {missing} "
            f"that {config.source_path or 'the config'} expects from the feature store"
        )


def source_time_range(config: PlatformConfig) -> tuple[dt.datetime, dt.datetime]:
    """Earliest and latest event timestamp over all sources (static tables: 1970-01-01)."""
    lo, hi = None, None
    for s in read_sources(config).values():
        ts = as_utc(pd.read_parquet(s["path"], columns=[s["timestamp_field"]])[s["timestamp_field"]])
        if ts.empty:
            continue
        lo = ts.min() if lo is None else min(lo, ts.min())
        hi = ts.max() if hi is None else max(hi, ts.max())
    if lo is None:
        raise FeatureStoreError(f"{sources_path(config)}: the feature sources have no rows")
    return lo.to_pydatetime(), hi.to_pydatetime()


def materialize(
    config: PlatformConfig, start: dt.datetime | None = None, end: dt.datetime | None = None
) -> tuple[dt.datetime, dt.datetime]:
    """Loads the latest row per entity key with event time in [start, end) into the online store
    (serving side). Default: the full time range of the sources, which includes 1970-01-01 for
    static tables. Returns the range used."""
    lo, hi = (None, None) if start is not None and end is not None else source_time_range(config)
    start = start if start is not None else lo
    end = end if end is not None else hi + dt.timedelta(seconds=1)  # the end is exclusive
    current = _current_apply(config) if storage.exists(sources_path(config)) else None
    store = feature_store(config)
    store.materialize(start_date=_aware(start), end_date=_aware(end))
    static = [t.name for t in _features(config).tables if not t.event_timestamp]
    if static and _aware(start) > STATIC_FEATURE_TIMESTAMP.to_pydatetime():
        # Static rows (e.g. planes) are stamped 1970-01-01: a window that starts later would skip
        # them and serve None for every plane feature. They are small: always load them whole.
        views = [
            v.name
            for v in store.list_feature_views()
            if getattr(v.batch_source, "name", "") in {f"{name}_source" for name in static}
        ]
        if views:
            store.materialize(
                start_date=STATIC_FEATURE_TIMESTAMP.to_pydatetime(), end_date=_aware(end), feature_views=views
            )
    if current is not None:
        # Feast records the materialized intervals in the registry; a re-apply would keep them
        # and change nothing, so the apply record stays valid with the registry's new hash.
        storage.write_json_atomic(
            _feast_file(config, APPLIED_FILE),
            {**current, "registry_sha256": _sha256(_store_state(config)[0])},
        )
    return _aware(start), _aware(end)


def _aware(t: dt.datetime) -> dt.datetime:
    t = pd.Timestamp(t)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).to_pydatetime()


def service_features(store, service) -> dict[str, list[str]]:
    """feature view name -> feature names the service (a FeatureService or its name) reads from it."""
    if isinstance(service, str):
        service = store.get_feature_service(service)
    out: dict[str, list[str]] = {}
    for p in service.feature_view_projections:
        out.setdefault(p.name, []).extend(f.name for f in p.features)
    return out


def _request_time_column(config: PlatformConfig, columns: Iterable[str]) -> str | None:
    columns = set(columns)
    for c in (config.dataset.event_timestamp, ENTITY_TIMESTAMP):
        if c and c in columns:
            return c
    return None


# ---- online ----------------------------------------------------------------------------------------
def _online_plan(store, service_name: str):
    """(FeatureService, view -> features, join keys), memoized on the store until its registry
    cache is refreshed: deserializing them costs ~25x the online read itself (Feast 0.67: ~50 ms
    vs ~2 ms), and passing the same FeatureService object lets Feast reuse its request context."""

    # allow_cache: a registry read without it refreshes the registry cache, which would also
    # invalidate Feast's own per-request cache on every call.
    def stamp():
        return service_name, getattr(store.registry, "cached_registry_proto_created", None)

    cached = getattr(store, "_mlops_online_plan", None)
    cache_valid = getattr(store.registry, "is_cache_valid", lambda: True)  # not in Feast 0.48.1
    if cached is not None and cached[0] == stamp() and cache_valid():
        return cached[1]
    service = store.get_feature_service(service_name, allow_cache=True)
    per_view = service_features(store, service)
    join_keys = list(
        dict.fromkeys(k for v in per_view for k in store.get_feature_view(v, allow_registry_cache=True).join_keys)
    )
    plan = (service, per_view, join_keys)
    store._mlops_online_plan = (stamp(), plan)
    return plan


def bound_online_reads(store, timeout_s: float) -> None:
    """Makes the online store's client give up after `timeout_s`, once, on a FeatureStore of the
    model server (batch prediction keeps the defaults: its reads are 65,536 rows each).

    Redis: Feast builds redis-py's client from the connection string, whose defaults are no socket
    timeout (a paused Redis hangs the read for ever) and 3 retries with backoff of seconds (a dead
    one costs each read seconds); so: socket and connect timeouts of `timeout_s`, no retry (the
    caller's circuit breaker decides when to try again). The caller's deadline is what the request
    sees; this bounds how long a hung read holds its thread. SQLite: a lock waits `timeout_s` (busy
    timeout; sqlite3's default is 5 s)."""
    online = store._get_provider().online_store
    kind = getattr(store.config.online_store, "type", "")
    if kind == "redis":
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = online._get_client(store.config.online_store)  # Feast's client, built on first use
        pool = client.connection_pool
        pool.connection_kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        client.set_retry(Retry(NoBackoff(), 0))
        pool.disconnect()  # connections opened before keep their own timeouts: drop them
        pool.reset()
    elif kind == "sqlite":
        conn = online._get_conn(store.config)
        conn.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_s * 1000))}")


def online_features(config: PlatformConfig, entity_rows: list[dict], store=None) -> list[dict]:
    """Features of the configured FeatureService for each entity row (serving side).

    A row holds the join keys (origin, dest, carrier, tailnum for flights) and the request time
    (the dataset's event timestamp column, e.g. time_hour, or `event_timestamp`; the current time
    when absent), from which `event_day` is derived unless given. Unknown keys yield None values.
    Returns one dict per row: its join keys and the features. Pass `store` to reuse a FeatureStore.
    """
    features = _features(config)
    store = store if store is not None else feature_store(config)
    service, per_view, join_keys = _online_plan(store, features.feature_service)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i, row in enumerate(entity_rows):
        r = dict(row)
        if DAY_KEY in join_keys and r.get(DAY_KEY) is None:
            t_col = _request_time_column(config, r)
            r[DAY_KEY] = day_key(r[t_col] if t_col and r[t_col] is not None else now)
        missing = [k for k in join_keys if k not in r]
        if missing:
            raise ValueError(f"entity row {i}: missing join key(s) {missing} (needs {join_keys})")
        # A missing key value matches nothing: send a value no entity has rather than a null key.
        rows.append(
            {k: ("" if r[k] is None or (isinstance(r[k], float) and pd.isna(r[k])) else r[k]) for k in join_keys}
        )
    if not rows:
        return []
    result = store.get_online_features(features=service, entity_rows=rows).to_dict()
    out = []
    for i, row in enumerate(entity_rows):
        item = {k: row.get(k, rows[i][k]) for k in join_keys}
        for names in per_view.values():
            for n in names:
                item[n] = result[n][i]
        out.append(item)
    return out


# ---- historical (point in time) -------------------------------------------------------------
def historical_features(config: PlatformConfig, entity_df: pd.DataFrame, store=None) -> pd.DataFrame:
    """entity_df plus the FeatureService's features, point-in-time correct (pipeline side).

    Each row gets, per feature view, the latest feature row with timestamp <= its event time
    (entity_df's dataset event timestamp column, e.g. time_hour, or `event_timestamp`) and within
    the view's TTL; None/NaN when there is none. Rows keep their count and order.

    Works around Feast 0.48.1's file offline store: it joins each entity row with every feature
    row of the same join key before the TTL filter (memory explodes on low-cardinality keys: hence
    the `event_day` key), drops entity rows sharing (join keys, timestamp) and drops rows without
    a match. So each view is queried once per unique (join keys, timestamp) - per unique key for
    static tables - and the answers are merged back onto the original rows.
    """
    features = _features(config)
    t_col = _request_time_column(config, entity_df.columns)
    if t_col is None:
        raise ValueError(
            f"entity_df needs an event time column: {config.dataset.event_timestamp!r} "
            f"or {ENTITY_TIMESTAMP!r}; it has {list(entity_df.columns)}"
        )
    store = store if store is not None else feature_store(config, online=False)
    per_view = service_features(store, features.feature_service)
    all_features = [n for names in per_view.values() for n in names]
    clash = sorted(
        {n for n in all_features if all_features.count(n) > 1} | (set(all_features) & set(entity_df.columns))
    )
    if clash:
        raise ValueError(f"feature name(s) {clash} appear twice (in two views, or already in entity_df)")

    base = entity_df.reset_index(drop=True)
    n = len(base)
    when = as_utc(base[t_col])
    if when.isna().any():
        raise ValueError(f"entity_df.{t_col}: {int(when.isna().sum())} row(s) have no timestamp")
    out = base.copy()
    days = None  # the UTC-day key, computed once when a view needs it
    for view_name, names in per_view.items():
        view = store.get_feature_view(view_name)
        keys = list(view.join_keys)
        frame = pd.DataFrame(index=base.index)
        for k in keys:
            if k in base.columns:
                frame[k] = base[k]
            elif k == DAY_KEY:
                days = day_keys(when) if days is None else days
                frame[k] = days
            else:
                raise ValueError(f"entity_df lacks join key {k!r} of feature view {view_name!r}")
        frame[ENTITY_TIMESTAMP] = when
        known = frame[keys].notna().all(axis=1)  # a null key matches nothing
        static = view.batch_source.timestamp_field == STATIC_TIMESTAMP_COLUMN
        on = keys if static else [*keys, ENTITY_TIMESTAMP]
        query = frame.loc[known, on].drop_duplicates().reset_index(drop=True)
        if static:  # every row is valid from 1970-01-01: one lookup per key
            query[ENTITY_TIMESTAMP] = when.max()
        if query.empty:
            got = frame.loc[[], on].assign(**{name: np.nan for name in names})
        else:
            job = store.get_historical_features(entity_df=query, features=[f"{view_name}:{f}" for f in names])
            got = job.to_df()
            got[ENTITY_TIMESTAMP] = as_utc(got[ENTITY_TIMESTAMP])
            if len(got) > len(query) or got.duplicated(on).any():
                raise FeatureStoreError(
                    f"feature view {view_name!r}: Feast returned more than one row per entity key and timestamp"
                )
        merged = frame[on].merge(got[on + names], on=on, how="left", validate="many_to_one", sort=False)
        if len(merged) != n:
            raise FeatureStoreError(f"feature view {view_name!r}: {n} entity rows in, {len(merged)} out")
        for name in names:
            out[name] = merged[name].to_numpy()
    assert len(out) == n
    out.index = entity_df.index  # same rows, same order, same labels
    return out


# ---- clean-up ------------------------------------------------------------------------------------
def teardown(config: PlatformConfig) -> None:
    """Deletes this project's online tables/keys and registry entries (serving side).

    Not feast.FeatureStore.teardown(): Feast 0.67's deletes every project of the registry (and
    0.48.1's removes the registry file), while several projects may share one registry."""
    store = feature_store(config)
    store.apply([], objects_to_delete=_registry_objects(store), partial=False)  # drops online tables/keys
    if any(p.name == store.project for p in store.list_projects()):
        store.registry.delete_project(store.project, commit=True)


__all__ = [
    "DAY_KEY",
    "ENTITY_TIMESTAMP",
    "FeatureStoreError",
    "apply",
    "build_feature_sources",
    "day_key",
    "day_keys",
    "feast_dir",
    "feast_env",
    "feature_store",
    "historical_features",
    "materialize",
    "online_features",
    "read_sources",
    "service_features",
    "source_time_range",
    "sources_path",
    "teardown",
]
