"""Compile KFP pipelines to IR YAML, check IR strictly, and run pipelines locally (kfp.local).

Local runs use kfp.local's DAG orchestrator with its SubprocessRunner (no venv): each step runs
as a subprocess of the pipeline environment's interpreter, importing the installed project
exactly as the container image does, with the pipeline root under the artifact root. Around
kfp.local this module adds what a local run needs and kfp.local lacks (see run_local):

* steps die with their run: each step runs in its own process group, killed whole when the run
  is cancelled (SIGTERM, SIGINT) or fails, and by a reaper process when the driver itself is
  killed (SIGKILL); the step's first process also gets a parent-death signal;
* the run has a state in ML Metadata: RUNNING, then COMPLETE, FAILED or CANCELED;
* quiet output: each step's full log goes to `<run dir>/logs/<step>.log` (live on stderr with
  `verbose`), a failed run names its step and that step's error in one line;
* each step's wall time, CPU seconds and peak RSS (mlops.step_resources: its process tree, reaped
  with wait4) on the execution(s) the step recorded in ML Metadata (an execution named after the
  step when it recorded none), and as Prometheus metrics: pushed to monitoring.pushgateway_url, else
  `<run dir>/step_resources.prom`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.config import PlatformConfig, join_uri
from mlops.envs import REPO_ROOT
from mlops.errors import InvalidInput, MlopsError, NotFound
from mlops.step_resources import StepResources, from_rusage

# name -> "module:function"
PIPELINES = {
    "ingest": "pipelines.ingest:ingest_pipeline",
    "training": "pipelines.training:training_pipeline",
    "batch_inference": "pipelines.batch_inference:batch_inference_pipeline",
    "monitoring": "pipelines.monitoring:monitoring_pipeline",
}
COMPILED_DIR = REPO_ROOT / "pipelines" / "compiled"


class PipelineNotFound(NotFound):
    """No pipeline of that name (the message lists the known ones)."""


def pipeline_func(name: str):
    try:
        module, func = PIPELINES[name].split(":")
    except KeyError:
        raise PipelineNotFound(f"unknown pipeline {name}; known: {', '.join(sorted(PIPELINES))}") from None
    return getattr(importlib.import_module(module), func)


def compile_pipeline(name: str, out_dir: str | Path = COMPILED_DIR, target=None) -> Path:
    """Compiles a pipeline to IR YAML for `target` (pipelines.target): by default the cluster
    target of configs/cluster-kfp.yaml, whose config and artifact root become the parameter
    defaults, so what is uploaded to a cluster's KFP keeps its state in the cluster."""
    from kfp import compiler

    from pipelines.target import load_target

    pipeline_func(name)  # a known name, or PipelineNotFound
    target = target or load_target()
    func = importlib.import_module(PIPELINES[name].split(":")[0]).define(target)
    out = Path(out_dir) / f"{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{name}.yaml")
    try:
        compiler.Compiler().compile(func, str(tmp), pipeline_parameters=_known_parameters(func, target.parameters))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _known_parameters(func, defaults: dict[str, Any]) -> dict[str, Any]:
    """The target's parameter defaults that this pipeline has (every pipeline has config_path and
    artifact_root; the check keeps a new pipeline without them compiling)."""
    inputs = func.component_spec.inputs or {}
    return {k: v for k, v in defaults.items() if k in inputs}


def load_ir_strict(path: str | Path):
    """Parses compiled IR with kfp's protobuf schema, rejecting unknown fields (as the KFP API
    server does), plus any kfp-kubernetes executor configs. Returns the PipelineSpec."""
    import yaml
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = list(yaml.safe_load_all(Path(path).read_text()))
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(docs[0], spec, ignore_unknown_fields=False)
    for platform_doc in docs[1:]:
        platform = pipeline_spec_pb2.PlatformSpec()
        json_format.ParseDict(platform_doc, platform, ignore_unknown_fields=False)
        k8s = platform.platforms.get("kubernetes")
        if k8s is not None:
            from kfp.kubernetes import kubernetes_executor_config_pb2 as kec

            for cfg in k8s.deployment_spec.executors.values():
                json_format.ParseDict(
                    json_format.MessageToDict(cfg), kec.KubernetesExecutorConfig(), ignore_unknown_fields=False
                )
    return spec


class PipelineParameterInvalid(InvalidInput):
    """A run argument the pipeline does not have, or of the wrong type (the message names it)."""


class PipelineFailed(MlopsError):
    """A step of the run failed; the message names the step and its error, `log` is its full log."""

    def __init__(self, message: str, *, step: str, log: str):
        super().__init__(message)
        self.step, self.log = step, log


class RunCancelled(MlopsError):
    """The run was stopped by a signal (SIGTERM, SIGINT, SIGHUP); its steps were killed."""

    def __init__(self, signum: int):
        super().__init__(f"cancelled by {signal.Signals(signum).name}")
        self.signum = signum
        self.step = ""


@dataclass
class StepResult:
    task: str  # the step's directory under the run dir, e.g. "transform"
    seconds: float
    status: str  # "ok", "cache hit", "failed", "cancelled"
    log: str
    outputs: dict[str, Any] = field(default_factory=dict)  # kfp.local's: parameters and dsl.Artifacts
    resources: StepResources | None = None  # wall = seconds; CPU and peak RSS of its process tree


@dataclass
class RunResult:
    pipeline: str
    run_id: str
    run_dir: str
    seconds: float
    steps: list[StepResult]


_PARAMETER_KINDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def check_arguments(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The run arguments converted to the pipeline's parameter types ("3" -> 3 for an Integer,
    2013 -> "2013" for a String); an unknown parameter or a value of the wrong type is a
    PipelineParameterInvalid naming it (kfp would raise a 37-line type error mid-call)."""
    inputs = pipeline_func(name).component_spec.inputs or {}
    unknown = sorted(set(arguments) - set(inputs))
    if unknown:
        raise PipelineParameterInvalid(
            f"pipeline {name} has no parameter(s) {', '.join(unknown)}; it has {', '.join(sorted(inputs))}"
        )
    return {key: _as_parameter(name, key, value, inputs[key].type) for key, value in arguments.items()}


def _as_parameter(pipeline: str, key: str, value: Any, kind: str) -> Any:
    try:
        if kind == "String":
            return value if isinstance(value, str) else _json_text(value)
        if kind == "Boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
        elif kind == "Integer" and not isinstance(value, bool):
            if isinstance(value, float) and value != int(value):
                raise ValueError
            return int(value)
        elif kind == "Float" and not isinstance(value, bool):
            return float(value)
        elif kind not in _PARAMETER_KINDS:
            return value
    except (TypeError, ValueError):
        pass
    raise PipelineParameterInvalid(
        f"pipeline {pipeline}: parameter {key} must be {_PARAMETER_KINDS[kind]}, got {value!r}"
    )


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def run_local(
    name: str,
    artifact_root: str,
    arguments: dict[str, Any],
    *,
    config: PlatformConfig | None = None,
    verbose: bool = False,
    on_step: Callable[[str, StepResult | None], None] | None = None,
    cancel_grace_s: float = 5.0,
) -> RunResult:
    """Runs a pipeline with kfp.local in this interpreter's environment.

    `config` (the run's config) locates ML Metadata, where the run context is created RUNNING and
    ends COMPLETE, FAILED or CANCELED; without it the run state is not recorded. `on_step(task,
    None)` is called when a step starts and `on_step(task, result)` when it ends. SIGTERM, SIGINT
    and SIGHUP cancel the run: the running step's process group gets SIGTERM, then SIGKILL after
    `cancel_grace_s`, and RunCancelled is raised. A failed step raises PipelineFailed."""
    from kfp.local import config as local_config
    from kfp.local import dag_orchestrator, executor_input_utils, placeholder_utils, utils

    args = check_arguments(name, arguments)
    spec = pipeline_func(name).pipeline_spec
    pipeline_root = join_uri(artifact_root, "kfp-local")
    run_id = placeholder_utils.make_random_id()
    run_dir = Path(pipeline_root, executor_input_utils.get_local_pipeline_resource_name(spec.pipeline_info.name))
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    store = None
    if config is not None:
        from mlops.metadata.store import open_store

        store = open_store(config)
        # The run's parameters, for `mlops runs compare` (a cluster run's are in the KFP API).
        parameters = json.dumps(args, sort_keys=True, default=str)
        store.start_run(name, run_id, {"runner": "kfp.local", "run_dir": str(run_dir), "parameters": parameters})
    session = _RunSession(
        run_dir, verbose, on_step, cancel_grace_s, _display_names(spec), _StepRecorder(store, name, run_id)
    )
    started = time.monotonic()
    state, reason = "FAILED", ""
    try:
        with session.installed():
            fail_stack: list[str] = []
            _, dag_status = dag_orchestrator.run_dag(
                pipeline_resource_name=run_dir.name,
                dag_component_spec=spec.root,
                executors={k: utils.struct_to_executor_spec(v) for k, v in spec.deployment_spec["executors"].items()},
                components=dict(spec.components.items()),
                dag_arguments=args,
                pipeline_root=pipeline_root,
                runner=local_config.SubprocessRunner(use_venv=False),
                unique_pipeline_id=run_id,
                fail_stack=fail_stack,
            )
        if dag_status.name != "SUCCESS":
            step = session.steps[-1] if session.steps else None
            task = step.task if step else (fail_stack[0] if fail_stack else "?")
            error = step_error(Path(step.log).read_text(errors="replace")) if step else "no step ran"
            reason = f"step {task} failed: {error}"
            log = step.log if step else ""
            raise PipelineFailed(
                f"pipeline {name} failed at step {task}: {error} (full log: {log or '-'})", step=task, log=log
            )
        state = "COMPLETE"
    except RunCancelled as e:
        state, reason = "CANCELED", f"{e.message} during step {session.current or '-'}"
        e.step = session.current or ""
        raise
    except BaseException as e:
        reason = reason or f"{type(e).__name__}: {e}"
        raise
    finally:
        if store is not None:
            store.finish_run(run_id, state, reason)
        _publish_step_resources(name, session.steps, config, run_dir)
    return RunResult(name, run_id, str(run_dir), time.monotonic() - started, session.steps)


def _publish_step_resources(pipeline: str, steps: list[StepResult], config: PlatformConfig | None, run_dir: Path):
    """The run's step resources as Prometheus metrics (after the run, whatever its end); a failure
    to write them is one warning line, never the run's error."""
    from mlops import step_resources

    measured = {s.task: s.resources for s in steps if s.resources is not None}
    if not measured:
        return
    gateway = config.monitoring.pushgateway_url if config is not None else None
    try:
        step_resources.publish(pipeline, measured, gateway, str(run_dir / step_resources.METRICS_FILE))
    except (MlopsError, OSError) as e:
        print(f"step resources: not published: {e}", file=sys.stderr)


class _StepRecorder:
    """Puts a step's measured resources on the ML Metadata execution(s) it recorded: the ones of
    the run that are new or updated since the step started (steps run one at a time). A step that
    recorded none (resolve_config, a step that failed early) gets an execution named after it, so
    every step that ran has its numbers; a cancelled one gets nothing (its run records no results)."""

    def __init__(self, store, pipeline: str, run_id: str):
        self.store, self.pipeline, self.run_id = store, pipeline, run_id

    def before_step(self) -> dict[int, int]:
        return self.store.execution_update_times(self.run_id) if self.store is not None else {}

    def after_step(self, step: StepResult, before: dict[int, int]) -> None:
        if self.store is None or step.status == "cancelled" or step.resources is None:
            return
        from ml_metadata import errors as mlmd_errors

        properties = {"step": step.task, **step.resources.properties()}
        try:
            after = self.store.execution_update_times(self.run_id)
            recorded = [execution_id for execution_id, updated in after.items() if before.get(execution_id) != updated]
            for execution_id in recorded:
                self.store.update_execution_properties(execution_id, properties)
            if not recorded:
                failed = step.status == "failed"
                error = {"error": step_error(Path(step.log).read_text(errors="replace"))} if failed else {}
                run = self.store.run_context(self.pipeline, self.run_id)
                self.store.record_execution(
                    run, step.task, {}, {}, {**properties, **error}, state="FAILED" if failed else "COMPLETE"
                )
        except RunCancelled:
            raise
        except (MlopsError, mlmd_errors.StatusError, OSError) as e:
            # the numbers describe the step; the step's own result stands without them
            print(f"step resources of {step.task}: not recorded in ML Metadata: {e}", file=sys.stderr)


def step_error(log_text: str) -> str:
    """The error a step died of, from its log: the first line of the last Python traceback's
    exception, without the module path ("DatasetNotFound: no span 2013-02 ..."); else the last
    line of the log."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if starts:
        for line in lines[starts[-1] + 1 :]:
            if line.strip() and not line.startswith((" ", "\t")):
                head, sep, message = line.partition(": ")
                return f"{head.rsplit('.', 1)[-1]}{sep}{message}" if re.fullmatch(r"[\w.]+", head) else line
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1] if tail else "no output"


def _display_names(spec) -> dict[str, str]:
    """Component name -> the task's display name (set_display_name), for messages."""
    return {t.component_ref.name: t.task_info.name for t in spec.root.dag.tasks.values()}


# The reaper: a tiny process beside the driver, in its own session (no terminal signal reaches
# it), holding the read end of a pipe on which the driver registers (+PGID) and unregisters
# (-PGID) each step's process group. The pipe closes however the driver dies, SIGKILL included;
# the reaper then kills every group still registered, so no step outlives its run. A step's
# descendants (executor, TF workers, the serving env's Feast) all stay in the step's group.
_REAPER_CODE = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""
_CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _RunSession:
    """The hooks a local run installs into kfp.local for its duration (kfp.local has no API for
    them: it calls these module functions by name, so replacing the attributes is enough)."""

    def __init__(
        self,
        run_dir: Path,
        verbose: bool,
        on_step,
        cancel_grace_s: float,
        display_names: dict[str, str],
        recorder: _StepRecorder,
    ):
        self.run_dir, self.verbose, self.on_step = run_dir, verbose, on_step
        self.cancel_grace_s, self.display_names, self.recorder = cancel_grace_s, display_names, recorder
        self._usage = None  # os.wait4's rusage of the current step's process tree, once reaped
        self.steps: list[StepResult] = []
        self.current: str | None = None
        self._log = None  # the current step's log file
        self._process: subprocess.Popen | None = None
        self._reaper: subprocess.Popen | None = None
        self._cancelling = False

    @contextlib.contextmanager
    def installed(self):
        from kfp.local import logging_utils, subprocess_task_handler, task_dispatcher

        patches = [
            (subprocess_task_handler, "run_local_subprocess", self._run_process),
            (
                task_dispatcher,
                "run_single_task_implementation",
                self._task_wrapper(task_dispatcher.run_single_task_implementation),
            ),
            (logging_utils, "local_logger_context", self._logger_to_step_log),
            (logging_utils, "print_horizontal_line", lambda: None),
        ]
        saved = [(module, attr, getattr(module, attr)) for module, attr, _ in patches]
        handlers = {}
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER_CODE],
            stdin=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            # kfp.local warns on every step that the image is not a python:* image: here the image
            # is the pipeline environment itself, by design.
            warning_filters = warnings.catch_warnings()
            warning_filters.__enter__()
            warnings.filterwarnings("ignore", message="You may be attemp", category=RuntimeWarning)
            for module, attr, replacement in patches:
                setattr(module, attr, replacement)
            if _in_main_thread():
                for signum in _CANCEL_SIGNALS:
                    handlers[signum] = signal.signal(signum, self._cancel)
            yield self
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            for module, attr, original in saved:
                setattr(module, attr, original)
            warning_filters.__exit__(None, None, None)
            self._reaper.stdin.close()  # it kills whatever is still registered, then exits
            self._reaper.wait()

    def _cancel(self, signum, frame):
        if self._cancelling:  # a second signal: no more grace
            self._kill_group(signal.SIGKILL)
            return
        self._cancelling = True
        raise RunCancelled(signum)

    def _task_wrapper(self, run_task):
        from kfp.local import executor_input_utils

        def run_single_task(**kwargs):
            task = executor_input_utils.get_local_task_resource_name(kwargs["component_name"])
            log_path = self.run_dir / "logs" / f"{task}.log"
            self.current = task
            if self.on_step:
                self.on_step(task, None)
            recorded_before = self.recorder.before_step()
            self._usage = None
            started = time.monotonic()
            status = "failed"
            with open(log_path, "a", buffering=1) as self._log:
                try:
                    outputs, task_status = run_task(**kwargs)
                    if task_status.name == "SUCCESS":
                        status = "cache hit" if "[cache hit]" in log_path.read_text(errors="replace") else "ok"
                except RunCancelled:
                    status = "cancelled"
                    raise
                finally:
                    self._log = None
                    wall = time.monotonic() - started
                    result = StepResult(
                        task,
                        wall,
                        status,
                        str(log_path),
                        outputs if status not in ("failed", "cancelled") else {},
                        from_rusage(wall, self._usage) if self._usage else StepResources(wall),
                    )
                    self.steps.append(result)
                    self.recorder.after_step(result, recorded_before)
                    if self.on_step:
                        self.on_step(task, result)
            self.current = None
            return outputs, task_status

        return run_single_task

    @contextlib.contextmanager
    def _logger_to_step_log(self):
        """kfp.local's own lines about a task ("Executing task", its outputs) go to the task's log."""
        root = logging.getLogger()
        saved_level, saved_handlers = root.level, root.handlers[:]
        from kfp.local import logging_utils

        handler = logging.StreamHandler(self._log) if self._log else logging.NullHandler()
        # kfp.local's own format, so a step log reads (and parses, bench/pipeline.py) as its output did
        handler.setFormatter(
            logging_utils.MillisecondFormatter(fmt="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S.%f")
        )
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)

    def _run_process(self, full_command: list[str]) -> int:
        """Replaces kfp.local's run_local_subprocess: the same command, in its own process group
        (registered with the reaper), with a parent-death signal, output to the step's log."""
        from mlops.modeling.child import die_with_parent

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = process = subprocess.Popen(
            full_command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self._reaper.stdin.write(f"+{process.pid}\n")
        try:
            for line in process.stdout:
                self._log.write(line)
                if self.verbose:
                    sys.stderr.write(line)
            # Reaped with wait4 (not Popen.wait): its rusage is the step's process tree's CPU and
            # peak RSS. Setting returncode keeps Popen from waiting on the reaped pid again.
            _, wait_status, self._usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(wait_status)
            return process.returncode
        except BaseException:  # cancelled (or the driver failed): the step must not outlive it
            self._kill_group(signal.SIGTERM)
            try:
                process.wait(timeout=self.cancel_grace_s)
            except subprocess.TimeoutExpired:
                pass
            raise
        finally:
            self._kill_group(signal.SIGKILL)  # anything the step left behind in its group
            process.stdout.close()
            process.wait()
            self._process = None
            self._reaper.stdin.write(f"-{process.pid}\n")

    def _kill_group(self, signum: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
