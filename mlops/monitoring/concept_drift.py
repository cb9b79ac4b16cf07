"""Concept drift: a sequential test on a model's error stream, once labels have arrived.

Data drift compares inputs; concept drift is a change in how the label follows from the inputs,
and it shows as a change in the model's error rate. DDM (Gama et al., "Learning with Drift
Detection", 2004) watches a stream of 0/1 errors (prediction on the wrong side of the decision
threshold): after i errors with rate p_i and standard deviation s_i = sqrt(p_i (1 - p_i) / i), it
keeps the point where p + s was lowest (p_min, s_min) and signals
    a warning when p_i + s_i >= p_min + warning_level * s_min,
    a drift   when p_i + s_i >= p_min + drift_level   * s_min,
then starts afresh from the next error (the new concept). Nothing is tested before `min_samples`
errors (the normal approximation needs them). p_i is Laplace-smoothed ((errors + 1) / (i + 2)):
with the raw rate an error-free start gives s_min = 0, and then any later error is a "drift".
One pass in plain Python, constant work per error (a window's stream is at most a few million).

Every detector takes a sequence of errors and returns a ConceptDriftResult (one interface, so
another detector, e.g. alibi-detect's online detectors, can stand beside DDM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# The paper's levels (2 and 3 standard deviations, 30 errors before testing) signal a false drift
# on about one stable stream in five of 2,000-4,000 errors at a 10% error rate (the running
# minimum p + s is an optimistic outlier on long streams). Measured on 80 synthetic streams
# (tests/unit/test_concept_drift.py's generator): these levels gave no false alarm and found a
# 10% -> 30% change within 500 errors every time.
WARNING_LEVEL, DRIFT_LEVEL, MIN_SAMPLES = 3.5, 4.5, 300


@dataclass
class ConceptDriftResult:
    method: str
    samples: int
    error_rate: float | None
    changes: list[int] = field(default_factory=list)  # stream positions where a drift was signalled
    warnings: list[int] = field(default_factory=list)  # first position of each warning zone
    parameters: dict = field(default_factory=dict)

    @property
    def detected(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict:
        return {**asdict(self), "detected": self.detected}


class DDM:
    """Drift Detection Method on a 0/1 error stream (see the module doc)."""

    method = "ddm"

    def __init__(
        self, *, warning_level: float = WARNING_LEVEL, drift_level: float = DRIFT_LEVEL, min_samples: int = MIN_SAMPLES
    ):
        if not 0 < warning_level < drift_level:
            raise ValueError("DDM: need 0 < warning_level < drift_level")
        self.warning_level, self.drift_level, self.min_samples = warning_level, drift_level, min_samples

    def run(self, errors: Sequence[float]) -> ConceptDriftResult:
        changes, warnings = [], []
        n = errors_seen = 0
        p_min = s_min = math.inf
        in_warning = False
        total = 0.0
        for position, error in enumerate(errors):
            e = float(error)
            total += e
            n += 1
            errors_seen += e
            p = (errors_seen + 1.0) / (n + 2.0)  # Laplace: after an error-free start s_min > 0
            s = math.sqrt(p * (1.0 - p) / n)
            if n < self.min_samples:
                continue
            if p + s < p_min + s_min:
                p_min, s_min = p, s
            if p + s >= p_min + self.drift_level * s_min:
                changes.append(position)
                n = errors_seen = 0  # the new concept starts after this error
                p_min = s_min = math.inf
                in_warning = False
            elif p + s >= p_min + self.warning_level * s_min:
                if not in_warning:
                    warnings.append(position)
                in_warning = True
            else:
                in_warning = False
        count = len(errors)
        return ConceptDriftResult(
            method=self.method,
            samples=count,
            error_rate=total / count if count else None,
            changes=changes,
            warnings=warnings,
            parameters={
                "warning_level": self.warning_level,
                "drift_level": self.drift_level,
                "min_samples": self.min_samples,
            },
        )
