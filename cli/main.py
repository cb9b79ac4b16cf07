"""`mlops`: one command line for the platform, grouped by lifecycle stage.

    mlops data ...       stage 1/7  dataset repository: ingest, list, show, spans
    mlops features ...   stage 1/7  Feast feature repository: apply, materialize, get
    mlops demo           all stages: the whole loop, locally, in one command
    mlops run / pipeline stage 2/3  compile and run KFP pipelines
    mlops submit|schedule|runs      stage 2-4  runs and recurring runs on a cluster's KFP
    mlops deploy ...     stage 4    InferenceService of a version, canary/shadow, online comparison, promote/rollback
    mlops models ...     stage 3/7  model registry: versions, aliases, promotion, rollback
    mlops serve|stream|predict      stage 5  online, streaming and batch prediction
    mlops monitor ...    stage 6    drift, data quality, estimated performance from payload logs
    mlops metadata ...   stage 7    ML Metadata: what was recorded

The command line is the top layer: it imports the core (mlops), components, serving and pipelines,
and nothing imports it. Each command declares the environment it needs and re-executes itself
there (mlops.envs), so imports stay lazy: `mlops --help` starts without TensorFlow, Feast or MLMD.
"""

from __future__ import annotations

import warnings

from cli.alerts import alerts
from cli.common import group
from cli.data import data
from cli.demo import demo
from cli.deploy import deploy
from cli.features import features
from cli.kfp import runs, schedule, submit
from cli.metadata import metadata
from cli.models import lineage, models
from cli.monitor import monitor
from cli.pipeline import pipeline, run
from cli.predict import predict
from cli.serve import serve
from cli.stream import stream
from cli.trigger import trigger


@group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """ML CI/CD platform on Kubeflow Pipelines: data, features, training, serving, monitoring."""


for command in (
    demo,
    data,
    features,
    metadata,
    pipeline,
    run,
    submit,
    schedule,
    runs,
    trigger,
    models,
    lineage,
    serve,
    deploy,
    stream,
    predict,
    monitor,
    alerts,
):
    cli.add_command(command)


def main():
    # Google's client libraries (imported by TFX, Beam and Feast) warn on every import that they will
    # drop this Python version: nothing a user of this command can act on. The filter is this
    # process's only; pipeline steps and servers keep their own warnings in their logs.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    cli(prog_name="mlops")


if __name__ == "__main__":
    main()
