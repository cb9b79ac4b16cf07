"""Writing a synthetic dataset directory: flights part files, weather, planes, the calibration
and a manifest written last."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from mlops import storage
from mlops.config import join_uri
from mlops.datasets.synthetic.calibration import Calibration
from mlops.datasets.synthetic.fitting import default_calibration, load_reference
from mlops.datasets.synthetic.flights import check_generate_arguments, generate
from mlops.datasets.synthetic.schema import CALIBRATION_FORMAT, DEFAULT_CHUNK_ROWS
from mlops.datasets.synthetic.time_grid import local_range, time_range_utc
from mlops.datasets.synthetic.weather import generate_weather


def _progress_bar(enabled: bool | None):
    """A rich progress bar (not started), or None when disabled; enabled=None: when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]synthetic flights"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    return progress


def write_synthetic(
    out_dir_or_uri: str,
    n_rows: int,
    seed: int,
    *,
    calibration: Calibration | None = None,
    start="2013-01-01",
    months: int = 12,
    drift: float = 0.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    planes: pd.DataFrame | None = None,
    progress: bool | None = None,
    on_chunk: Callable[[pd.DataFrame], None] | None = None,
) -> dict[str, Any]:
    """Writes a synthetic nycflights13-shaped dataset:

        <out>/flights/part-00000.parquet ...   flights.csv columns, <= chunk_rows rows each
        <out>/weather.parquet                  weather.csv columns, hourly, same range and seed
        <out>/planes.parquet                   a copy of the real planes.csv (tailnums are real)
        <out>/calibration.json                 the calibration used
        <out>/manifest.json                    parameters, counts, files (written last)

    Bad arguments raise SyntheticError before anything is written. Every file is written
    atomically (temp file + os.replace locally); the manifest is removed first and written last,
    so a directory with a manifest is complete. Part files of an earlier
    run that this run did not write are deleted. A rich progress bar is shown when stderr is a
    terminal (progress=None) or when progress=True. Returns the manifest."""
    t0 = time.perf_counter()
    check_generate_arguments(n_rows, seed, start, months, chunk_rows)  # before anything in `out` changes
    cal = calibration if calibration is not None else default_calibration()
    out = out_dir_or_uri.rstrip("/") if "://" in out_dir_or_uri else os.path.abspath(out_dir_or_uri)
    flights_dir = join_uri(out, "flights")
    storage.makedirs(flights_dir)
    storage.remove(join_uri(out, "manifest.json"))

    written = _write_flight_parts(
        flights_dir,
        generate(cal, n_rows, seed, start=start, months=months, drift=drift, chunk_rows=chunk_rows),
        n_rows,
        progress,
        on_chunk,
    )
    weather = generate_weather(cal, seed, start=start, months=months, drift=drift)
    storage.write_parquet_atomic(weather, join_uri(out, "weather.parquet"))
    if planes is None:
        planes = load_reference(("planes",))["planes"]
    storage.write_parquet_atomic(planes, join_uri(out, "planes.parquet"))
    cal.save(join_uri(out, "calibration.json"))
    first, end = time_range_utc(start, months)
    manifest = {
        "generator": "mlops.datasets.synthetic",
        "format_version": CALIBRATION_FORMAT,
        "seed": int(seed),
        "rows": int(sum(written.values())),
        "start": str(local_range(start, months)[0].date()),
        "months": int(months),
        "drift": float(drift),
        "chunk_rows": int(chunk_rows),
        "time_range_utc": [first.isoformat(), end.isoformat()],
        "flights": [f"flights/{n}" for n in written],
        "weather": {"file": "weather.parquet", "rows": int(len(weather))},
        "planes": {"file": "planes.parquet", "rows": int(len(planes))},
        "calibration": "calibration.json",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    storage.write_json_atomic(join_uri(out, "manifest.json"), manifest)
    return manifest


def _write_flight_parts(
    flights_dir: str, chunks, n_rows: int, progress: bool | None, on_chunk: Callable[[pd.DataFrame], None] | None
) -> dict[str, int]:
    """Writes each chunk as part-NNNNN.parquet, then deletes the part files of an earlier run that
    this one did not write. Returns {part file name: rows} in writing order."""
    written: dict[str, int] = {}
    bar = _progress_bar(progress)
    task = bar.add_task("flights", total=n_rows) if bar else None
    if bar:
        bar.start()
    try:
        for i, chunk in enumerate(chunks):
            name = f"part-{i:05d}.parquet"
            storage.write_parquet_atomic(chunk, join_uri(flights_dir, name))
            written[name] = len(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            if bar:
                bar.update(task, advance=len(chunk))
    finally:
        if bar:
            bar.stop()
    for name in storage.listdir(flights_dir):
        if name.startswith("part-") and name.endswith(".parquet") and name not in written:
            storage.remove(join_uri(flights_dir, name))
    return written
