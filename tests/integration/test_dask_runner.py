"""A distributed Beam path on this machine: Beam's DaskRunner (mlops.dask_runner, chosen by
`beam.runner: dask`) on a dask.distributed cluster of worker processes gives the statistics the
DirectRunner and the in-memory path give, and runs every sink of a pipeline on several workers.

The cluster is the LocalCluster of 2 worker processes that mlops.beam starts for a pipeline when
`beam.dask.address` is unset: the same scheduler protocol as a Dask cluster on Kubernetes."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from components.statistics_gen.executor import generate
from mlops import beam as mlops_beam
from mlops.artifacts import split_path, stats_path
from mlops.config import BeamSpec, DaskSpec, load_config
from mlops.validation.statistics import compute_statistics_beam, read_statistics
from tests.support.fixtures import FLIGHTS_CONFIG
from tests.support.reference_data import flights_frame, split_positions, write_split_frames
from tests.support.statistics_compare import statistics_differences

pytestmark = pytest.mark.integration


def _with_beam(config, spec: BeamSpec):
    return config.model_copy(update={"beam": spec})


@pytest.mark.timeout(300)
def test_statistics_on_dask_are_those_of_the_direct_runner(artifact_root, tmp_path):
    config = load_config(FLIGHTS_CONFIG)
    frames = split_positions(flights_frame(config, n=4000, span="2013-07", seed=11))
    examples = write_split_frames(str(tmp_path / "examples"), frames)
    splits = ("train",)  # one pipeline per split, each on a LocalCluster of its own: one is enough here

    in_memory = generate(config, examples, str(tmp_path / "in_memory"), splits=splits)  # beam.runner: direct
    on_dask = generate(
        _with_beam(config, BeamSpec(runner="dask", dask=DaskSpec(workers=2))),
        examples,
        str(tmp_path / "dask"),
        splits=splits,
    )
    assert on_dask.rows_in == on_dask.splits == in_memory.splits == {"train": 3200}

    direct = _with_beam(config, BeamSpec(runner="DirectRunner"))
    for split in splits:
        dask_stats = read_statistics(stats_path(str(tmp_path / "dask"), split))
        [dataset] = dask_stats.datasets
        assert dataset.name == split and len(dataset.features) == len(config.dataset.features) + 1
        beam_direct = compute_statistics_beam(
            split_path(examples, split), direct, stats_path(str(tmp_path / "direct"), split), name=split
        )
        assert statistics_differences(dask_stats, beam_direct) == []
        assert statistics_differences(dask_stats, read_statistics(stats_path(str(tmp_path / "in_memory"), split))) == []


def _pid_of(x):
    time.sleep(0.02)  # a partition lasts long enough for the scheduler to use both idle workers
    return x, os.getpid()


def _record(pairs, directory):
    """A sink: writes what reached it, one file per element (the file name says which sink)."""
    value, pid = pairs
    with open(os.path.join(directory, f"{value}-{pid}"), "w") as f:
        f.write(str(pid))


def _worker_processes() -> set[int]:
    """This process's children that multiprocessing spawned (its resource tracker stays, by design)."""
    return {
        p.pid for p in psutil.Process().children(recursive=True) if "multiprocessing.spawn" in " ".join(p.cmdline())
    }


@pytest.mark.timeout(300)
def test_every_sink_runs_and_tagged_outputs_stay_apart_on_worker_processes(tmp_path, request):
    """Beam 2.71's DaskRunner alone runs only the last sink and hands every output of a
    multi-output ParDo to every consumer; through mlops.beam both sinks get their own elements,
    computed in the LocalCluster's worker processes (started for the pipeline, closed after)."""
    import apache_beam as beam

    def odd_or_even(x):
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)

    # This module's functions travel by value: the workers cannot import a test module (the
    # platform's own functions, as in the statistics test, travel by reference).
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    request.addfinalizer(lambda: cloudpickle.unregister_pickle_by_value(sys.modules[__name__]))
    even_dir, odd_dir = tmp_path / "even", tmp_path / "odd"
    even_dir.mkdir(), odd_dir.mkdir()
    before = _worker_processes()
    with mlops_beam.pipeline(BeamSpec(runner="dask", dask=DaskSpec(workers=2))) as p:
        parts = p | beam.Create(list(range(40))) | beam.FlatMap(odd_or_even).with_outputs("odd", main="even")
        _ = parts.even | "PidEven" >> beam.Map(_pid_of) | "Even" >> beam.Map(_record, str(even_dir))
        _ = parts.odd | "PidOdd" >> beam.Map(_pid_of) | "Odd" >> beam.Map(_record, str(odd_dir))
    even = [n.name.split("-") for n in even_dir.iterdir()]
    odd = [n.name.split("-") for n in odd_dir.iterdir()]
    assert sorted(int(v) for v, _ in even) == list(range(0, 40, 2))
    assert sorted(int(v) for v, _ in odd) == list(range(1, 40, 2))
    workers = {int(pid) for _, pid in even + odd}
    assert len(workers) >= 2 and os.getpid() not in workers  # processes of the cluster, not this one
    assert _worker_processes() <= before  # the LocalCluster's workers are gone
