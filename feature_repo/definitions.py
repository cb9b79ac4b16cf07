"""Feast definitions of the flights project (dataset specific; the rest of the platform is not).

The sources are the dataset versions that `mlops.features.store.build_feature_sources` wrote:
it records them in sources.json (path of the immutable parquet file, its timestamp column,
the dataset version id and the entity keys), whose path arrives in MLOPS_FEAST_SOURCES. The
version id is attached to each source and feature view as a tag, so the registry records
exactly which data every view was built from (lineage).

Time-series sources (weather, rolling aggregates) carry a UTC-day key `event_day`
("YYYY-MM-DD") next to their natural keys: the file offline store of Feast 0.48.1 joins every
entity row with every feature row of the same key before applying the TTL, which explodes for
low-cardinality keys such as 3 airports. Online requests pass the day of the request time.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import fsspec
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

_SOURCES_ENV = "MLOPS_FEAST_SOURCES"
if not os.environ.get(_SOURCES_ENV):
    raise RuntimeError(f"{_SOURCES_ENV} is not set: apply this repo through mlops.features.store.apply(config)")
with fsspec.open(os.environ[_SOURCES_ENV]) as _f:  # a local file, or an object beside an s3:// registry
    SOURCES: dict = json.load(_f)
# The S3 endpoint (MinIO) of s3:// sources: Feast's readers (pyarrow, dask) take it per source.
_S3_ENDPOINT = os.environ.get("MLOPS_FEAST_S3_ENDPOINT") or None

# ---- entities (one join key each; a route is origin + dest) ---------------------------------
origin = Entity(
    name="origin", join_keys=["origin"], value_type=ValueType.STRING, description="Departure airport (FAA code)"
)
dest = Entity(
    name="dest", join_keys=["dest"], value_type=ValueType.STRING, description="Destination airport (FAA code)"
)
event_day = Entity(
    name="event_day",
    join_keys=["event_day"],
    value_type=ValueType.STRING,
    description="UTC date of the event, YYYY-MM-DD (partitions time-series lookups)",
)
tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING, description="Plane tail number")
carrier = Entity(
    name="carrier", join_keys=["carrier"], value_type=ValueType.STRING, description="Two-letter airline code"
)
_ENTITIES = {e.join_key: e for e in (origin, dest, event_day, tailnum, carrier)}


def _source(name: str) -> FileSource:
    s = SOURCES[name]
    return FileSource(
        name=f"{name}_source",
        path=s["path"],
        timestamp_field=s["timestamp_field"],
        s3_endpoint_override=_S3_ENDPOINT,
        description=f"dataset version {s['version']}",
        tags={"dataset_version": s["version"]},
    )


def _keys(name: str) -> tuple[list[Entity], list[Field]]:
    keys = SOURCES[name]["entity_keys"]
    return [_ENTITIES[k] for k in keys], [Field(name=k, dtype=String) for k in keys]


def _view(name: str, source: str, ttl: timedelta, features: list[Field], description: str) -> FeatureView:
    entities, key_fields = _keys(source)
    return FeatureView(
        name=name,
        entities=entities,
        ttl=ttl,
        schema=key_fields + features,
        source=_source(source),
        online=True,
        description=description,
        tags={"dataset_version": SOURCES[source]["version"], "source": source},
    )


def _aggregate_fields(name: str, windows: list[int]) -> list[Field]:
    fields = []
    for w in windows:
        fields += [
            Field(name=f"{name}_mean_{w}d", dtype=Float64),
            Field(name=f"{name}_count_{w}d", dtype=Int64),
            Field(name=f"{name}_share_over_{w}d", dtype=Float64),
        ]
    return fields


# ---- feature views ---------------------------------------------------------------------------
weather_hourly = _view(
    "weather_hourly",
    "weather",
    timedelta(hours=2),
    [
        Field(name=c, dtype=Float64)
        for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
    ],
    "Hourly weather at the departure airport; an hour without a report takes the last one up to 2 h old",
)

plane_attributes = _view(
    "plane_attributes",
    "planes",
    timedelta(0),  # static (valid from 1970-01-01): no expiry
    [
        Field(name="plane_year", dtype=Float64),
        Field(name="seats", dtype=Int64),
        Field(name="engines", dtype=Int64),
        Field(name="type", dtype=String),
        Field(name="manufacturer", dtype=String),
        Field(name="model", dtype=String),
    ],
    "Plane attributes from the FAA registry",
)

route_delay_stats = _view(
    "route_delay_stats",
    "route_delay",
    timedelta(days=1),
    _aggregate_fields("route_delay", [7, 28]),
    "Departure delay statistics of the route (origin, dest) over the 7/28 days before the day",
)

carrier_delay_stats = _view(
    "carrier_delay_stats",
    "carrier_delay",
    timedelta(days=1),
    _aggregate_fields("carrier_delay", [7, 28]),
    "Departure delay statistics of the carrier over the 7/28 days before the day",
)

# ---- what the model reads (configs/flights.yaml: dataset.features served by Feast) ------------
flight_delay_model = FeatureService(
    name="flight_delay_model",
    features=[
        weather_hourly[["temp", "humid", "wind_speed", "precip", "pressure", "visib"]],
        plane_attributes[["plane_year", "seats", "engines"]],
        route_delay_stats[["route_delay_mean_7d", "route_delay_share_over_28d"]],
        carrier_delay_stats[["carrier_delay_mean_7d", "carrier_delay_share_over_28d"]],
    ],
    description="Features of the flight departure delay model",
)
