"""The `monitoring` pipeline: the payload logs of a window vs each model version's training reference.

    monitor   (payload logs + registry + ML Metadata -> result.json, report.html, serving statistics, metrics)

Schedule pipelines/compiled/monitoring.yaml (e.g. hourly with last=1h, daily with last=24h), or run
it locally: `mlops run monitoring --param model=flights@production --param last=6h`
(`mlops monitor run` does the same without KFP).
"""

from kfp import dsl

from components.monitor.component import monitor
from pipelines.target import LOCAL, CompileTarget

PIPELINE_NAME = "monitoring"


def define(target: CompileTarget = LOCAL):
    """The pipeline with the target's images, resources and node selectors on its step."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Drift, data quality and estimated performance of served models from their payload logs.",
    )
    def monitoring_pipeline(
        config_path: str = "configs/flights.yaml",
        config_overrides: str = "",
        artifact_root: str = "",
        model: str = "",
        window: str = "",
        last: str = "",
    ):
        """
        Args:
            config_path: Platform config YAML, relative to the project root in the image.
            config_overrides: JSON object of dotted config keys to override, e.g. {"monitoring.detector": "alibi"}.
            artifact_root: Artifact root (e.g. s3://bucket/mlops); empty: as in the config.
            model: NAME@ALIAS, NAME@VERSION or NAME; empty: the project's name (production, else staging).
            window: START:END, ISO dates or times in UTC (e.g. 2013-07-01:2013-07-02); empty: use `last`.
            last: Duration before now (30m, 6h, 2d); empty: monitoring.window.
        """
        step = monitor(
            config_path=config_path,
            config_overrides=config_overrides,
            artifact_root=artifact_root,
            pipeline_name=PIPELINE_NAME,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            model=model,
            window=window,
            last=last,
        )
        step.set_display_name("monitor").set_caching_options(False)  # the window moves with the clock and the logs grow
        target.configure(step)

    return monitoring_pipeline


monitoring_pipeline = define()
