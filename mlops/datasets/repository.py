"""The dataset repository: immutable, content-addressed dataset versions under the artifact root.

    <artifact_root>/datasets/<name>/versions/<version id>/data.parquet
                                                        /manifest.json   (written last)

A version id is `<name>-<12 hex>` where the hex is a hash of the data (row content, column
names and types) and of the identity fields of the manifest (name, span). Ingesting the same
data again yields the same id and writes nothing. A version exists only once its manifest
exists; on a local file system the whole directory appears by one atomic rename, so a crash or
Ctrl-C never leaves a half version that readers would see.

Spans (`YYYY-MM`) model data arriving month by month; `resolve()` turns "latest", a span, a span
range "2013-01:2013-06" or a version id into concrete versions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops import storage
from mlops.config import SPAN_PATTERN, join_uri
from mlops.errors import InvalidInput, MlopsError, NotFound

MANIFEST = "manifest.json"
DATA_FILE = "data.parquet"
FORMAT_VERSION = 1


class DatasetError(MlopsError):
    """A dataset could not be ingested, stored or read (catch this to mean any dataset problem)."""


class DatasetInputError(DatasetError, InvalidInput):
    """The config, a parameter (span, selector) or the source data is wrong; retrying unchanged fails again."""


class DatasetNotFound(DatasetError, NotFound):
    """A dataset, version, span or source that does not exist."""


@dataclass(frozen=True)
class DatasetVersion:
    id: str
    name: str
    uri: str  # the version directory
    manifest: dict[str, Any]

    @property
    def data_uri(self) -> str:
        return join_uri(self.uri, DATA_FILE)

    @property
    def span(self) -> str | None:
        return self.manifest.get("span")

    @property
    def row_count(self) -> int:
        return int(self.manifest["row_count"])

    @property
    def created_at(self) -> str:
        return self.manifest["created_at"]


def frame_fingerprint(df: pd.DataFrame) -> str:
    """Hash of the row content, column names and dtypes; independent of the parquet encoder."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()


def describe_columns(df: pd.DataFrame) -> list[dict[str, str]]:
    return [{"name": str(c), "dtype": str(t)} for c, t in df.dtypes.items()]


def parse_span_range(selector: str) -> tuple[str, str]:
    lo, _, hi = selector.partition(":")
    for s in (lo, hi):
        if not SPAN_PATTERN.match(s):
            raise DatasetInputError(f"span range {selector!r}: {s!r} is not YYYY-MM")
    if lo > hi:
        raise DatasetInputError(f"span range {selector!r}: start is after end")
    return lo, hi


class DatasetRepository:
    def __init__(self, artifact_root: str):
        self.root = join_uri(artifact_root, "datasets")

    def _versions_dir(self, name: str) -> str:
        return join_uri(self.root, name, "versions")

    # ---- writing -------------------------------------------------------------------------
    def write(
        self,
        name: str,
        df: pd.DataFrame,
        *,
        source: str,
        span: str | None = None,
        event_timestamp: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Stores `df` as a version of dataset `name`. Returns (version, created): created is False
        when the version already existed, also when a concurrent writer published it first."""
        if span is not None and not SPAN_PATTERN.match(span):
            raise DatasetInputError(f"span {span!r} is not YYYY-MM")
        if df.empty:
            raise DatasetInputError(f"dataset {name!r}{' span ' + span if span else ''}: no rows to ingest")
        versions = self._versions_dir(name)
        # Temp dirs of writers killed with -9, swept on every write (also one that finds its version
        # already stored). By age (storage.remove_stale_temps: untouched for an hour), not by lock: a
        # live writer's temp dir is minutes old at most, and object stores have no locks.
        storage.remove_stale_temps(versions)
        df = df.reset_index(drop=True)
        data_hash = frame_fingerprint(df)
        identity = {"name": name, "span": span, "data_sha256": data_hash, "format": FORMAT_VERSION}
        digest = hashlib.sha256(repr(sorted(identity.items())).encode()).hexdigest()
        version_id = f"{name}-{digest[:12]}"
        existing = self.find(version_id)
        if existing is not None:
            return existing, False

        manifest: dict[str, Any] = {
            "id": version_id,
            "name": name,
            "span": span,
            "source": source,
            "row_count": int(len(df)),
            "columns": describe_columns(df),
            "data_sha256": data_hash,
            "content_hash": digest,
            "event_timestamp": event_timestamp,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),  # orders "latest"
            "format_version": FORMAT_VERSION,
            **(extra or {}),
        }
        if event_timestamp:
            ts = df[event_timestamp]
            manifest["time_range"] = [ts.min().isoformat(), ts.max().isoformat()]

        final = join_uri(versions, version_id)
        if storage.is_local(versions):
            # Build the whole version in a hidden temp dir, then one atomic rename publishes it.
            tmp = join_uri(versions, storage.new_temp_name())
            storage.makedirs(tmp)
            try:
                storage.write_parquet_atomic(df, join_uri(tmp, DATA_FILE))
                storage.write_json_atomic(join_uri(tmp, MANIFEST), manifest)
                try:
                    storage.rename(tmp, final)
                except OSError:
                    # A directory cannot be renamed over a non-empty one: a concurrent ingest of the
                    # same data published it first. Its version is the one that exists.
                    published = self.find(version_id)
                    if published is None:
                        raise
                    return published, False
            finally:
                storage.remove(tmp, recursive=True)
        else:
            # Object stores have no directory rename: data first, manifest (the commit point) last.
            storage.write_parquet_atomic(df, join_uri(final, DATA_FILE))
            storage.write_json_atomic(join_uri(final, MANIFEST), manifest)
        return DatasetVersion(version_id, name, final, manifest), True

    # ---- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [n for n in storage.listdir(self.root) if not n.startswith(".")]

    def versions(self, name: str) -> list[DatasetVersion]:
        """Complete versions of a dataset, oldest first."""
        out = []
        base = self._versions_dir(name)
        for vid in storage.listdir(base):
            if vid.startswith("."):
                continue
            uri = join_uri(base, vid)
            manifest_uri = join_uri(uri, MANIFEST)
            if not storage.exists(manifest_uri):
                continue  # incomplete (object store crash mid-write): invisible
            out.append(DatasetVersion(vid, name, uri, storage.read_json(manifest_uri)))
        out.sort(key=lambda v: (v.created_at, v.id))
        return out

    def all_versions(self) -> list[DatasetVersion]:
        return [v for n in self.names() for v in self.versions(n)]

    def find(self, version_id: str) -> DatasetVersion | None:
        name = version_id.rsplit("-", 1)[0]
        uri = join_uri(self._versions_dir(name), version_id)
        manifest_uri = join_uri(uri, MANIFEST)
        if not storage.exists(manifest_uri):
            return None
        return DatasetVersion(version_id, name, uri, storage.read_json(manifest_uri))

    def get(self, version_id: str) -> DatasetVersion:
        v = self.find(version_id)
        if v is None:
            raise DatasetNotFound(f"dataset version {version_id!r} not found under {self.root}")
        return v

    def spans(self, name: str) -> dict[str, DatasetVersion]:
        """span -> its newest version (a re-ingested, corrected span supersedes the old one)."""
        latest: dict[str, DatasetVersion] = {}
        for v in self.versions(name):
            if v.span:
                latest[v.span] = v  # versions() is oldest first
        return dict(sorted(latest.items()))

    def latest(self, name: str) -> DatasetVersion:
        versions = self.versions(name)
        if not versions:
            raise DatasetNotFound(f"dataset {name!r} has no versions under {self.root}; run `mlops data ingest` first")
        return versions[-1]

    def resolve(self, name: str, selector: str = "latest") -> list[DatasetVersion]:
        """Versions selected by: "latest" (the newest full version, else all spans), "all-spans",
        a span "2013-03", a range "2013-01:2013-06", or a version id."""
        if selector == "latest":
            full = [v for v in self.versions(name) if v.span is None]
            if full:
                return [full[-1]]
            spans = self.spans(name)
            if not spans:
                raise DatasetNotFound(
                    f"dataset {name!r} has no versions under {self.root}; run `mlops data ingest` first"
                )
            return list(spans.values())
        if selector == "latest-span":
            spans = self.spans(name)
            if not spans:
                raise DatasetNotFound(f"dataset {name!r} has no spans under {self.root}")
            return [list(spans.values())[-1]]
        if selector == "all-spans":
            spans = list(self.spans(name).values())
            if not spans:
                raise DatasetNotFound(f"dataset {name!r} has no spans under {self.root}")
            return spans
        if SPAN_PATTERN.match(selector):
            spans = self.spans(name)
            if selector not in spans:
                raise DatasetNotFound(
                    f"dataset {name!r}: span {selector} not ingested (have: {', '.join(spans) or 'none'})"
                )
            return [spans[selector]]
        if ":" in selector:
            lo, hi = parse_span_range(selector)
            chosen = [v for s, v in self.spans(name).items() if lo <= s <= hi]
            if not chosen:
                raise DatasetNotFound(f"dataset {name!r}: no span in {selector} under {self.root}")
            return chosen
        version = self.get(selector)
        if version.name != name:
            raise DatasetInputError(f"dataset version {selector!r} belongs to dataset {version.name!r}, not {name!r}")
        return [version]

    def load(self, versions: DatasetVersion | list[DatasetVersion], columns: list[str] | None = None) -> pd.DataFrame:
        if isinstance(versions, DatasetVersion):
            versions = [versions]
        frames = []
        for v in versions:
            fs, path = storage.fs_and_path(v.data_uri)
            with fs.open(path, "rb") as f:
                frames.append(pd.read_parquet(f, columns=columns))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
