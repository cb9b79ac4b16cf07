"""The continuous training triggers: what each one's cause is, and how its run starts.

Four triggers, each deciding through mlops.triggers (one record per cause, claimed atomically in
the artifact store, so no cause starts two runs) and starting runs through a `Launcher`:

    trigger_schedule(launcher, pipeline, name, slot, parameters)
        one run per schedule name and slot (a Kubernetes CronJob passes its Job's name, so a
        retried Job pod starts nothing new); the KFP recurring run (`mlops schedule`) is the other way
    trigger_new_data(launcher, pipeline, dataset=None, since=None, window=None, parameters=None)
        one run per dataset span not triggered yet (key: span + pipeline), on dataset_selector
        FIRST:SPAN (all spans up to the new one; `window` N: the last N)
    trigger_code_change(launcher, pipeline, commit, parameters)
        one run per commit (CI on the main branch, after compiling with --tag COMMIT)
    trigger_for_alert(group_key, model_version, *, config_path=DEFAULT_CONFIG_PATH,
                      pipeline="training", parameters=None, reason="", host=None, launcher=None)
        one run per alert group (Alertmanager's groupKey) and model version (NAME@VERSION): the
        monitoring alert receiver calls it; a second notification of the same group for the same
        model starts nothing. `launcher` replaces the default (kfp.local on config_path, or the
        KFP API at `host`). Returns an mlops.triggers.Outcome (.started, .record).

A Launcher runs the pipeline locally with kfp.local (no `host`; the run is synchronous and its
end state is recorded) or submits it to the KFP API at `host` (pipelines.submit). Parameters are
checked against the pipeline before anything is claimed, so bad input changes nothing.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.config import DEFAULT_CONFIG_PATH, PlatformConfig, load_config
from mlops.triggers import (
    CANCELED,
    FAILED,
    SUBMITTED,
    SUCCEEDED,
    Outcome,
    StartedRun,
    TriggerInputError,
    TriggerRecord,
    TriggerRecords,
    fire,
    idempotency_key,
    record_in_metadata,
)
from pipelines import runner

_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
SELECTOR_PARAMETER = "dataset_selector"


@dataclass
class Launcher:
    """Where runs start: kfp.local on the config's artifact root (no `host`), or the KFP API at
    `host` with the pipeline's IR (`package`, else compiled for the cluster target)."""

    config_path: str
    config: PlatformConfig
    host: str | None = None
    token: str | None = None
    namespace: str | None = None
    experiment: str = "Default"
    package: str | None = None
    target_path: str | None = None
    image_registry: str | None = None
    image_tag: str | None = None
    verbose: bool = False
    on_step: Callable | None = None

    @property
    def local(self) -> bool:
        return not self.host

    @property
    def mode(self) -> str:
        return "local" if self.local else "kfp"

    @property
    def records(self) -> TriggerRecords:
        return TriggerRecords(self.config.artifact_root)

    def start(self, record: TriggerRecord) -> StartedRun:
        run_name = f"{record.pipeline} {record.key}"
        return self._run_local(record, run_name) if self.local else self._submit(record, run_name)

    def _run_local(self, record: TriggerRecord, run_name: str) -> StartedRun:
        arguments = {
            "config_path": str(Path(self.config_path).resolve()),
            "config_overrides": json.dumps({}),
            "artifact_root": self.config.artifact_root,
            **record.parameters,
        }
        try:
            result = runner.run_local(
                record.pipeline,
                self.config.artifact_root,
                arguments,
                config=self.config,
                verbose=self.verbose,
                on_step=self.on_step,
            )
        except runner.PipelineFailed as e:
            return StartedRun(FAILED, None, run_name, e.message, {"step": e.step, "log": e.log})
        except runner.RunCancelled as e:
            return StartedRun(CANCELED, None, run_name, e.message, {"step": e.step, "signal": e.signum})
        return StartedRun(SUCCEEDED, result.run_id, run_name, None, {"run_dir": result.run_dir})

    def _submit(self, record: TriggerRecord, run_name: str) -> StartedRun:
        from pipelines import submit as kfp_api

        with tempfile.TemporaryDirectory(prefix="mlops-trigger-") as workdir:
            ir_path = self._ir(record.pipeline, workdir)
            client = kfp_api.connect(self.host, self.token, self.namespace)
            pipeline_name = runner.load_ir_strict(ir_path).pipeline_info.name
            run = kfp_api.submit(client, pipeline_name, ir_path, record.parameters, self.experiment, run_name)
        details = {k: run[k] for k in ("experiment", "pipeline_id", "pipeline_version", "pipeline_version_reused")}
        return StartedRun(SUBMITTED, run["run_id"], run_name, None, {**details, "host": self.host})

    def _ir(self, pipeline: str, workdir: str) -> str:
        """The IR to upload: `package` (it must be this pipeline's), else a fresh cluster compile."""
        from pipelines.submit import ir_for_upload

        return str(
            ir_for_upload(pipeline, workdir, self.package, self.target_path, self.image_registry, self.image_tag)
        )


def _fire(launcher: Launcher, kind: str, pipeline: str, cause: dict, reason: str, parameters: dict, *key_parts):
    checked = runner.check_arguments(pipeline, parameters)  # a bad parameter fails before any claim
    record = TriggerRecord(
        key=idempotency_key(kind, pipeline, *key_parts),
        kind=kind,
        reason=reason,
        cause=cause,
        pipeline=pipeline,
        parameters=checked,
        mode=launcher.mode,
    )
    return fire(
        launcher.records,
        record,
        launcher.start,
        synchronous=launcher.local,
        record_metadata=lambda r: record_in_metadata(launcher.config, r),
    )


def trigger_schedule(
    launcher: Launcher, pipeline: str, name: str, slot: str, parameters: dict[str, Any] | None = None
) -> Outcome:
    if not name or not slot:
        raise TriggerInputError("schedule trigger: --name and --slot must not be empty")
    return _fire(
        launcher,
        "schedule",
        pipeline,
        {"schedule": name, "slot": slot},
        f"schedule {name}: slot {slot}",
        parameters or {},
        name,
        slot,
    )


def trigger_code_change(
    launcher: Launcher, pipeline: str, commit: str, parameters: dict[str, Any] | None = None
) -> Outcome:
    if not _COMMIT.match(commit or ""):
        raise TriggerInputError(f"--commit {commit!r}: a git commit SHA (7 to 40 lowercase hex digits)")
    return _fire(
        launcher,
        "code-change",
        pipeline,
        {"commit": commit},
        f"code change: commit {commit}",
        parameters or {},
        commit,
    )


def trigger_new_data(
    launcher: Launcher,
    pipeline: str,
    dataset: str | None = None,
    since: str | None = None,
    window: int | None = None,
    parameters: dict[str, Any] | None = None,
) -> list[Outcome]:
    """One trigger per span after `since` (all spans without it), oldest first. A span whose run
    was triggered before is skipped by its record. Stops at the first start that fails (a KFP API
    that does not answer): the spans after it are tried on the next call."""
    from mlops.config import SPAN_PATTERN
    from mlops.datasets.repository import DatasetRepository

    if since is not None and not SPAN_PATTERN.match(since):
        raise TriggerInputError(f"--since {since!r}: a span, YYYY-MM")
    if window is not None and window < 1:
        raise TriggerInputError(f"--window {window}: at least 1 span")
    if parameters and SELECTOR_PARAMETER in parameters:
        raise TriggerInputError(f"--param {SELECTOR_PARAMETER}: the new-data trigger sets it (FIRST:SPAN)")
    name = dataset or launcher.config.dataset.name
    spans = DatasetRepository(launcher.config.artifact_root).spans(name)  # span -> newest version, oldest first
    all_spans = list(spans)
    outcomes = []
    for position, (span, version) in enumerate(spans.items()):
        if since is not None and span <= since:
            continue
        version_id = version.id
        first = all_spans[max(0, position - window + 1)] if window else all_spans[0]
        selector = span if first == span else f"{first}:{span}"
        outcomes.append(
            _fire(
                launcher,
                "new-data",
                pipeline,
                {"dataset": name, "span": span, "version_id": version_id, SELECTOR_PARAMETER: selector},
                f"new data: {name} span {span} ({version_id})",
                {**(parameters or {}), SELECTOR_PARAMETER: selector},
                f"{name}@{span}",
            )
        )
    return outcomes


def trigger_for_alert(
    group_key: str,
    model_version: str,
    *,
    config_path: str = DEFAULT_CONFIG_PATH,
    pipeline: str = "training",
    parameters: dict[str, Any] | None = None,
    reason: str = "",
    host: str | None = None,
    launcher: Launcher | None = None,
) -> Outcome:
    """One run of `pipeline` per (alert group, model version); see the module docstring."""
    if not group_key:
        raise TriggerInputError("alert trigger: the alert group key is empty")
    if not re.match(r"^[^@\s]+@[^@\s]+$", model_version or ""):
        raise TriggerInputError(f"alert trigger: model version {model_version!r} is not NAME@VERSION")
    launcher = launcher or Launcher(config_path, load_config(config_path), host=host)
    return _fire(
        launcher,
        "alert",
        pipeline,
        {"group_key": group_key, "model_version": model_version},
        reason or f"alert group {group_key} on {model_version}",
        parameters or {},
        # Alertmanager group keys are long and full of braces and quotes: a hash names the group
        _short_hash(group_key),
        model_version,
    )


def _short_hash(text: str) -> str:
    import hashlib

    return "group-" + hashlib.sha256(text.encode()).hexdigest()[:16]
