"""Online experiments: compare a challenger version with the champion on live, labelled traffic and
decide to promote it or roll it back (the promotion policy of the registry's aliases).

    evidence = collect(payload_rows, labels, traffic_records, champion="1", challenger="2")
    comparison = compare(evidence, score=binary_metrics, metric="error_rate")
    decision = decide(comparison, Policy())
    apply_decision(registry, "flights", decision)          # aliases: production / staging
    record_decision(store, "flights", decision, run_id)     # ML Metadata (pipeline environment)

Inputs are what the rollout produced: the model servers' payload logs (one row per prediction:
request_id, version, prediction; serving.payload_log), the labels that arrived later (request id
-> 0/1), and the splitter's traffic log (one record per routed call with its upstream latency;
serving.splitter). A request answered by both versions (shadow mode) is compared pairwise.

The metric comes from the caller as `score(labels, predictions) -> {"auc": ..., "binary_accuracy":
...}`: the Evaluator's binary_metrics, the platform's one definition of AUC (this core module may
not import components). `difference` is the challenger's improvement (AUC: challenger - champion;
error rate: champion - challenger), with a percentile bootstrap confidence interval.

Policy: promote when the challenger is not worse than the champion by more than `max_regression`
at the interval's lower bound, and its p99 latency is within `max_latency_ratio` of the champion's
(plus `latency_slack_ms`, for timer noise on small samples); otherwise roll back. Too few labelled
rows on either arm is Refused (no decision without evidence).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from mlops.errors import InvalidInput, Refused

PROMOTE, ROLLBACK = "promote", "rollback"
METRICS = {"auc": True, "error_rate": False}  # name -> higher is better
PRODUCTION, STAGING = "production", "staging"


class RolloutInputError(InvalidInput):
    """A rollout input (payload log, labels, traffic log, metric) is malformed."""


class NotEnoughEvidence(Refused):
    """Too few labelled predictions on an arm to decide."""


@dataclass
class ArmEvidence:
    version: str
    request_ids: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    latencies_ms: np.ndarray
    requests: int = 0  # routed calls answered (mirrors included)


@dataclass(frozen=True)
class ArmSummary:
    version: str
    requests: int
    labelled_rows: int
    metric: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@dataclass(frozen=True)
class Comparison:
    metric: str
    champion: ArmSummary
    challenger: ArmSummary
    difference: float  # the challenger's improvement (> 0: better)
    ci_low: float
    ci_high: float
    confidence: float
    paired: bool
    bootstrap_samples: int


@dataclass(frozen=True)
class Policy:
    metric: str = "auc"
    max_regression: float = 0.01
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 20.0
    min_labelled: int = 100
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Decision:
    action: str
    reasons: list[str]
    comparison: Comparison
    policy: Policy = field(default_factory=Policy)

    def to_json(self) -> dict:
        return {
            "action": self.action,
            "reasons": self.reasons,
            **asdict(self.comparison),
            "policy": asdict(self.policy),
        }


def _label_of(value) -> float:
    if isinstance(value, bool) or value in (0, 1):
        return float(value)
    raise RolloutInputError(f"labels: {value!r} is not a binary label (0/1)")


def collect(
    payload_rows,
    labels: Mapping[str, object],
    traffic: Iterable[Mapping],
    *,
    champion: str,
    challenger: str,
) -> dict[str, ArmEvidence]:
    """Per version: the labelled predictions (payload-log rows whose request id has a label) and
    the upstream latencies of its answered calls. `payload_rows` is a DataFrame (read_payload_logs)
    or any mapping of columns with request_id, version, prediction."""
    try:
        ids = [str(x) for x in payload_rows["request_id"]]
        versions = [str(x) for x in payload_rows["version"]]
        predictions = np.asarray(payload_rows["prediction"], dtype=np.float64)
    except KeyError as e:
        raise RolloutInputError(f"payload log: no column {e.args[0]!r}") from None
    arms = {}
    traffic = list(traffic)
    for version in (champion, challenger):
        keep = [i for i, (rid, v) in enumerate(zip(ids, versions)) if v == version and rid in labels]
        answered = [r for r in traffic if str(r.get("version")) == version and r.get("status") == 200]
        arms[version] = ArmEvidence(
            version=version,
            request_ids=[ids[i] for i in keep],
            labels=np.array([_label_of(labels[ids[i]]) for i in keep], dtype=np.float64),
            predictions=predictions[keep],
            latencies_ms=np.array([float(r["latency_ms"]) for r in answered], dtype=np.float64),
            requests=len(answered),
        )
    return arms


def metric_value(score: Callable, metric: str, labels: np.ndarray, predictions: np.ndarray) -> float | None:
    values = score(labels, predictions)
    if metric == "auc":
        return values.get("auc")
    accuracy = values.get("binary_accuracy")
    return None if accuracy is None else 1.0 - accuracy


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def compare(
    arms: Mapping[str, ArmEvidence], *, champion: str, challenger: str, score: Callable, policy: Policy = Policy()
) -> Comparison:
    """The challenger's improvement in `policy.metric` with a bootstrap confidence interval."""
    if policy.metric not in METRICS:
        raise RolloutInputError(f"metric: {policy.metric!r} is not one of {', '.join(METRICS)}")
    a, b = arms[champion], arms[challenger]
    for arm, role in ((a, "champion"), (b, "challenger")):
        if arm.labels.size < policy.min_labelled:
            raise NotEnoughEvidence(
                f"{role} version {arm.version}: {arm.labels.size} labelled predictions, "
                f"at least {policy.min_labelled} needed to decide"
            )
    sign = 1.0 if METRICS[policy.metric] else -1.0

    def improvement(ia: np.ndarray, ib: np.ndarray) -> float | None:
        va = metric_value(score, policy.metric, a.labels[ia], a.predictions[ia])
        vb = metric_value(score, policy.metric, b.labels[ib], b.predictions[ib])
        return None if va is None or vb is None else sign * (vb - va)

    # Shadow traffic: both versions answered the same requests, so resample requests (paired).
    common = sorted(set(a.request_ids) & set(b.request_ids))
    paired = len(common) >= policy.min_labelled
    if paired:
        pos_a = {r: i for i, r in enumerate(a.request_ids)}
        pos_b = {r: i for i, r in enumerate(b.request_ids)}
        base_a = np.array([pos_a[r] for r in common])
        base_b = np.array([pos_b[r] for r in common])
    else:
        base_a, base_b = np.arange(a.labels.size), np.arange(b.labels.size)
    point = improvement(base_a, base_b)
    if point is None:
        raise NotEnoughEvidence(f"{policy.metric} is undefined on the labelled rows (one class only)")
    rng = np.random.default_rng(policy.seed)
    samples = []
    for _ in range(policy.bootstrap_samples):
        if paired:
            pick = rng.integers(0, base_a.size, base_a.size)
            value = improvement(base_a[pick], base_b[pick])
        else:
            value = improvement(
                base_a[rng.integers(0, base_a.size, base_a.size)], base_b[rng.integers(0, base_b.size, base_b.size)]
            )
        if value is not None:
            samples.append(value)
    tail = (1.0 - policy.confidence) / 2 * 100
    low, high = (
        (float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))) if samples else (point, point)
    )

    def summary(arm: ArmEvidence, idx: np.ndarray) -> ArmSummary:
        return ArmSummary(
            version=arm.version,
            requests=arm.requests,
            labelled_rows=int(arm.labels.size),
            metric=metric_value(score, policy.metric, arm.labels[idx], arm.predictions[idx]),
            latency_p50_ms=_percentile(arm.latencies_ms, 50),
            latency_p99_ms=_percentile(arm.latencies_ms, 99),
        )

    return Comparison(
        metric=policy.metric,
        champion=summary(a, base_a),
        challenger=summary(b, base_b),
        difference=point,
        ci_low=low,
        ci_high=high,
        confidence=policy.confidence,
        paired=paired,
        bootstrap_samples=len(samples),
    )


def decide(comparison: Comparison, policy: Policy = Policy()) -> Decision:
    """Promote when the challenger is no worse (beyond the margin) and not slower; else roll back."""
    failures, passes = [], []
    c = comparison
    quality = (
        f"{c.metric} improvement {c.difference:+.4f} "
        f"({c.confidence:.0%} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], {'paired' if c.paired else 'unpaired'})"
    )
    if c.ci_low < -policy.max_regression:
        failures.append(f"{quality}: the lower bound is below -{policy.max_regression}")
    else:
        passes.append(f"{quality}: no regression beyond {policy.max_regression}")
    champ, chall = c.champion.latency_p99_ms, c.challenger.latency_p99_ms
    if champ is None or chall is None:
        failures.append("latency: no answered calls of one version in the traffic log")
    else:
        allowed = champ * policy.max_latency_ratio + policy.latency_slack_ms
        line = f"p99 latency {chall:.1f} ms vs champion {champ:.1f} ms (allowed {allowed:.1f} ms)"
        (failures if chall > allowed else passes).append(line)
    return Decision(ROLLBACK if failures else PROMOTE, failures or passes, comparison, policy)


def apply_decision(registry, name: str, decision: Decision, *, actor: str | None = None) -> dict:
    """Moves the aliases: promote -> production at the challenger; roll back -> production stays,
    staging goes back to its previous target (if it points at the challenger and has one)."""
    from mlops.registry.errors import NoRollbackTarget

    challenger = int(decision.comparison.challenger.version)
    reason = f"online comparison: {decision.reasons[0]}"
    if decision.action == PROMOTE:
        move = registry.promote(name, challenger, PRODUCTION, reason=reason, actor=actor)
        return {"alias": PRODUCTION, "from": move.from_version, "to": move.to_version}
    if registry.aliases(name).get(STAGING) == challenger:
        try:
            move = registry.rollback(name, STAGING, reason=reason, actor=actor)
            return {"alias": STAGING, "from": move.from_version, "to": move.to_version}
        except NoRollbackTarget:
            pass
    return {"alias": None}


def record_decision(store, name: str, decision: Decision, run_id: str, *, registry=None, evidence_uri: str) -> int:
    """The decision as an ML Metadata execution `online_comparison` of pipeline `rollout`: both
    versions' models in, the evidence (a ModelEvaluation) and the verdict (a ModelBlessing) out.
    `store` is a mlops.metadata.store.MetadataStore (pipeline environment). Returns the execution id."""
    from mlops.metadata.store import ArtifactRef

    c = decision.comparison

    def model(version: str) -> ArtifactRef:
        uri = registry.get(name, version).uri if registry is not None else f"{name}@{version}"
        return ArtifactRef("Model", uri, properties={"name": name, "version": version})

    evidence = json.dumps(decision.to_json(), sort_keys=True)
    outputs = {
        "evaluation": [
            ArtifactRef(
                "ModelEvaluation",
                evidence_uri,
                properties={"metrics": evidence, "baseline_version": c.champion.version},
            )
        ],
        "blessing": [
            ArtifactRef(
                "ModelBlessing",
                f"{evidence_uri}#blessing",
                properties={
                    "blessed": int(decision.action == PROMOTE),
                    "reason": "; ".join(decision.reasons)[:2000],
                    "baseline_version": c.champion.version,
                    "action": decision.action,
                },
            )
        ],
    }
    run = store.run_context("rollout", run_id)
    recorded = store.record_execution(
        run,
        "online_comparison",
        {"champion": [model(c.champion.version)], "challenger": [model(c.challenger.version)]},
        outputs,
        properties={"action": decision.action, "model": name},
    )
    return recorded.execution_id
