"""Univariate drift of one feature between a reference sample and a window, with an effect size
beside a p-value (NumPy/SciPy only: the default, permissively licensed detector).

On a window of 10,000 rows a two-sample test flags differences nobody cares about (p ~ 0 for a
0.02-sd shift), and on 50 rows it misses real ones. So a feature is `drifted` when its EFFECT SIZE
is above the threshold AND its p-value is below the guard:
  * numeric: Wasserstein distance normalised by the reference's standard deviation (how far, in
    reference sds, mass has to move), guarded by the two-sample Kolmogorov-Smirnov test;
  * categorical: Jensen-Shannon distance (base 2, in [0, 1]) of the category shares, guarded by a
    chi-square test of the 2 x K contingency table; PSI is reported beside it (the usual
    0.1 / 0.25 rules of thumb read it).
Missing values (NaN, None, "") are left out here: they are data quality, measured separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NUMERIC, CATEGORICAL = "numeric", "categorical"
PSI_EPSILON = 1e-4  # share given to a category absent on one side (PSI is infinite otherwise)


@dataclass(frozen=True)
class Drift:
    feature: str
    kind: str  # numeric | categorical
    effect_name: str  # wasserstein_norm | jensen_shannon
    effect: float | None  # None: not assessed (a side has no values)
    threshold: float
    test: str  # ks | chi2
    statistic: float | None
    p_value: float | None
    drifted: bool
    reference_values: int
    window_values: int
    psi: float | None = None
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def present_numeric(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    return x[np.isfinite(x)]


def missing_categorical(values) -> np.ndarray:
    """Which values are missing: None, NaN or "" (vectorised: a million values in milliseconds)."""
    import pandas as pd

    x = np.asarray(values, dtype=object).reshape(-1)
    missing = pd.isna(x)
    missing[~missing] = x[~missing] == ""
    return missing


def present_categorical(values) -> np.ndarray:
    x = np.asarray(values, dtype=object).reshape(-1)
    return x[~missing_categorical(x)].astype(str)


def normalised_wasserstein(reference: np.ndarray, window: np.ndarray) -> float:
    """Wasserstein-1 distance / the reference's std (its IQR/1.349, then 1, when the std is 0)."""
    from scipy.stats import wasserstein_distance

    scale = float(np.std(reference))
    if scale <= 0:
        q75, q25 = np.percentile(reference, [75, 25])
        scale = float(q75 - q25) / 1.349 or 1.0
    return float(wasserstein_distance(reference, window)) / scale


def not_assessed(name: str, kind: str, threshold: float, reference_values: int, window_values: int) -> Drift:
    """The result of a feature with too few present values on one side: no effect, not drifted."""
    numeric = kind == NUMERIC
    return Drift(
        name,
        kind,
        "wasserstein_norm" if numeric else "jensen_shannon",
        None,
        threshold,
        "ks" if numeric else "chi2",
        None,
        None,
        False,
        int(reference_values),
        int(window_values),
        note="not assessed: no values on one side",
    )


def numeric_drift(name: str, reference, window, threshold: float, p_value: float, min_values: int = 1) -> Drift:
    from scipy.stats import ks_2samp

    ref, cur = present_numeric(reference), present_numeric(window)
    if min(ref.size, cur.size) < min_values:
        return not_assessed(name, NUMERIC, threshold, ref.size, cur.size)
    effect = normalised_wasserstein(ref, cur)
    ks = ks_2samp(ref, cur, method="asymp")
    drifted = effect > threshold and float(ks.pvalue) < p_value
    return Drift(
        name,
        NUMERIC,
        "wasserstein_norm",
        effect,
        threshold,
        "ks",
        float(ks.statistic),
        float(ks.pvalue),
        drifted,
        int(ref.size),
        int(cur.size),
    )


def value_counts(values) -> dict[str, int]:
    """Present categorical values -> how often each occurs (present_categorical's rule for missing)."""
    categories, counts = np.unique(present_categorical(values), return_counts=True)
    return dict(zip(categories.tolist(), counts.tolist()))


def aligned_counts(reference: dict[str, int], window: dict[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, reference counts, window counts) over the union of both sides' categories, sorted."""
    categories = sorted(set(reference) | set(window))
    r = np.array([reference.get(c, 0) for c in categories], dtype=np.float64)
    c = np.array([window.get(v, 0) for v in categories], dtype=np.float64)
    return categories, r, c


def category_counts(reference: np.ndarray, window: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, reference counts, window counts) of two arrays of values."""
    return aligned_counts(value_counts(reference), value_counts(window))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index of window shares q against reference shares p."""
    ps = np.maximum(p / p.sum(), PSI_EPSILON)
    qs = np.maximum(q / q.sum(), PSI_EPSILON)
    return float(np.sum((qs - ps) * np.log(qs / ps)))


def categorical_drift(name: str, reference, window, threshold: float, p_value: float, min_values: int = 1) -> Drift:
    return categorical_drift_of_counts(
        name, value_counts(reference), value_counts(window), threshold, p_value, min_values
    )


def categorical_drift_of_counts(
    name: str, reference: dict[str, int], window: dict[str, int], threshold: float, p_value: float, min_values: int = 1
) -> Drift:
    """Categorical drift from the category counts of both sides (a window counted chunk by chunk)."""
    from scipy.stats import chi2_contingency

    _, r, c = aligned_counts(reference, window)
    ref_n, cur_n = int(r.sum()), int(c.sum())
    if min(ref_n, cur_n) < min_values:
        return not_assessed(name, CATEGORICAL, threshold, ref_n, cur_n)
    effect = jensen_shannon(r, c)
    if r.size < 2:
        statistic, p = 0.0, 1.0  # one category on both sides: nothing can differ
    else:
        chi = chi2_contingency(np.vstack([r, c]), correction=False)
        statistic, p = float(chi.statistic), float(chi.pvalue)
    drifted = effect > threshold and p < p_value
    return Drift(
        name,
        CATEGORICAL,
        "jensen_shannon",
        effect,
        threshold,
        "chi2",
        statistic,
        p,
        drifted,
        ref_n,
        cur_n,
        psi=psi(r, c),
    )


def feature_drift(
    reference,
    window,
    kinds: dict[str, str],
    *,
    numeric_threshold: float,
    categorical_threshold: float,
    p_value: float,
) -> list[Drift]:
    """Drift of every feature in `kinds` (name -> numeric|categorical) between two frames."""
    out = []
    for name, kind in kinds.items():
        if kind == NUMERIC:
            out.append(numeric_drift(name, reference[name], window[name], numeric_threshold, p_value))
        else:
            out.append(categorical_drift(name, reference[name], window[name], categorical_threshold, p_value))
    return out
