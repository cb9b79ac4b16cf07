"""The `training` pipeline: dataset version -> validated, evaluated, registered model.

    resolve_config -> feature_sync -> example_gen -> statistics_gen -> schema_gen -> example_validator
                                                  -> transform -> trainer -> evaluator -> pusher

Every step records its execution in ML Metadata under the KFP run id; steps whose inputs, config
sections and code did not change are served from the step cache (and say so). Upload
pipelines/compiled/training.yaml in the KFP UI, or run `mlops pipeline run training`.
"""

from kfp import dsl

from components.evaluator.component import evaluator
from components.example_gen.component import example_gen
from components.example_validator.component import example_validator
from components.feature_sync.component import feature_sync
from components.pusher.component import pusher
from components.resolve_config.component import resolve_config
from components.schema_gen.component import schema_gen
from components.statistics_gen.component import statistics_gen
from components.trainer.component import trainer
from components.transform.component import transform
from pipelines.target import LOCAL, CompileTarget

PIPELINE_NAME = "training"


def define(target: CompileTarget = LOCAL):
    """The pipeline with the target's images, resources and node selectors on its steps."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="ETvL -> train -> evaluate -> validate -> model registry, with lineage in ML Metadata.",
    )
    def training_pipeline(
        config_path: str = "configs/flights.yaml",
        config_overrides: str = "",
        artifact_root: str = "",
        dataset_selector: str = "latest",
        epochs: int = 0,
        learning_rate: float = 0.0,
        min_auc: float = -1.0,
        max_auc_drop: float = -1.0,
        enable_cache: bool = True,
    ):
        """
        Args:
            config_path: Platform config YAML, relative to the project root in the image.
            config_overrides: JSON object of dotted config keys to override, e.g. {"split.seed": 7}.
            artifact_root: Artifact root (e.g. s3://bucket/mlops); empty: as in the config.
            dataset_selector: "latest", a span (2013-06), a span range (2013-01:2013-06) or a version id.
            epochs: Training epochs; 0 keeps the config's value.
            learning_rate: 0 keeps the config's value.
            min_auc: Blessing threshold; negative keeps the config's value.
            max_auc_drop: Allowed AUC drop versus production; negative keeps the config's value.
            enable_cache: Reuse outputs of steps whose inputs, config and code are unchanged.
        """
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        resolved = resolve_config(
            config_path=config_path,
            config_overrides=config_overrides,
            artifact_root=artifact_root,
            epochs=epochs,
            learning_rate=learning_rate,
            min_auc=min_auc,
            max_auc_drop=max_auc_drop,
        ).set_display_name("resolve config")
        common = dict(
            config_path=config_path, config_overrides=resolved.outputs["overrides"], artifact_root=artifact_root
        )
        with_run = dict(common, pipeline_name=PIPELINE_NAME, run_id=run_id)

        sources = feature_sync(**common, materialize=False).set_display_name("feature sync")
        examples = example_gen(**with_run, dataset_selector=dataset_selector, enable_cache=enable_cache)
        examples.after(sources).set_display_name("ExampleGen")
        stats = statistics_gen(**with_run, examples=examples.outputs["examples"]).set_display_name("StatisticsGen")
        schema = schema_gen(**with_run, statistics=stats.outputs["statistics"]).set_display_name("SchemaGen")
        validation = example_validator(
            **with_run, statistics=stats.outputs["statistics"], schema=schema.outputs["schema"]
        ).set_display_name("ExampleValidator")
        # Transform consumes the validation verdict: it runs only behind a passed (or warned) check,
        # and the lineage of every model shows the statistics and anomalies it was trained behind.
        transformed = transform(
            **with_run,
            enable_cache=enable_cache,
            examples=examples.outputs["examples"],
            schema=schema.outputs["schema"],
            anomalies=validation.outputs["anomalies"],
        )
        transformed.set_display_name("Transform")
        trained = trainer(
            **with_run,
            enable_cache=enable_cache,
            transform_graph=transformed.outputs["transform_graph"],
            examples=examples.outputs["examples"],
        ).set_display_name("Trainer")
        evaluation = evaluator(
            **with_run, enable_cache=enable_cache, examples=examples.outputs["examples"], model=trained.outputs["model"]
        ).set_display_name("Evaluator")
        pushed = pusher(
            **with_run,
            examples=examples.outputs["examples"],
            model=trained.outputs["model"],
            evaluation=evaluation.outputs["evaluation"],
            blessing=evaluation.outputs["blessing"],
        ).set_display_name("Pusher")

        # KFP's own cache keys on the task spec, not on data: the platform's content-keyed step
        # cache decides instead, so a new dataset version is never served stale outputs.
        steps = (resolved, sources, examples, stats, schema, validation, transformed, trained, evaluation, pushed)
        for task in steps:
            task.set_caching_options(False)
        target.configure(*steps)

    return training_pipeline


training_pipeline = define()
