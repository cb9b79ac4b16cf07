"""ExampleValidator: statistics vs schema (anomalies), vs the previous span (drift), vs serving
(skew), and what the run does about them (config.validation.on_anomaly / on_drift).

Checks, all with tfdv.validate_statistics against <schema_dir>/schema.pbtxt:
  * schema: every split's statistics in the TRAINING environment (types, presence, domains,
    value ranges, missing/new columns); an empty split is an anomaly too;
  * drift: this run's splits (default: train) vs the same split of a previous Statistics
    artifact (unless named: the last successful run's of the same project and dataset, see
    previous_statistics), with each feature's drift_comparator;
  * skew: the train statistics vs serving statistics (e.g. from logged requests, computed with
    mlops.validation.statistics.compute_statistics), with each feature's skew_comparator; the
    serving statistics are also validated against the schema's SERVING environment.
Policy: schema anomalies follow on_anomaly, drift/skew/serving anomalies follow on_drift
("fail" or "warn"); only ERROR-severity anomalies can fail a run.

Writes the Anomalies artifact (mlops.artifacts):
    <out>/anomalies.json             readable summary: verdict, policy, one row per anomaly, measurements
    <out>/<split>.anomalies.pbtxt    TFDV Anomalies of the schema check, per split
    <out>/drift.anomalies.pbtxt      TFDV output of the drift comparison (when run)
    <out>/skew.anomalies.pbtxt, <out>/serving.anomalies.pbtxt   (when serving statistics are given)
    <out>/index.html                 the report
`run` also copies anomalies.json and index.html to <artifact_root>/reports/<pipeline>/<run_id>/
example_validator/, which outlives a failed KFP step (KFP uploads outputs only on success).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from components.statistics_gen.executor import STATS_INDEX
from mlops import storage
from mlops.artifacts import ANOMALIES_SUMMARY, SCHEMA_FILE, SPLITS, STATS_SUFFIX, stats_path
from mlops.config import PlatformConfig, join_uri
from mlops.errors import NotFound, Refused
from mlops.steps import Location, RunContext, StepResult, source_version
from mlops.validation import anomalies as A
from mlops.validation import report
from mlops.validation.schema import SERVING, TRAINING, load_schema
from mlops.validation.statistics import num_examples, read_statistics

COMPONENT = "example_validator"
CODE_VERSION = source_version("example_validator", __name__)
HTML_FILE = "index.html"
DEFAULT_DRIFT_SPLITS = ("train",)
SKEW_SPLIT = "train"


class ExampleValidatorError(NotFound):
    """The inputs cannot be validated (missing files), as opposed to data that fails validation."""


class DataValidationError(Refused):
    """The data failed validation under the configured policy (it may not go on to training)."""


@dataclass
class ValidationResult:
    anomalies: dict[str, list[A.Anomaly]]  # schema anomalies per split
    drift: list[A.Anomaly]
    skew: list[A.Anomaly]  # comparator skew and serving-data schema anomalies (category "serving")
    measurements: list[A.Measurement]
    on_anomaly: str
    on_drift: str
    ok: bool  # no anomaly of any kind
    should_fail: bool  # per policy
    out_dir: str
    inputs: dict[str, str | None] = field(default_factory=dict)
    report_uri: str | None = None  # persistent copy of the report under the artifact root
    seconds: float = 0.0

    @property
    def schema_anomalies(self) -> list[A.Anomaly]:
        return [a for rows in self.anomalies.values() for a in rows]

    @property
    def all_anomalies(self) -> list[A.Anomaly]:
        return self.schema_anomalies + self.drift + self.skew

    @property
    def html_path(self) -> str:
        return join_uri(self.out_dir, HTML_FILE)

    def failing(self) -> list[A.Anomaly]:
        out = []
        if self.on_anomaly == "fail":
            out += [a for a in self.schema_anomalies if a.severity == "ERROR"]
        if self.on_drift == "fail":
            out += [a for a in self.drift + self.skew if a.severity == "ERROR"]
        return out

    def summary(self) -> str:
        n = len(self.schema_anomalies)
        return f"{n} schema anomal{'y' if n == 1 else 'ies'}, {len(self.drift)} drift, {len(self.skew)} skew"

    def failure_message(self) -> str:
        failing = self.failing()
        listed = "; ".join(f"{a.split}/{a.feature}: {a.kind}" for a in failing[:15])
        more = f"; ... {len(failing) - 15} more" if len(failing) > 15 else ""
        policy = []
        if any(a.category == A.SCHEMA for a in failing):
            policy.append("validation.on_anomaly=fail")
        if any(a.category != A.SCHEMA for a in failing):
            policy.append("validation.on_drift=fail")
        where = self.report_uri or self.html_path
        return (
            f"data validation failed ({', '.join(policy)}): {self.summary()}. Failing: {listed}{more}. Report: {where}"
        )

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "should_fail": self.should_fail,
            "policy": {"on_anomaly": self.on_anomaly, "on_drift": self.on_drift},
            "summary": self.summary(),
            "message": self.failure_message() if self.should_fail else "",
            "counts": {
                "schema": {s: len(r) for s, r in self.anomalies.items()},
                "drift": len(self.drift),
                "skew": len(self.skew),
            },
            "inputs": self.inputs,
            "anomalies": [asdict(a) for a in self.all_anomalies],
            "measurements": [{**asdict(m), "exceeded": m.exceeded} for m in self.measurements],
            "seconds": self.seconds,
        }


def available_splits(statistics_dir: str) -> list[str]:
    names = [n[: -len(STATS_SUFFIX)] for n in storage.listdir(statistics_dir) if n.endswith(STATS_SUFFIX)]
    return [s for s in SPLITS if s in names] + sorted(s for s in names if s not in SPLITS)


def validate(
    config: PlatformConfig,
    statistics_dir: str,
    schema_dir: str,
    out_dir: str,
    *,
    previous_statistics_dir: str | None = None,
    serving_statistics_path: str | None = None,
    drift_splits=DEFAULT_DRIFT_SPLITS,
) -> ValidationResult:
    import tensorflow_data_validation as tfdv

    t0 = time.perf_counter()
    schema_uri = join_uri(schema_dir, SCHEMA_FILE)
    if not storage.exists(schema_uri):
        raise ExampleValidatorError(f"schema {schema_dir}: no {SCHEMA_FILE}")
    schema = load_schema(schema_uri)
    envs = set(schema.default_environment)
    training_env = TRAINING if TRAINING in envs else None
    splits = available_splits(statistics_dir)
    if not splits:
        raise ExampleValidatorError(f"statistics {statistics_dir}: no <split>{STATS_SUFFIX} files")
    storage.makedirs(out_dir)

    stats = {s: read_statistics(stats_path(statistics_dir, s)) for s in splits}
    per_split: dict[str, list[A.Anomaly]] = {}
    for split in splits:
        result = tfdv.validate_statistics(stats[split], schema, environment=training_env)
        A.write_anomalies_text(result, join_uri(out_dir, f"{split}.anomalies.pbtxt"))
        rows = A.rows(result, A.SCHEMA, split)
        expected_empty = split == "test" and config.split.test == 0
        if (not stats[split].datasets or num_examples(stats[split]) == 0) and not expected_empty:
            rows.append(A.empty_split(split))
        per_split[split] = rows

    drift, skew, measured = [], [], []
    if previous_statistics_dir:
        previous = available_splits(previous_statistics_dir)
        compared = [s for s in drift_splits if s in splits]
        missing = [s for s in compared if s not in previous]
        if missing:
            raise ExampleValidatorError(
                f"previous statistics {previous_statistics_dir}: no split(s) {missing} to "
                f"compare with (it has {previous})"
            )
        for split in compared:
            prev = read_statistics(stats_path(previous_statistics_dir, split))
            result = tfdv.validate_statistics(stats[split], schema, environment=training_env, previous_statistics=prev)
            drift += A.rows(result, A.DRIFT, split, comparators_only=True)
            measured += A.measurements(result, A.DRIFT, split)
            A.write_anomalies_text(
                result,
                join_uri(out_dir, f"drift.{split}.anomalies.pbtxt" if len(compared) > 1 else "drift.anomalies.pbtxt"),
            )
    if serving_statistics_path:
        if not storage.exists(serving_statistics_path):
            raise ExampleValidatorError(f"serving statistics {serving_statistics_path} do not exist")
        if SKEW_SPLIT not in stats:
            raise ExampleValidatorError(f"statistics {statistics_dir}: no {SKEW_SPLIT} split to compare serving with")
        serving = read_statistics(serving_statistics_path)
        result = tfdv.validate_statistics(
            stats[SKEW_SPLIT], schema, environment=training_env, serving_statistics=serving
        )
        A.write_anomalies_text(result, join_uri(out_dir, "skew.anomalies.pbtxt"))
        skew += A.rows(result, A.SKEW, SKEW_SPLIT, comparators_only=True)
        measured += A.measurements(result, A.SKEW, SKEW_SPLIT)
        serving_result = tfdv.validate_statistics(serving, schema, environment=SERVING if SERVING in envs else None)
        A.write_anomalies_text(serving_result, join_uri(out_dir, "serving.anomalies.pbtxt"))
        skew += A.rows(serving_result, A.SERVING, "serving", exclude_comparators=True)

    v = config.validation
    result = ValidationResult(
        anomalies=per_split,
        drift=drift,
        skew=skew,
        measurements=measured,
        on_anomaly=v.on_anomaly,
        on_drift=v.on_drift,
        ok=False,
        should_fail=False,
        out_dir=out_dir,
        inputs={
            "statistics": statistics_dir,
            "schema": schema_uri,
            "previous_statistics": previous_statistics_dir,
            "serving_statistics": serving_statistics_path,
        },
    )
    result.ok = not result.all_anomalies
    result.should_fail = bool(result.failing())
    result.seconds = round(time.perf_counter() - t0, 3)
    write_report(result, out_dir)
    return result


def write_report(result: ValidationResult, out_dir: str) -> None:
    storage.write_json_atomic(join_uri(out_dir, ANOMALIES_SUMMARY), result.to_json())
    storage.write_bytes_atomic(join_uri(out_dir, HTML_FILE), report_html(result).encode("utf-8"))


def report_html(r: ValidationResult) -> str:
    if r.should_fail:
        verdict = f'<p class="fail"><b>FAILED</b>: {report.esc(r.failure_message())}</p>'
    elif r.ok:
        verdict = '<p class="ok"><b>OK</b>: no anomalies, no drift, no skew.</p>'
    else:
        verdict = (
            f'<p class="warn"><b>WARNINGS</b>: {report.esc(r.summary())} (policy: on_anomaly='
            f"{report.esc(r.on_anomaly)}, on_drift={report.esc(r.on_drift)}).</p>"
        )
    headers = ["split", "feature", "kind", "severity", "description"]

    def anomaly_rows(items):
        return [(a.split, a.feature, a.kind, a.severity, a.description) for a in items]

    sections = [
        verdict,
        f'<p class="note">Policy: schema anomalies &rarr; {report.esc(r.on_anomaly)}; drift, skew and '
        f"serving anomalies &rarr; {report.esc(r.on_drift)}.</p>",
        "<h2>Schema anomalies</h2>" + report.table(headers, anomaly_rows(r.schema_anomalies)),
        "<h2>Checked splits</h2>"
        + report.table(["split", "anomalies"], [(s, len(a)) for s, a in r.anomalies.items()], numeric=(1,)),
    ]
    if r.inputs.get("previous_statistics"):
        sections.append("<h2>Drift vs the previous statistics</h2>" + report.table(headers, anomaly_rows(r.drift)))
    else:
        sections.append('<h2>Drift</h2><p class="note">Not checked: no previous statistics given.</p>')
    if r.inputs.get("serving_statistics"):
        sections.append("<h2>Training/serving skew and serving data</h2>" + report.table(headers, anomaly_rows(r.skew)))
    else:
        sections.append('<h2>Skew</h2><p class="note">Not checked: no serving statistics given.</p>')
    if r.measurements:
        sections.append(
            "<h2>Distribution distances</h2>"
            + report.table(
                ["comparison", "split", "feature", "measure", "value", "threshold", "above threshold"],
                [
                    (m.comparison, m.split, m.feature, m.measure, m.value, m.threshold, "YES" if m.exceeded else "")
                    for m in r.measurements
                ],
                numeric=(4, 5),
            )
        )
    sections.append("<h2>Inputs</h2>" + report.table(["input", "uri"], [(k, v or "") for k, v in r.inputs.items()]))
    return report.page("Data validation", sections)


def raise_if_failed(result: ValidationResult) -> None:
    if result.should_fail:
        raise DataValidationError(result.failure_message())


def anomalies_ref(result: ValidationResult):
    import hashlib
    import json

    from mlops.metadata.store import ArtifactRef

    body = json.dumps([[a.category, a.split, a.feature, a.kind] for a in result.all_anomalies]).encode()
    return ArtifactRef(
        "Anomalies",
        result.out_dir,
        properties={
            "split": json.dumps(list(result.anomalies)),
            "anomaly_count": len(result.all_anomalies),
            "content_hash": hashlib.sha256(body).hexdigest()[:16],
            "ok": result.ok,
            "should_fail": result.should_fail,
            "schema_anomalies": len(result.schema_anomalies),
            "drift_anomalies": len(result.drift),
            "skew_anomalies": len(result.skew),
            "report_uri": result.report_uri or "",
        },
    )


def report_dir(config: PlatformConfig, pipeline: str, run_id: str) -> str:
    return join_uri(config.artifact_root, "reports", pipeline, run_id, COMPONENT)


def statistics_owner(config: PlatformConfig) -> dict[str, str]:
    """What run() records on the Statistics it validates: whose data they describe (the drift
    baseline of a project is never another project's or dataset's statistics)."""
    return {"project": config.project, "dataset": config.dataset.name}


def previous_statistics(config: PlatformConfig, statistics_dir: str) -> str | None:
    """The drift baseline when the caller names none, from ML Metadata: the statistics validated by
    the last SUCCESSFUL run of the same project and dataset (the production model's training data
    passed through such a run too). A run is successful when its example_validator execution is
    COMPLETE and none of its executions FAILED or was CANCELED: a run that failed (on this data or
    later) is never a baseline. Statistics equal to the current ones (same data) are skipped, and
    statistics validated before run() recorded their project and dataset are never picked."""
    from mlops.metadata.store import open_store

    current = (
        storage.read_json(join_uri(statistics_dir, STATS_INDEX))
        if storage.exists(join_uri(statistics_dir, STATS_INDEX))
        else {}
    )
    return _last_successful_run_statistics(open_store(config), config, statistics_dir, current)


def _usable_baseline(artifact, statistics_dir: str, current: dict) -> bool:
    from mlops.metadata.store import canonical_uri

    if artifact.uri == canonical_uri(statistics_dir) or not storage.exists(artifact.uri):
        return False
    # the same data again: no drift to measure
    return not (current.get("content_hash") and artifact.properties.get("content_hash") == current["content_hash"])


def _last_successful_run_statistics(store, config: PlatformConfig, statistics_dir: str, current: dict) -> str | None:
    from ml_metadata.proto import metadata_store_pb2 as pb

    from mlops.metadata.store import _event_key

    owner = statistics_owner(config)
    statistics = {a.id: a for a in store.list_artifacts("Statistics")}
    validations = [e for e in store.list_executions() if e.component == COMPONENT and e.state == "COMPLETE"]
    for execution in sorted(validations, key=lambda e: e.id, reverse=True):  # newest first
        run_id = execution.name.rsplit("/", 1)[0]  # executions are named <run_id>/<component>
        if any(e.state in ("FAILED", "CANCELED") for e in store.list_executions(run_id)):
            continue
        validated = [
            statistics[ev.artifact_id]
            for ev in store.mlmd.get_events_by_execution_ids([execution.id])
            if ev.type == pb.Event.INPUT and _event_key(ev) == "statistics" and ev.artifact_id in statistics
        ]
        for artifact in validated:
            if all(artifact.properties.get(k) == v for k, v in owner.items()) and _usable_baseline(
                artifact, statistics_dir, current
            ):
                return artifact.uri
    return None


def run(
    config: PlatformConfig,
    statistics_dir: str,
    schema_dir: str,
    out_dir: str,
    *,
    pipeline: str,
    run_id: str,
    previous_statistics_dir: str | None = None,
    serving_statistics_path: str | None = None,
    drift_splits=DEFAULT_DRIFT_SPLITS,
) -> ValidationResult:
    """validate() + a persistent copy of the report + the MLMD record (state FAILED when the
    policy says the run must fail). Does not raise for bad data: call raise_if_failed().
    Baselines not given (None) are found in ML Metadata: the drift baseline (previous_statistics)
    and the serving statistics of the skew check (the newest a monitoring run recorded for the
    production model, components/monitor)."""
    from mlops.metadata.store import ArtifactRef
    from mlops.steps import record_step

    if previous_statistics_dir is None:
        previous_statistics_dir = previous_statistics(config, statistics_dir)
    if serving_statistics_path is None:  # the newest monitoring run's, of the production model
        from components.monitor.reference import newest_serving_statistics

        serving_statistics_path = newest_serving_statistics(config)
    result = validate(
        config,
        statistics_dir,
        schema_dir,
        out_dir,
        previous_statistics_dir=previous_statistics_dir,
        serving_statistics_path=serving_statistics_path,
        drift_splits=drift_splits,
    )
    persistent = report_dir(config, pipeline, run_id)
    if persistent.rstrip("/") != out_dir.rstrip("/"):
        result.report_uri = join_uri(persistent, HTML_FILE)
        storage.makedirs(persistent)
        write_report(result, persistent)
        write_report(result, out_dir)  # the message now names the persistent report
    inputs = {
        "statistics": [ArtifactRef("Statistics", statistics_dir, properties=statistics_owner(config))],
        "schema": [ArtifactRef("Schema", schema_dir)],
    }
    if previous_statistics_dir:
        inputs["previous_statistics"] = [ArtifactRef("Statistics", previous_statistics_dir)]
    if serving_statistics_path:
        inputs["serving_statistics"] = [ArtifactRef("Statistics", serving_statistics_path)]
    properties = {"code_version": CODE_VERSION}
    if result.should_fail:
        properties["error"] = result.failure_message()[:2000]
    record_step(
        config,
        pipeline=pipeline,
        run_id=run_id,
        component=COMPONENT,
        inputs=inputs,
        outputs={"anomalies": [anomalies_ref(result)]},
        properties=properties,
        state="FAILED" if result.should_fail else "COMPLETE",
    )
    return result


def execute(
    config: PlatformConfig,
    inputs: dict[str, Location],
    outputs: dict[str, Location],
    context: RunContext,
    *,
    previous_statistics_uri: str = "",
    serving_statistics_uri: str = "",
) -> StepResult:
    """The step contract (mlops.steps): inputs {"statistics", "schema"}; outputs {"anomalies"}.
    Writes the report and the MLMD record first, then raises DataValidationError when the policy
    says the run must fail."""
    result = run(
        config,
        inputs["statistics"].path,
        inputs["schema"].path,
        outputs["anomalies"].path,
        pipeline=context.pipeline,
        run_id=context.run_id,
        previous_statistics_dir=previous_statistics_uri or None,
        serving_statistics_path=serving_statistics_uri or None,
    )
    values = {
        "ok": result.ok,
        "should_fail": result.should_fail,
        "summary": result.summary(),
        "report_uri": result.report_uri or "",
        "html_path": result.html_path,
    }
    raise_if_failed(result)  # after the report and the MLMD record (state FAILED)
    return StepResult(values=values)
