"""Extract: raw source -> validated dataset versions in the repository.

`ingest(config, span=...)` reads the configured source (csv/parquet, any fsspec URI or a file
shipped in a Python package), checks that every column the config names exists, applies the row
filter, derives the label, parses the event timestamp as UTC, optionally keeps one month (span)
and stores an immutable version. Feature tables (Feast sources) are ingested alongside.
Errors name the config file, the field and the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from mlops import storage
from mlops.config import EPOCH_UNITS, SPAN_PATTERN, ColumnKind, PlatformConfig, SourceSpec
from mlops.datasets.repository import DatasetInputError, DatasetNotFound, DatasetRepository, DatasetVersion

STATIC_FEATURE_TIMESTAMP = pd.Timestamp("1970-01-01", tz="UTC")
STATIC_TIMESTAMP_COLUMN = "valid_from"


@dataclass
class IngestResult:
    dataset: DatasetVersion
    created: bool
    feature_tables: list[tuple[DatasetVersion, bool]] = field(default_factory=list)


def read_source(source: SourceSpec, where: str) -> pd.DataFrame:
    try:
        uri = storage.resolve_source_uri(source.uri)
    except storage.StorageError as e:
        raise DatasetNotFound(f"{where}.source.uri: {e}") from None
    if not storage.exists(uri):
        raise DatasetNotFound(f"{where}.source.uri: {source.uri} does not exist")
    fs, path = storage.fs_and_path(uri)
    try:
        if source.format == "parquet" and fs.isdir(path):  # a directory of part files
            return pd.read_parquet(path if storage.is_local(uri) else uri)
        with fs.open(path, "rb") as f:
            if source.format == "csv":
                compression = "zip" if path.endswith(".zip") else "infer"
                return pd.read_csv(
                    f, na_values=source.na_values, keep_default_na=False, compression=compression, low_memory=False
                )
            return pd.read_parquet(f)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DatasetInputError(f"{where}.source: cannot read {source.uri} as {source.format}: {e}") from None


def provided_by_feature_store(config: PlatformConfig) -> set[str]:
    """Feature names that come from Feast rather than from the dataset's own source."""
    if config.features is None:
        return set()
    names = {c for t in config.features.tables for c in t.columns}
    for agg in config.features.aggregates:
        names |= set(aggregate_feature_names(agg))
    return names


def aggregate_feature_names(agg) -> list[str]:
    out = []
    for w in agg.windows_days:
        out += [f"{agg.name}_mean_{w}d", f"{agg.name}_count_{w}d"]
        if agg.threshold is not None:
            out.append(f"{agg.name}_share_over_{w}d")
    return out


def _require_columns(df: pd.DataFrame, needed: dict[str, str], where: str, uri: str) -> None:
    missing = {col: fld for col, fld in needed.items() if col not in df.columns}
    if missing:
        detail = ", ".join(f"{col!r} (from {fld})" for col, fld in missing.items())
        raise DatasetInputError(
            f"{where}: source {uri} lacks column(s) {detail}; it has {sorted(map(str, df.columns))}"
        )


def _holds_numbers(series: pd.Series) -> bool:
    """Numbers, or text that is only numbers ("1357000000" read from a csv as strings)."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    if series.dtype == object:
        present = series.dropna()
        return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().all()
    return False


def to_utc(
    series: pd.Series, where: str, timestamp_format: str | None = None, option: str = "event_timestamp_format"
) -> pd.Series:
    """Timestamps as datetime64[ns, UTC]. `timestamp_format` is an epoch unit (epoch_s, ...) or a
    strptime format; without one, numbers are refused rather than guessed (pandas reads them as
    nanoseconds: epoch seconds would become dates in January 1970). `option` names the config
    field that declares the format, for the message."""
    if timestamp_format is None and not pd.api.types.is_datetime64_any_dtype(series) and _holds_numbers(series):
        raise DatasetInputError(
            f"{where}: column {series.name!r} holds numbers ({series.dtype}), not timestamps; declare their unit "
            f"with {option}: {', '.join(EPOCH_UNITS)} (or a strptime format for text)"
        )
    try:
        if timestamp_format in EPOCH_UNITS:
            if not _holds_numbers(series):
                raise ValueError(f"{option} is {timestamp_format} but the values are not numbers ({series.dtype})")
            ts = pd.to_datetime(pd.to_numeric(series), unit=EPOCH_UNITS[timestamp_format], utc=True)
        elif timestamp_format is not None:
            ts = pd.to_datetime(series, format=timestamp_format, utc=True)
        else:
            ts = pd.to_datetime(series, utc=True)
    except (ValueError, TypeError, OverflowError) as e:
        shown = f" with {option} {timestamp_format!r}" if timestamp_format else ""
        raise DatasetInputError(f"{where}: cannot parse column {series.name!r} as timestamps{shown}: {e}") from None
    if ts.isna().any():
        raise DatasetInputError(f"{where}: {int(ts.isna().sum())} row(s) have no timestamp")
    return ts.astype("datetime64[ns, UTC]")


def prepare_dataset(config: PlatformConfig, raw: pd.DataFrame) -> pd.DataFrame:
    """Validates and shapes the main dataset's raw rows (pure: no I/O)."""
    ds = config.dataset
    cfg = config.source_path or "config"
    from_store = provided_by_feature_store(config)
    needed: dict[str, str] = {}
    for f in ds.features:
        if f.name not in from_store:
            needed[f.name] = f"dataset.features.{f.name}"
    for c in ds.passthrough_columns:
        needed[c] = "dataset.passthrough_columns"
    for k in ds.entity_keys:
        needed[k] = "dataset.entity_keys"
    if ds.event_timestamp:
        needed[ds.event_timestamp] = "dataset.event_timestamp"
    if not ds.label.expression:
        needed[ds.label.column] = "dataset.label.column"
    _require_columns(raw, needed, cfg, ds.source.uri)

    df = raw
    if ds.row_filter:
        try:
            df = df.query(ds.row_filter, engine="python")
        except Exception as e:  # pandas raises many types for a bad expression
            raise DatasetInputError(f"{cfg}: dataset.row_filter {ds.row_filter!r} failed: {e}") from None
    if ds.label.expression:
        try:
            label = df.eval(ds.label.expression, engine="python")
        except Exception as e:
            raise DatasetInputError(f"{cfg}: dataset.label.expression {ds.label.expression!r} failed: {e}") from None
        df = df.assign(**{ds.label.column: label})
    if df[ds.label.column].isna().any():
        raise DatasetInputError(
            f"{cfg}: dataset.label.column {ds.label.column!r} has "
            f"{int(df[ds.label.column].isna().sum())} missing value(s) after row_filter"
        )
    if ds.label.task.value == "binary_classification":
        df[ds.label.column] = df[ds.label.column].astype("int64")
    if ds.event_timestamp:
        df = df.assign(
            **{
                ds.event_timestamp: to_utc(
                    df[ds.event_timestamp],
                    f"{cfg}: dataset.event_timestamp",
                    ds.event_timestamp_format,
                    "dataset.event_timestamp_format",
                )
            }
        )
    for f in ds.features:
        if f.kind == ColumnKind.timestamp and f.name in df.columns and f.name != ds.event_timestamp:
            df = df.assign(
                **{
                    f.name: to_utc(
                        df[f.name],
                        f"{cfg}: dataset.features.{f.name}",
                        f.timestamp_format,
                        f"dataset.features.{f.name}.timestamp_format",
                    )
                }
            )
    keep = list(dict.fromkeys([c for c in needed if c in df.columns] + [ds.label.column]))
    return df[keep].reset_index(drop=True)


def prepare_feature_table(table, raw: pd.DataFrame, cfg: str) -> pd.DataFrame:
    where = f"{cfg}: features.tables.{table.name}"
    df = raw.rename(columns=table.rename)
    needed = {k: "entity_keys" for k in table.entity_keys}
    needed.update({c: "columns" for c in table.columns})
    if table.event_timestamp:
        needed[table.event_timestamp] = "event_timestamp"
    _require_columns(df, needed, where, table.source.uri)
    df = df[list(needed)].copy()
    if table.event_timestamp:
        df[table.event_timestamp] = to_utc(
            df[table.event_timestamp],
            f"{where}.event_timestamp",
            table.event_timestamp_format,
            f"features.tables.{table.name}.event_timestamp_format",
        )
    else:
        # Static attributes (e.g. a plane's seats): valid from the epoch, for Feast's time join.
        df[STATIC_TIMESTAMP_COLUMN] = STATIC_FEATURE_TIMESTAMP
    dupes = df.duplicated(subset=table.entity_keys + [table.event_timestamp or STATIC_TIMESTAMP_COLUMN])
    if dupes.any():
        df = df[~dupes]  # duplicate keys would make point-in-time joins ambiguous
    return df.reset_index(drop=True)


def ingest(
    config: PlatformConfig,
    span: str | None = None,
    include_feature_tables: bool = True,
    raw: pd.DataFrame | None = None,
) -> IngestResult:
    ds = config.dataset
    cfg = config.source_path or "config"
    repo = DatasetRepository(config.artifact_root)
    if raw is None:
        raw = read_source(ds.source, f"{cfg}: dataset")
    df = prepare_dataset(config, raw)
    if span is not None:
        if not SPAN_PATTERN.match(span):
            raise DatasetInputError(f"--span {span!r} is not a month (YYYY-MM)")
        if not ds.event_timestamp:
            raise DatasetInputError(f"{cfg}: --span needs dataset.event_timestamp")
        ts = df[ds.event_timestamp].dt
        year, month = map(int, span.split("-"))
        df = df[(ts.year == year) & (ts.month == month)]  # UTC month; strftime is 10x slower
        if df.empty:
            raise DatasetNotFound(f"{cfg}: span {span} has no rows in {ds.source.uri}")
    version, created = repo.write(
        ds.name,
        df,
        source=ds.source.uri,
        span=span,
        event_timestamp=ds.event_timestamp,
        extra={"label": ds.label.column, "config_hash": config.content_hash()},
    )
    result = IngestResult(version, created)
    if include_feature_tables and config.features is not None:
        for table in config.features.tables:
            table_raw = read_source(table.source, f"{cfg}: features.tables.{table.name}")
            tdf = prepare_feature_table(table, table_raw, cfg)
            result.feature_tables.append(
                repo.write(
                    table.name,
                    tdf,
                    source=table.source.uri,
                    event_timestamp=table.event_timestamp or STATIC_TIMESTAMP_COLUMN,
                    extra={"entity_keys": table.entity_keys, "role": "feature_table"},
                )
            )
    return result
