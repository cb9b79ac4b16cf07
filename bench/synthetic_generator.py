"""Benchmark of the synthetic nycflights13 generator (mlops.datasets.synthetic).

    PYTHONPATH=. python bench/synthetic_generator.py --rows 10000000 --seed 0 --out /tmp/synth

Fits the calibration on the real data, times pure generation (chunks iterated, late shares
accumulated, nothing kept), then, with --out, times write_synthetic (parquet part files, weather,
planes, calibration, manifest). Prints one JSON document: rows, seconds, rows_per_s, peak RSS
(resource.getrusage), and how far the synthetic late share (dep_delay > 15, flown flights) is from
the real one by month and by carrier (max absolute difference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

try:
    from mlops.datasets import synthetic
except ImportError:  # run from a checkout without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mlops.datasets import synthetic


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


class LateShares:
    """Accumulates flown / late counts by month and by carrier over chunks."""

    def __init__(self, carriers: list[str]):
        self.carriers = list(carriers)
        self.code = {c: i for i, c in enumerate(self.carriers)}
        self.month = np.zeros((2, 13))
        self.carrier = np.zeros((2, len(self.carriers)))
        self.rows = 0

    def add(self, df) -> None:
        self.rows += len(df)
        flown = df["dep_delay"].notna().to_numpy()
        late = (df["dep_delay"] > synthetic.LATE_THRESHOLD).to_numpy()
        m = df["month"].to_numpy()
        c = df["carrier"].map(self.code).to_numpy()
        self.month[0] += np.bincount(m[flown], minlength=13)
        self.month[1] += np.bincount(m[late], minlength=13)
        self.carrier[0] += np.bincount(c[flown], minlength=len(self.carriers))
        self.carrier[1] += np.bincount(c[late], minlength=len(self.carriers))

    def by_month(self) -> dict[int, float]:
        return {m: self.month[1, m] / self.month[0, m] for m in range(1, 13) if self.month[0, m] > 0}

    def by_carrier(self) -> dict[str, float]:
        return {
            c: self.carrier[1, i] / self.carrier[0, i] for i, c in enumerate(self.carriers) if self.carrier[0, i] > 0
        }

    def overall(self) -> float:
        return float(self.month[1].sum() / max(self.month[0].sum(), 1))


def compare(synth: dict, real: dict, weights: dict | None = None, min_real: int = 1000) -> dict:
    keys = [k for k in real if k in synth]
    diffs = {k: synth[k] - real[k] for k in keys}
    worst = max(keys, key=lambda k: abs(diffs[k]))
    out = {
        "max_abs_diff": round(abs(diffs[worst]), 4),
        "at": worst,
        "table": {str(k): {"synthetic": round(synth[k], 4), "real": round(real[k], 4)} for k in keys},
    }
    if weights:
        total = sum(weights[k] for k in keys)
        out["flight_weighted_mean_abs_diff"] = round(sum(weights[k] * abs(diffs[k]) for k in keys) / total, 4)
        # a carrier with a few dozen real flights has a late share that is mostly noise
        big = [k for k in keys if weights[k] >= min_real]
        if big:
            worst_big = max(big, key=lambda k: abs(diffs[k]))
            out[f"max_abs_diff_carriers_with_{min_real}+_real_flights"] = round(abs(diffs[worst_big]), 4)
            out[f"at_carriers_with_{min_real}+_real_flights"] = worst_big
        for k in keys:
            out["table"][str(k)]["real_flown_flights"] = int(weights[k])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the dataset here (local dir or fsspec URI) and time it")
    ap.add_argument("--start", default="2013-01-01")
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--drift", type=float, default=0.0)
    ap.add_argument("--chunk-rows", type=int, default=synthetic.DEFAULT_CHUNK_ROWS)
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rich progress bar while writing (default: when stderr is a terminal)",
    )
    args = ap.parse_args(argv)

    t = time.perf_counter()
    ref = synthetic.load_reference(("flights", "weather"))
    cal = synthetic.fit_calibration(ref["flights"], ref["weather"])
    fit_s = time.perf_counter() - t
    rss_after_fit = rss_mb()

    real = LateShares(cal.carriers)
    real.add(ref["flights"])
    real_counts = dict(zip(cal.carriers, real.carrier[0]))
    del ref

    kw = dict(start=args.start, months=args.months, drift=args.drift, chunk_rows=args.chunk_rows)
    shares = LateShares(cal.carriers)
    chunks = 0
    t = time.perf_counter()
    for chunk in synthetic.generate(cal, args.rows, args.seed, **kw):
        shares.add(chunk)
        chunks += 1
    gen_s = time.perf_counter() - t
    assert shares.rows == args.rows, (shares.rows, args.rows)

    result = {
        "rows": args.rows,
        "seed": args.seed,
        "chunks": chunks,
        "chunk_rows": args.chunk_rows,
        "seconds": round(gen_s, 3),
        "rows_per_s": round(args.rows / gen_s) if gen_s > 0 else None,
        "fit_seconds": round(fit_s, 3),
        "rss_mb_after_fit": rss_after_fit,
        "cpu_count": os.cpu_count(),
    }
    if args.out:
        t = time.perf_counter()
        manifest = synthetic.write_synthetic(
            args.out, args.rows, args.seed, calibration=cal, progress=args.progress, **kw
        )
        write_s = time.perf_counter() - t
        files = [os.path.join(args.out, p) for p in manifest["flights"]]
        size = sum(os.path.getsize(p) for p in files if os.path.exists(p))
        result["write"] = {
            "out": args.out,
            "seconds": round(write_s, 3),
            "rows_per_s": round(args.rows / write_s) if write_s > 0 else None,
            "part_files": len(manifest["flights"]),
            "flights_parquet_mb": round(size / 2**20, 1) if size else None,
            "weather_rows": manifest["weather"]["rows"],
        }
    result["peak_rss_mb"] = rss_mb()
    result["late_share"] = {"synthetic": round(shares.overall(), 4), "real": round(real.overall(), 4)}
    if args.months == 12 and args.drift == 0.0:
        result["late_share_by_month"] = compare(shares.by_month(), real.by_month())
        result["late_share_by_carrier"] = compare(shares.by_carrier(), real.by_carrier(), real_counts)
    else:  # drifted or partial ranges are not meant to match the real year
        result["late_share_by_month_synthetic"] = {str(k): round(v, 4) for k, v in shares.by_month().items()}
    print(json.dumps(result, indent=2))
    print(
        f"max |late share diff|: by month {result.get('late_share_by_month', {}).get('max_abs_diff')}, "
        f"by carrier {result.get('late_share_by_carrier', {}).get('max_abs_diff')}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
