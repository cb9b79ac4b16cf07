"""The `ingest` pipeline: the smallest end-to-end use of the platform's KFP mechanics.

One lightweight component with a typed output artifact, project code imported from the image
(install_kfp_package=False), MLMD recording under the KFP run id. Upload the compiled
pipelines/compiled/ingest.yaml in the KFP UI, or run it locally with `mlops pipeline run ingest`.
"""

from kfp import dsl

from components.ingest.component import ingest
from pipelines.target import LOCAL, CompileTarget

PIPELINE_NAME = "ingest"


def define(target: CompileTarget = LOCAL):
    """The pipeline with the target's images, resources and node selectors on its steps."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Ingest a dataset version (optionally one monthly span) and record it in ML Metadata.",
    )
    def ingest_pipeline(
        config_path: str = "configs/flights.yaml",
        config_overrides: str = "",
        artifact_root: str = "",
        span: str = "",
    ):
        step = (
            ingest(
                config_path=config_path,
                config_overrides=config_overrides,
                artifact_root=artifact_root,
                span=span,
                pipeline_name=PIPELINE_NAME,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            .set_display_name("ingest")
            .set_caching_options(False)
        )  # new data may arrive at the same source
        target.configure(step)

    return ingest_pipeline


ingest_pipeline = define()
