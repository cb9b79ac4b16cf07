"""StatisticsGen: TFDV statistics of every split of an Examples artifact.

Reads <examples>/<split>.parquet (raw feature encoding, mlops.artifacts) and writes the
Statistics artifact:
    <out>/<split>.stats.pb     binary DatasetFeatureStatisticsList (tfdv.load_stats_binary reads it)
    <out>/statistics.json      rows per split (in the examples / described), sample rate
    <out>/index.html           summary tables + TFDV's Facets view of train vs eval

Statistics are computed in memory with tfdv.generate_statistics_from_dataframe (no Beam: 1.5 s
instead of 20 s on the full flights data); see mlops.validation.statistics for the TFDV details
(NaN and "" count as missing; sampling on the frame). With another `beam.runner` (dask, Dataflow,
...) tfdv.GenerateStatistics computes them on that runner (the same statistics). Plain Python on
paths and config; the KFP interface is component.py.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field

from mlops import artifacts, beam, storage
from mlops.artifacts import SPLITS, STATS_SUFFIX, stats_path
from mlops.config import PlatformConfig, join_uri
from mlops.errors import MlopsError
from mlops.steps import Location, RunContext, StepResult, source_version
from mlops.validation import report
from mlops.validation.statistics import (
    compute_statistics,
    compute_statistics_beam,
    feature_summary,
    read_statistics,
    write_statistics,
)

COMPONENT = "statistics_gen"
CODE_VERSION = source_version("statistics_gen", __name__)
STATS_INDEX = "statistics.json"
HTML_FILE = "index.html"


class StatisticsGenError(MlopsError):
    """Statistics could not be computed or read; the message names the file."""


@dataclass
class StatisticsOutput:
    out_dir: str
    splits: dict[str, int]  # examples described per split (after sampling)
    rows_in: dict[str, int]  # rows per split in the Examples artifact
    sample_rate: float
    content_hash: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def html_path(self) -> str:
        return join_uri(self.out_dir, HTML_FILE)


def generate(config: PlatformConfig, examples_dir: str, out_dir: str, splits=SPLITS) -> StatisticsOutput:
    """Statistics per split; returns what was written (see the module doc for the layout)."""
    rate = config.validation.stats_sample_rate
    storage.makedirs(out_dir)
    described, rows_in, seconds = {}, {}, {}
    digest = hashlib.sha256()
    stats_by_split = {}
    for split in splits:
        t0 = time.perf_counter()
        if beam.is_direct(config.beam):
            df = artifacts.read_split(examples_dir, split)
            stats = compute_statistics(df, config, name=split, sample_rate=rate)
            write_statistics(stats, stats_path(out_dir, split))
            rows_in[split] = int(len(df))
        else:  # a Beam pipeline on config.beam's runner (mlops.beam)
            source = artifacts.split_path(examples_dir, split)
            stats = compute_statistics_beam(source, config, stats_path(out_dir, split), name=split)
            rows_in[split] = artifacts.parquet_rows(source)
        digest.update(split.encode() + stats.SerializeToString())
        stats_by_split[split] = stats
        described[split] = int(stats.datasets[0].num_examples) if stats.datasets else 0
        seconds[split] = round(time.perf_counter() - t0, 3)
        if rate >= 1.0 and described[split] != rows_in[split]:
            raise StatisticsGenError(
                f"split {split!r}: statistics describe {described[split]} of {rows_in[split]} rows"
            )
    out = StatisticsOutput(out_dir, described, rows_in, rate, digest.hexdigest()[:16], seconds)
    storage.write_json_atomic(join_uri(out_dir, STATS_INDEX), asdict(out))
    storage.write_bytes_atomic(out.html_path, statistics_html(stats_by_split, out).encode("utf-8"))
    return out


def load_split_statistics(statistics_dir: str, split: str):
    uri = stats_path(statistics_dir, split)
    if not storage.exists(uri):
        raise StatisticsGenError(f"statistics {statistics_dir}: no {split}{STATS_SUFFIX}")
    return read_statistics(uri)


def statistics_html(stats_by_split: dict, out: StatisticsOutput) -> str:
    sections = [
        report.table(
            ["split", "rows in examples", "rows described", "seconds"],
            [(s, out.rows_in[s], out.splits[s], out.seconds.get(s)) for s in stats_by_split],
            numeric=(1, 2, 3),
        )
    ]
    if out.sample_rate < 1.0:
        sections.append(f'<p class="note">Statistics describe a seeded {out.sample_rate:.0%} sample of each split.</p>')
    summaries = {s: feature_summary(st) for s, st in stats_by_split.items() if st.datasets}
    numeric, categorical = [], []
    names = list(dict.fromkeys(n for summ in summaries.values() for n in summ))
    for name in names:
        for split, summ in summaries.items():
            row = summ.get(name)
            if row is None:
                continue
            if row["kind"] == "numeric":
                numeric.append(
                    (
                        name,
                        split,
                        row["type"],
                        row["present"],
                        f"{row['missing_share']:.2%}",
                        row["mean"],
                        row["std"],
                        row["min"],
                        row["median"],
                        row["max"],
                        row["zeros"],
                    )
                )
            else:
                top = ", ".join(f"{v} ({c})" for v, c in row["top"])
                categorical.append((name, split, row["present"], f"{row['missing_share']:.2%}", row["unique"], top))
    sections.append(
        "<h2>Numeric features</h2>"
        + report.table(
            ["feature", "split", "type", "present", "missing", "mean", "std", "min", "median", "max", "zeros"],
            numeric,
            numeric=(3, 4, 5, 6, 7, 8, 9, 10),
        )
    )
    sections.append(
        "<h2>Categorical features</h2>"
        + report.table(
            ["feature", "split", "present", "missing", "unique", "top values (count)"], categorical, numeric=(2, 3, 4)
        )
    )
    facets = _facets(stats_by_split)
    if facets:
        sections.append(
            '<h2>Facets Overview</h2><p class="note">Interactive view by TFDV; it loads the Facets '
            "web components from the internet (the tables above do not need it).</p>" + facets
        )
    return report.page("Data statistics", sections)


def _facets(stats_by_split: dict) -> str:
    from tensorflow_data_validation.utils.display_util import get_statistics_html

    names = [s for s in ("train", "eval") if s in stats_by_split and stats_by_split[s].datasets] or [
        s for s, st in stats_by_split.items() if st.datasets
    ][:2]
    if not names:
        return ""
    lhs = stats_by_split[names[0]]
    rhs = stats_by_split[names[1]] if len(names) > 1 else None
    return get_statistics_html(lhs, rhs, lhs_name=names[0], rhs_name=names[1] if rhs is not None else "rhs_statistics")


def statistics_ref(out: StatisticsOutput):
    import json

    from mlops.metadata.store import ArtifactRef

    return ArtifactRef(
        "Statistics",
        out.out_dir,
        properties={
            "split": json.dumps(list(out.splits)),
            "row_count": sum(out.splits.values()),
            "content_hash": out.content_hash,
            "sample_rate": out.sample_rate,
        },
    )


def examples_ref(examples_dir: str):
    from mlops.metadata.store import ArtifactRef

    return ArtifactRef("Examples", examples_dir)


def run(
    config: PlatformConfig, examples_dir: str, out_dir: str, *, pipeline: str, run_id: str, splits=SPLITS
) -> StatisticsOutput:
    """generate() + the MLMD record (Examples in, Statistics out) under the run's context."""
    from mlops.steps import record_step

    out = generate(config, examples_dir, out_dir, splits)
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs={"examples": [examples_ref(examples_dir)]},
        outputs={"statistics": [statistics_ref(out)]},
        properties={"code_version": CODE_VERSION},
    )
    return out


def execute(
    config: PlatformConfig, inputs: dict[str, Location], outputs: dict[str, Location], context: RunContext
) -> StepResult:
    """The step contract (mlops.steps): inputs {"examples"}; outputs {"statistics"}."""
    from dataclasses import asdict

    examples, statistics = beam.where(config.beam, inputs["examples"]), beam.where(config.beam, outputs["statistics"])
    out = run(config, examples, statistics, pipeline=context.pipeline, run_id=context.run_id)
    return StepResult(values={**asdict(out), "html_path": out.html_path})
