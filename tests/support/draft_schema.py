"""Draft a schema from the real data, as the starting point of a curated one.

    .venv/pipeline/bin/python -m tests.support.draft_schema [--config configs/flights.yaml] OUT.pbtxt

Infers a schema (tfdv.infer_schema, plus the platform conventions: environments, comparators)
from the WHOLE configured dataset with every configured feature, the Feast-provided ones joined
with pandas (tests.support.reference_data): what SchemaGen would infer from a train split,
but from all spans at once. The curated configs/schemas/flights.schema.pbtxt was drafted this way
and then reviewed by hand (domains relaxed or fixed, presence thresholds, value ranges,
per-feature comparator overrides, comments); diff a fresh draft against it to review changes of
the data. Needs no artifact store: MLOPS_ARTIFACT_ROOT defaults to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def draft(config_path: str, out: str) -> str:
    os.environ.setdefault("MLOPS_ARTIFACT_ROOT", tempfile.mkdtemp(prefix="mlops-draft-"))
    from components.schema_gen.executor import infer
    from mlops.config import load_config
    from mlops.validation.schema import apply_comparators, ensure_environments, write_schema
    from mlops.validation.statistics import compute_statistics
    from tests.support.reference_data import flights_frame

    config = load_config(config_path)
    t0 = time.perf_counter()
    frame = flights_frame(config)
    stats = compute_statistics(frame, config, "all", sample_rate=1.0)
    schema = infer(stats)
    ensure_environments(schema, config.dataset.label.column)
    apply_comparators(schema, config)
    write_schema(
        schema,
        out,
        header=f"DRAFT inferred from all {len(frame)} rows of {config.dataset.source.uri} "
        f"(+ feature tables) by tests.support.draft_schema. Not reviewed.",
    )
    print(f"wrote {out} from {len(frame)} rows in {time.perf_counter() - t0:.1f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--config", default="configs/flights.yaml")
    args = parser.parse_args()
    draft(args.config, args.out)


if __name__ == "__main__":
    main()
