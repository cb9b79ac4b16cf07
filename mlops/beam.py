"""The one place a Beam pipeline is made: every step that runs Beam (StatisticsGen's TFDV path,
Transform's TFT, the Evaluator's TFMA) opens it with `pipeline(config.beam)`, so the runner and its
options are configuration (the `beam:` section, mlops.config.BeamSpec), never code.

    with mlops.beam.pipeline(config.beam) as p:
        _ = p | ... # runs when the block ends, on config.beam.runner

Runners:
  * direct: Beam's in-process FnApiRunner, one worker (measured: two are slower on 2 cores,
    start-up dominates). Beam >= 2.6x's DirectRunner would first try the Prism runner, which
    downloads a Go binary at run time (impossible offline), so the FnApiRunner is named here.
  * dask: Beam's DaskRunner on a dask.distributed cluster, `dask.address`, or a LocalCluster of
    `dask.workers` processes started for the pipeline and closed after it (scales out to a Dask
    cluster on Kubernetes by setting the address). Beam 2.71's DaskRunner (runners/dask) has four
    defects that make TFDV's statistics wrong or hang it (tagged outputs mixed, GroupByKey on a
    per-process salted hash, side inputs recomputed inside tasks, only the last sink run):
    mlops.dask_runner fixes them, the rest is Beam's. It reads no Beam source (Read is a no-op
    there): a step reads its files in a ParDo (`read_parquet`).
  * any other name (DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, a dotted path):
    handed to Beam unchanged, with `beam.options` as its flags.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mlops.config import BeamSpec

DIRECT = ("direct", "DirectRunner")
DASK = ("dask", "DaskRunner")
BATCH_ROWS = 65_536  # rows per Arrow table a step reads


def is_direct(spec: BeamSpec) -> bool:
    return spec.runner in DIRECT


def is_dask(spec: BeamSpec) -> bool:
    return spec.runner in DASK


def workers_share_paths(spec: BeamSpec) -> bool:
    """Whether the runner's workers see this process's file system (the steps then hand them local
    paths; otherwise the artifact URIs, e.g. s3://, which remote workers reach)."""
    return is_direct(spec) or (is_dask(spec) and spec.dask.address is None)


def where(spec: BeamSpec, location) -> str:
    """The address of a step's input or output (mlops.steps.Location) to hand the runner's
    workers: the mounted path when they share this file system, else the artifact URI."""
    return location.path if workers_share_paths(spec) else location.uri


# Steps whose Beam pipelines finish on the DaskRunner but with wrong outputs (tried on this machine:
# README "Scale-out"); with `beam.runner: dask` they run in-process instead.
WRONG_ON_DASK = {"transform": "TFT's vocabularies come out empty (size 1)"}


def for_step(spec: BeamSpec, step: str) -> BeamSpec:
    """The runner `step` uses: `spec`, or in-process where the DaskRunner gives it wrong outputs."""
    if is_dask(spec) and step in WRONG_ON_DASK:
        logging.getLogger(__name__).warning(
            "beam.runner dask: %s runs in-process (on the DaskRunner %s)", step, WRONG_ON_DASK[step]
        )
        return BeamSpec()
    return spec


def describe(spec: BeamSpec) -> str:
    """The runner as recorded with a step's outputs, e.g. "dask tcp://10.0.0.5:8786"."""
    if is_dask(spec):
        return f"dask {spec.dask.address or f'LocalCluster({spec.dask.workers} workers)'}"
    return spec.runner


@contextlib.contextmanager
def pipeline(spec: BeamSpec) -> Iterator:
    """A beam.Pipeline on `spec.runner`; it runs (and is waited for) when the block ends. A Dask
    LocalCluster started for it is closed after it, also when the pipeline fails."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    if is_direct(spec):
        with beam.Pipeline(runner=_fn_api_runner(spec.options), options=_direct_options(spec.options)) as p:
            yield p
        return
    if not is_dask(spec):
        with beam.Pipeline(options=PipelineOptions([f"--runner={spec.runner}", *spec.options])) as p:
            yield p
        return
    with _dask_scheduler(spec) as address:
        flags = [f"--dask_client_address={address}", *spec.options]
        if not {"--dask_npartitions", "--dask_partition_size"} & {f.split("=", 1)[0] for f in spec.options}:
            # Beam's default (128 elements a partition) puts a step's few Create elements on one worker.
            flags.append(f"--dask_npartitions={spec.dask.workers}")
        from mlops.dask_runner import DaskRunner

        with beam.Pipeline(runner=DaskRunner(), options=PipelineOptions(flags)) as p:
            yield p


def _direct_options(flags: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    given = {f.split("=", 1)[0] for f in flags}
    flags = list(flags)
    if "--direct_num_workers" not in given:
        flags.append("--direct_num_workers=1")
    if "--direct_running_mode" not in given:
        flags.append("--direct_running_mode=in_memory")
    return PipelineOptions(flags)


def _fn_api_runner(flags: list[str]):
    """The FnApiRunner with the pipeline options in its provision info (TFT reads them there)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    options = _direct_options(flags)
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(
            pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())
        )
    )
    return fn_runner.FnApiRunner(provision_info=provision_info)


@contextlib.contextmanager
def _dask_scheduler(spec: BeamSpec) -> Iterator[str]:
    if spec.dask.address:
        yield spec.dask.address
        return
    from dask.distributed import LocalCluster

    # Worker processes (not threads): the GIL-bound TFDV/TFT work runs in parallel, as on a cluster.
    cluster = LocalCluster(n_workers=spec.dask.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def read_slices(spec: BeamSpec) -> int:
    """Into how many slices a step cuts a file it reads (one Create element each): one per Dask
    worker process, so that every worker has a share; one elsewhere (the runner splits further)."""
    return spec.dask.workers if is_dask(spec) else 1


def read_parquet(
    uri: str, index: int = 0, count: int = 1, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS
):
    """Slice `index` of `count` of a parquet file (local path or fsspec URI: mlops.storage), as
    Arrow Tables of `batch_rows` rows (every count-th of them), for a FlatMap: the way every runner
    reads, DaskRunner included (it runs no Beam source)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops import storage

    fs, path = storage.fs_and_path(uri)
    with fs.open(path, "rb") as f:
        for i, batch in enumerate(pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)):
            if i % count == index:
                yield pa.Table.from_batches([batch])
