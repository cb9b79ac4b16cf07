"""`mlops deploy`: render (and apply) the InferenceService of a registry version, canary/shadow
variants, promotion and rollback, and the online comparison that decides between them.

    mlops deploy NAME@VERSION [--overlay local-kind|production] [--canary-percent P | --shadow] [--apply]
    mlops deploy promote NAME     staging -> production, rendered at 100 %
    mlops deploy rollback NAME    production back to its previous version, rendered at 100 %
    mlops deploy evaluate NAME --challenger V --labels FILE --traffic-log FILE [--metric auc|error_rate]
                                  compare on labelled live traffic, record in ML Metadata, move aliases

Rendering is `kubectl kustomize` of a copy of manifests/overlays/<overlay> whose model-version.yaml
carries the version's storageUri (`mlops models show NAME@VERSION` -> uri). Variants:

* canary, production overlay (KServe Knative mode): `canaryTrafficPercent: P` on the predictor;
  KServe keeps the last fully rolled-out revision (the production version) for the rest.
* canary, local-kind overlay (KServe Standard mode has rolling updates only): InferenceService
  `flights` stays on the production version, `flights-canary` serves the new one, and an
  InferenceGraph `flights-split` (a Splitter node) weighs them 100-P : P.
* shadow (production overlay, Istio): `flights-shadow` serves the new version and an Istio
  VirtualService mirrors 100 % of the predictor's traffic to it; only `flights` answers.

`--apply` pipes the result to `kubectl apply -f -`; without it the YAML goes to stdout.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from cli.common import Group, config_option, emit_json, load_with_overrides, runs_in
from mlops import envs
from mlops.errors import InvalidInput, NotFound, Refused, Unavailable

MANIFESTS = envs.REPO_ROOT / "manifests"
OVERLAYS = ("local-kind", "production")
ISVC = "flights"  # the InferenceService the manifests define
ISTIO_VERSION = "networking.istio.io/v1"


class DeployInputError(InvalidInput):
    """A `mlops deploy` option or input is wrong."""


class KubectlFailed(Unavailable):
    """kubectl is missing or failed (rendering or applying)."""


def kubectl(args: list[str], stdin: str | None = None) -> str:
    if shutil.which("kubectl") is None:
        raise KubectlFailed("kubectl: not found on PATH (needed to render the kustomize overlays)")
    done = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise KubectlFailed(f"kubectl {' '.join(args[:2])}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def render_overlay(overlay: str, storage_uri: str) -> list[dict]:
    """The overlay rendered with `storage_uri` in its model-version.yaml (a copy; nothing is edited)."""
    if overlay not in OVERLAYS:
        raise DeployInputError(f"--overlay: {overlay!r} is not one of {', '.join(OVERLAYS)}")
    with tempfile.TemporaryDirectory(prefix="mlops-deploy-") as tmp:
        root = Path(tmp) / "manifests"
        shutil.copytree(MANIFESTS, root)
        version_file = root / "overlays" / overlay / "model-version.yaml"
        doc = yaml.safe_load(version_file.read_text())
        doc["data"]["storageUri"] = storage_uri
        version_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text("")
        old = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(kubeconfig)  # rendering never talks to a cluster
        try:
            out = kubectl(["kustomize", str(root / "overlays" / overlay)])
        finally:
            os.environ.pop("KUBECONFIG") if old is None else os.environ.__setitem__("KUBECONFIG", old)
    return [d for d in yaml.safe_load_all(out) if d]


def _isvc(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "InferenceService" and d["metadata"]["name"] == ISVC)


def _set_storage_uri(isvc: dict, uri: str) -> None:
    for container in isvc["spec"]["predictor"]["containers"]:
        for env in container.get("env", []):
            if env["name"] == "STORAGE_URI":
                env["value"] = uri


def _mark(isvc: dict, name: str, version: int) -> None:
    isvc["metadata"].setdefault("labels", {})["mlops.io/model"] = name
    isvc["metadata"]["labels"]["mlops.io/model-version"] = str(version)


def _copy_isvc(isvc: dict, suffix: str, uri: str, name: str, version: int) -> dict:
    other = copy.deepcopy(isvc)
    other["metadata"]["name"] = f"{ISVC}-{suffix}"
    _set_storage_uri(other, uri)
    _mark(other, name, version)
    args = other["spec"]["predictor"]["containers"][0]["args"]
    other["spec"]["predictor"]["containers"][0]["args"] = [
        f"--model_name={ISVC}-{suffix}" if a.startswith("--model_name=") else a for a in args
    ]
    return other


def render(
    overlay: str,
    *,
    name: str,
    version: int,
    uri: str,
    production: tuple[int, str] | None = None,
    canary_percent: int | None = None,
    shadow: bool = False,
) -> list[dict]:
    """The objects to apply for serving `version`, alone or beside the production version."""
    if canary_percent is not None and not 0 < canary_percent < 100:
        raise DeployInputError(f"--canary-percent: {canary_percent} is not within 1..99")
    if canary_percent is not None and shadow:
        raise DeployInputError("--canary-percent and --shadow: choose one")
    if (canary_percent is not None or shadow) and production is None:
        raise Refused(f"{name}: no production version to keep beside the new one; deploy it at 100 % first")
    if shadow and overlay != "production":
        raise DeployInputError("--shadow: the Istio mirror needs the serverless (Knative + Istio) production overlay")
    if canary_percent is None and not shadow:
        docs = render_overlay(overlay, uri)
        _mark(_isvc(docs), name, version)
        return docs
    stable_version, stable_uri = production
    if canary_percent is not None and overlay == "production":
        docs = render_overlay(overlay, uri)  # Knative keeps the last 100 % revision for the rest
        isvc = _isvc(docs)
        isvc["spec"]["predictor"]["canaryTrafficPercent"] = canary_percent
        _mark(isvc, name, version)
        isvc["metadata"]["labels"]["mlops.io/stable-version"] = str(stable_version)
        return docs
    docs = render_overlay(overlay, stable_uri)
    isvc = _isvc(docs)
    _mark(isvc, name, stable_version)
    namespace = isvc["metadata"]["namespace"]
    if shadow:
        other = _copy_isvc(isvc, "shadow", uri, name, version)
        host = f"{ISVC}-predictor.{namespace}.svc.cluster.local"
        mirror = {
            "apiVersion": ISTIO_VERSION,
            "kind": "VirtualService",
            "metadata": {"name": f"{ISVC}-shadow", "namespace": namespace},
            "spec": {
                "hosts": [host],
                "http": [
                    {
                        "route": [{"destination": {"host": host}, "weight": 100}],
                        "mirror": {"host": f"{ISVC}-shadow-predictor.{namespace}.svc.cluster.local"},
                        "mirrorPercentage": {"value": 100.0},
                    }
                ],
            },
        }
        return [*docs, other, mirror]
    other = _copy_isvc(isvc, "canary", uri, name, version)
    graph = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {
            "name": f"{ISVC}-split",
            "namespace": namespace,
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Splitter",
                    "steps": [
                        {"serviceName": ISVC, "name": "champion", "weight": 100 - canary_percent},
                        {"serviceName": other["metadata"]["name"], "name": "challenger", "weight": canary_percent},
                    ],
                }
            }
        },
    }
    return [*docs, other, graph]


def _registry(cfg):
    from mlops.registry.store import ModelRegistry

    return ModelRegistry.from_config(cfg)


def _production(registry, name: str) -> tuple[int, str] | None:
    version = registry.aliases(name).get("production")
    return None if version is None else (version, registry.get(name, version).uri)


def _output(docs: list[dict], apply: bool) -> None:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    if apply:
        click.echo(kubectl(["apply", "-f", "-"], stdin=text), nl=False)
    else:
        click.echo(text, nl=False)


class DeployGroup(Group):
    """`mlops deploy NAME@VERSION ...` renders; a first word that is a subcommand runs it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["render", *args]
        return super().parse_args(ctx, args)


@click.group("deploy", cls=DeployGroup)
def deploy():
    """Deploy a registry version as a KServe InferenceService (canary, shadow), promote or roll back.

    \b
    mlops deploy NAME@VERSION [--overlay local-kind|production] [--canary-percent P | --shadow] [--apply]
    mlops deploy promote NAME | rollback NAME
    mlops deploy evaluate NAME --challenger V --labels FILE --traffic-log FILE"""


overlay_option = click.option(
    "--overlay", type=click.Choice(OVERLAYS), default="local-kind", show_default=True, help="Kustomize overlay."
)
apply_option = click.option("--apply", is_flag=True, help="kubectl apply -f - instead of printing the YAML.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=JSON", help="Config override.")


@deploy.command("render")
@config_option
@click.argument("selector", metavar="NAME@VERSION")
@overlay_option
@click.option("--canary-percent", type=int, help="Keep production, route P % (1..99) to this version.")
@click.option("--shadow", is_flag=True, help="Keep production answering, mirror all traffic to this version.")
@apply_option
@set_option
def deploy_render(config_path, selector, overlay, canary_percent, shadow, apply, overrides):
    """Render the InferenceService (and canary/shadow objects) serving NAME@VERSION."""
    cfg = load_with_overrides(config_path, overrides)
    registry = _registry(cfg)
    target = registry.resolve(selector)
    production = _production(registry, target.name)
    if production is not None and production[0] == target.version and (canary_percent or shadow):
        raise click.BadParameter(f"{target.selector} is already production", param_hint="NAME@VERSION")
    docs = render(
        overlay,
        name=target.name,
        version=target.version,
        uri=target.uri,
        production=production,
        canary_percent=canary_percent,
        shadow=shadow,
    )
    _output(docs, apply)


@deploy.command("promote")
@config_option
@click.argument("name")
@overlay_option
@apply_option
@set_option
def deploy_promote(config_path, name, overlay, apply, overrides):
    """Point production at the staging version and render it at 100 %."""
    cfg = load_with_overrides(config_path, overrides)
    registry = _registry(cfg)
    staging = registry.aliases(name).get("staging")
    if staging is None:
        raise NotFound(f"{name}: no staging version to promote")
    registry.promote(name, staging, "production", reason="mlops deploy promote")
    target = registry.get(name, staging)
    _output(render(overlay, name=name, version=target.version, uri=target.uri), apply)


@deploy.command("rollback")
@config_option
@click.argument("name")
@overlay_option
@apply_option
@set_option
def deploy_rollback(config_path, name, overlay, apply, overrides):
    """Move production back to its previous version and render that at 100 %."""
    cfg = load_with_overrides(config_path, overrides)
    registry = _registry(cfg)
    move = registry.rollback(name, "production", reason="mlops deploy rollback")
    target = registry.get(name, move.to_version)
    _output(render(overlay, name=name, version=target.version, uri=target.uri), apply)


def read_labels(path: str) -> dict[str, int]:
    """Labels as JSON lines {"request_id": ..., "label": 0|1} (or one JSON object id -> label)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DeployInputError(f"--labels {path}: {e.strerror}") from None
    try:
        if text.lstrip().startswith("{") and "\n{" not in text.strip():
            return {str(k): v for k, v in json.loads(text).items()}
        return {str(r["request_id"]): r["label"] for r in map(json.loads, filter(str.strip, text.splitlines()))}
    except (ValueError, KeyError, TypeError) as e:
        raise DeployInputError(f"--labels {path}: not JSON lines with request_id and label ({e})") from None


def read_traffic_log(path: str) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DeployInputError(f"--traffic-log {path}: {e.strerror}") from None
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except ValueError as e:
        raise DeployInputError(f"--traffic-log {path}: not JSON lines ({e})") from None


@deploy.command("evaluate")
@config_option
@click.argument("name")
@click.option("--challenger", required=True, help="The new version (default champion: production).")
@click.option("--champion", help="Default: the production version.")
@click.option("--labels", "labels_path", required=True, help="JSON lines: request_id, label (0/1).")
@click.option("--traffic-log", "traffic_path", required=True, help="The splitter's --traffic-log file.")
@click.option("--payload-logs", help="Payload log root (default: the config's serving.payload_log root).")
@click.option("--metric", type=click.Choice(["auc", "error_rate"]), default="auc", show_default=True)
@click.option("--max-regression", type=float, default=0.01, show_default=True)
@click.option("--max-latency-ratio", type=float, default=1.5, show_default=True)
@click.option("--latency-slack-ms", type=float, default=20.0, show_default=True)
@click.option("--min-labelled", type=int, default=100, show_default=True)
@click.option("--run-id", help="ML Metadata run id of this decision (default: rollout-NAME-V-<time>).")
@click.option("--dry-run", is_flag=True, help="Decide and print; record nothing, move no alias.")
@set_option
@runs_in(envs.PIPELINE)
def deploy_evaluate(
    config_path,
    name,
    challenger,
    champion,
    labels_path,
    traffic_path,
    payload_logs,
    metric,
    max_regression,
    max_latency_ratio,
    latency_slack_ms,
    min_labelled,
    run_id,
    dry_run,
    overrides,
):
    """Compare the challenger with the champion on labelled live traffic; promote or roll back.

    Prints the decision and its evidence as JSON; records both in ML Metadata (pipeline
    `rollout`, execution `online_comparison`) and moves the aliases (promote: production ->
    challenger; roll back: staging back to its previous version)."""
    from mlops import rollout
    from serving.payload_log import read_payload_logs

    cfg = load_with_overrides(config_path, overrides)
    policy = rollout.Policy(
        metric=metric,
        max_regression=max_regression,
        max_latency_ratio=max_latency_ratio,
        latency_slack_ms=latency_slack_ms,
        min_labelled=min_labelled,
    )
    decision, result = evaluate_online(
        cfg,
        name,
        challenger=challenger,
        champion=champion,
        labels=read_labels(labels_path),
        traffic=read_traffic_log(traffic_path),
        payload_rows=read_payload_logs(payload_logs, name) if payload_logs else None,
        policy=policy,
        run_id=run_id,
        dry_run=dry_run,
    )
    emit_json(result)
    if decision.action == rollout.ROLLBACK:
        sys.exit(3)  # the command worked; the challenger did not pass (scripts branch on it)


def evaluate_online(
    cfg,
    name: str,
    *,
    challenger: str,
    champion: str | None,
    labels: dict,
    traffic: list[dict],
    payload_rows=None,
    policy=None,
    run_id: str | None = None,
    dry_run: bool = False,
):
    """The online comparison of `mlops deploy evaluate` (also what `mlops demo` runs): the payload
    logs (default: the config's) joined with `labels` and the splitter's `traffic`, compared and
    decided; unless `dry_run`, the decision is recorded in ML Metadata and the aliases move.
    Returns (decision, its JSON with the record's ids)."""
    import time

    from components.evaluator.executor import binary_metrics
    from mlops import rollout
    from mlops.config import join_uri
    from serving.payload_log import payload_log_root, read_payload_logs

    registry = _registry(cfg)
    policy = policy or rollout.Policy()
    champion = champion or str(registry.aliases(name).get("production") or "")
    if not champion:
        raise NotFound(f"{name}: no production version to compare with; pass --champion")
    champion, challenger = str(registry.get(name, champion).version), str(registry.get(name, challenger).version)
    rows = payload_rows if payload_rows is not None else read_payload_logs(payload_log_root(cfg), name)
    arms = rollout.collect(rows, labels, traffic, champion=champion, challenger=challenger)
    comparison = rollout.compare(arms, champion=champion, challenger=challenger, score=binary_metrics, policy=policy)
    decision = rollout.decide(comparison, policy)
    result = decision.to_json()
    if not dry_run:
        from mlops import storage
        from mlops.metadata.store import open_store

        run_id = run_id or f"rollout-{name}-{challenger}-{time.strftime('%Y%m%dT%H%M%S')}"
        evidence_uri = join_uri(cfg.artifact_root, "rollouts", name, run_id, "decision.json")
        storage.write_bytes_atomic(evidence_uri, json.dumps(result, indent=2, sort_keys=True).encode())
        result["execution_id"] = rollout.record_decision(
            open_store(cfg), name, decision, run_id, registry=registry, evidence_uri=evidence_uri
        )
        result["alias_move"] = rollout.apply_decision(registry, name, decision)
        result["run_id"], result["evidence_uri"] = run_id, evidence_uri
    return decision, result
