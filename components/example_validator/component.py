"""KFP interface of ExampleValidator (implementation: executor.py)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Output

from mlops.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def example_validator(
    config_path: str,
    config_overrides: str,
    artifact_root: str,
    pipeline_name: str,
    run_id: str,
    statistics: Input[Artifact],
    schema: Input[Artifact],
    anomalies: Output[Artifact],
    report: Output[HTML],
    previous_statistics_uri: str = "",
    serving_statistics_uri: str = "",
):
    """Validates the statistics against the schema, the previous span (drift) and serving (skew);
    fails the step when validation.on_anomaly / on_drift say so, after writing the report and
    recording the execution in MLMD as FAILED.

    Args:
        config_path: Platform config YAML, relative to the project root in the image.
        config_overrides: JSON object of dotted config keys to override ("" for none).
        artifact_root: Overrides the config's artifact root when not empty (e.g. s3://bucket/mlops).
        pipeline_name: MLMD pipeline context name.
        run_id: The KFP run id (MLMD run context).
        statistics: StatisticsGen output of this run.
        schema: SchemaGen output (schema.pbtxt).
        anomalies: Directory: anomalies.json, <split>.anomalies.pbtxt, index.html.
        report: The validation report, for the KFP UI.
        previous_statistics_uri: A previous span's Statistics directory for drift detection ("" for none).
        serving_statistics_uri: A serving-data statistics file (.stats.pb) for skew detection ("" for none).
    """
    import shutil

    from components.example_validator.executor import HTML_FILE, execute
    from mlops.config import join_uri
    from mlops.errors import MlopsError
    from mlops.steps import Location, RunContext, load_step_config

    config = load_step_config(config_path, config_overrides, artifact_root)
    try:
        result = execute(
            config,
            {"statistics": Location(statistics.path, statistics.uri), "schema": Location(schema.path, schema.uri)},
            {"anomalies": Location(anomalies.path, anomalies.uri)},
            RunContext(pipeline_name, run_id),
            previous_statistics_uri=previous_statistics_uri,
            serving_statistics_uri=serving_statistics_uri,
        ).values
    except MlopsError:
        shutil.copyfile(join_uri(anomalies.path, HTML_FILE), report.path)  # the report says why the data failed
        raise
    shutil.copyfile(result["html_path"], report.path)
    anomalies.metadata.update({k: result[k] for k in ("ok", "should_fail", "summary", "report_uri")})
