"""A monitoring window accumulated chunk by chunk: a run holds one chunk of payload-log rows plus
what each computation keeps, never the window, so its memory does not grow with the window.

What each computation needs, and what is kept of the window (per model version):
  * data quality (missing and out-of-vocabulary rates, rows served with feature-store defaults):
    exact counts (mlops.monitoring.quality.QualityCounts);
  * categorical drift (Jensen-Shannon, chi-square, PSI): the exact count of every category
    (memory: the vocabulary, not the rows);
  * TFDV serving statistics: TFDV's own partial statistics of each chunk, merged with its
    generators' merge_accumulators and extracted once (ChunkedStatistics): exactly what
    tfdv.generate_statistics_from_dataframe computes, which merges the same way when it splits a
    frame over processes (counts exact; quantiles from TFDV's own mergeable sketches);
  * everything that needs rows (numeric drift: normalised Wasserstein and KS; prediction drift; the
    joint-space check; CBPE; the report's plots): a simple random sample of at most `sample_rows`
    rows (RowSample: every row of the window gets a seeded uniform key, the rows with the smallest
    keys are kept: bottom-k sampling, uniform without replacement, and the same rows whatever the
    chunk size). The exact number of present values is reported beside each sampled test.
    Why a sample is enough: the two-sample tests compare the window with a reference of
    monitoring.reference_rows (10,000) rows, and their precision is bounded by the smaller side (KS's
    effective size n*m/(n+m) is 8,333 with a 50,000-row sample and 9,901 with 1,000,000 rows); the
    sample's Wasserstein distance is within ~0.01 reference sd of the window's (the empirical
    distribution of 50,000 draws); the domain classifier and alibi-detect's MMD subsample further
    (5,000 and 1,000 rows per side). CBPE's band comes from the sampling error of a window of the
    sample's size, so for a window larger than the sample it is wider (conservative).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.monitoring.drift import CATEGORICAL, NUMERIC, missing_categorical
from mlops.monitoring.quality import QualityCounts

SAMPLE_ROWS = 50_000  # rows of a version's window kept for the tests that need rows
CHUNK_ROWS = 65_536  # payload-log rows read at a time


class RowSample:
    """Bottom-k sample: the `size` rows with the smallest keys (uniform in [0, 1)) seen so far."""

    def __init__(self, size: int):
        self.size = size
        self.keys = np.empty(0)
        self.rows: pd.DataFrame | None = None

    def add(self, rows: pd.DataFrame, keys: np.ndarray) -> None:
        if len(self.keys) >= self.size:  # full: only keys below the largest kept one can enter
            enter = keys < self.keys.max()
            rows, keys = rows[enter], keys[enter]
        if not len(keys):
            return
        keys = np.concatenate([self.keys, keys])
        rows = rows if self.rows is None else pd.concat([self.rows, rows], ignore_index=True)
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size - 1)[: self.size]
            keys, rows = keys[keep], rows.iloc[keep]
        self.keys, self.rows = keys, rows.reset_index(drop=True)

    def frame(self) -> pd.DataFrame:
        """The sample, in key order (so the same rows in the same order whatever the chunks)."""
        if self.rows is None:
            return pd.DataFrame()
        return self.rows.iloc[np.argsort(self.keys, kind="stable")].reset_index(drop=True)


class ChunkedStatistics:
    """TFDV statistics of a frame given chunk by chunk (mlops.validation.statistics.compute_statistics'
    frame preparation and options; TFDV's in-memory partial statistics merged per chunk)."""

    def __init__(self, config, name: str = ""):
        import tensorflow_data_validation as tfdv
        from tensorflow_data_validation.statistics import stats_impl

        self.config, self.name = config, name
        self.options = tfdv.StatsOptions()
        self.generators = stats_impl.get_generators(self.options, in_memory=True)
        self.merged = None

    def add(self, frame: pd.DataFrame) -> None:
        # the per-split function generate_statistics_from_dataframe itself calls (n_jobs > 1)
        from tensorflow_data_validation.utils.stats_gen_lib import _generate_partial_statistics_from_df

        from mlops.validation.statistics import stats_frame

        partial = _generate_partial_statistics_from_df(stats_frame(frame, self.config), self.options, self.generators)
        if self.merged is None:
            self.merged = partial
        else:
            self.merged = [g.merge_accumulators([a, b]) for g, a, b in zip(self.generators, self.merged, partial)]

    def result(self):
        from tensorflow_data_validation.statistics import stats_impl

        if self.merged is None:
            self.add(pd.DataFrame())
        stats = stats_impl.extract_statistics_output(self.merged, self.generators)
        if self.name:
            for ds in stats.datasets:
                ds.name = self.name
        return stats


class VersionWindow:
    """Everything a monitoring run keeps of one model version's window rows."""

    def __init__(
        self,
        kinds: dict[str, str],
        vocabularies: dict[str, set[str]],
        groups: dict[str, list[str]],
        *,
        extra: tuple[str, ...] = (),
        statistics: ChunkedStatistics | None = None,
        sample_rows: int = SAMPLE_ROWS,
    ):
        self.kinds = kinds
        self.columns = [*kinds, *extra]  # sampled: the features and e.g. the prediction
        self.quality = QualityCounts(kinds, vocabularies, groups)
        self.categories: dict[str, dict[str, int]] = {n: {} for n, k in kinds.items() if k == CATEGORICAL}
        self.present = dict.fromkeys(kinds, 0)
        self.sources: dict[str, int] = {}
        self.statistics = statistics
        self.sample = RowSample(sample_rows)

    @property
    def rows(self) -> int:
        return self.quality.rows

    def add(self, rows: pd.DataFrame, keys: np.ndarray) -> None:
        self.quality.add(rows)
        for source, n in rows["source"].value_counts().items() if "source" in rows else ():
            self.sources[str(source)] = self.sources.get(str(source), 0) + int(n)
        for name, kind in self.kinds.items():
            if name not in rows:
                continue
            values = rows[name].to_numpy()
            if kind == NUMERIC:
                self.present[name] += int(np.isfinite(pd.to_numeric(rows[name], errors="coerce")).sum())
                continue
            present = values[~missing_categorical(values)].astype(str)
            self.present[name] += int(present.size)
            counts = self.categories[name]
            for category, n in zip(*np.unique(present, return_counts=True)):
                counts[str(category)] = counts.get(str(category), 0) + int(n)
        if self.statistics is not None:
            self.statistics.add(rows)
        self.sample.add(rows[[c for c in self.columns if c in rows]], keys)


def accumulate(
    batches, windows: dict[str, VersionWindow], *, seed: int = 0, version_column: str = "version"
) -> dict[str, VersionWindow]:
    """Feeds each batch's rows to the window of their version (versions without one are passed
    over). The sampling keys come from one seeded stream over all rows in read order, so the
    result does not depend on how the rows were cut into batches."""
    rng = np.random.default_rng(seed)
    for batch in batches:
        keys = rng.random(len(batch))
        versions = batch[version_column].astype(str).to_numpy()
        for version, window in windows.items():
            mine = versions == version
            if mine.any():
                window.add(batch[mine].reset_index(drop=True), keys[mine])
    return windows
