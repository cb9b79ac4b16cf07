"""Vectorised numeric building blocks shared by the fit and the generator (numpy only, no scipy):
the logistic link, the normal CDF, inverse-CDF lookups, alias-table sampling, AR(1) paths and
the smooth monthly curve."""

from __future__ import annotations

import math

import numpy as np


def logit(p):
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7), vectorised, no scipy."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def monthly_curve(table: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Smooth (piecewise linear, cyclic) curve through monthly values whose monthly averages are
    the table: knots solve 0.75 k[m] + 0.125 (k[m-1] + k[m+1]) = table[m]. table (..., 12)."""
    averaging = 0.75 * np.eye(12) + 0.125 * (np.roll(np.eye(12), 1, axis=1) + np.roll(np.eye(12), -1, axis=1))
    knots = np.linalg.solve(averaging, np.asarray(table, dtype=float).reshape(-1, 12).T).T.reshape(np.shape(table))
    i0 = np.floor(pos).astype(int)
    wgt = pos - i0
    return knots[..., i0 % 12] * (1 - wgt) + knots[..., (i0 + 1) % 12] * wgt


def interp_quantiles(probs: np.ndarray, table: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Inverse-CDF lookup: piecewise-linear quantile function given by knots (probs, table[row])."""
    idx = np.clip(np.searchsorted(probs, u, side="right") - 1, 0, len(probs) - 2)
    frac = (u - probs[idx]) / (probs[idx + 1] - probs[idx])
    if rows is None:
        lo, hi = table[idx], table[idx + 1]
    else:
        lo, hi = table[rows, idx], table[rows, idx + 1]
    return lo + frac * (hi - lo)


class AliasSampler:
    """Row-conditional categorical sampling with Walker/Vose alias tables: O(1) per draw, pure
    fancy indexing (no searchsorted over long cumulative tables). One uniform per draw: its
    integer part (times K) picks the column, its fractional part the alias coin."""

    def __init__(self, weights: list[list[float]]):
        k = max(max(len(w) for w in weights), 1)
        prob = np.zeros((len(weights), k))
        alias = np.zeros((len(weights), k), dtype=np.int64)
        for r, w in enumerate(weights):
            p = np.zeros(k)
            p[: len(w)] = np.asarray(w, dtype=float)
            if p.sum() <= 0:
                p[0] = 1.0
            p /= p.sum()
            q = p * k
            small = [i for i in range(k) if q[i] < 1.0]
            large = [i for i in range(k) if q[i] >= 1.0]
            row_p, row_a = np.ones(k), np.full(k, int(np.argmax(p)))
            while small and large:
                sm, lg = small.pop(), large.pop()
                row_p[sm], row_a[sm] = q[sm], lg
                q[lg] = q[lg] + q[sm] - 1.0
                (small if q[lg] < 1.0 else large).append(lg)
            row_p[p == 0] = 0.0  # never return an impossible value, whatever the rounding
            prob[r], alias[r] = row_p, row_a
        self.k = k
        self.prob = prob.ravel()
        self.alias = alias.ravel()

    def sample(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        x = u * self.k
        col = np.minimum(x.astype(np.int64), self.k - 1)
        flat = rows * self.k + col
        return np.where(x - col < self.prob[flat], col, self.alias[flat])


class QuantileKnots:
    """Inverse-CDF lookup for piecewise-linear quantile functions with fixed knot probabilities;
    the interval of u is found through a uniform lookup grid fine enough to hold <= 1 knot per
    cell (again no searchsorted on the hot path)."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=float)
        spacing = float(np.min(np.diff(self.probs)))
        self.g = int(min(max(math.ceil(2.0 / spacing), 16), 1 << 20))
        starts = np.arange(self.g) / self.g
        self.lut = np.clip(np.searchsorted(self.probs, starts, side="right") - 1, 0, len(self.probs) - 2)

    def interp(self, table: np.ndarray, u: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        i = self.lut[np.minimum((u * self.g).astype(np.int64), self.g - 1)]
        i = np.minimum(i + (u >= self.probs[i + 1]), len(self.probs) - 2)
        lo_p = self.probs[i]
        frac = (u - lo_p) / (self.probs[i + 1] - lo_p)
        if rows is None:
            lo, hi = table[i], table[i + 1]
        else:
            width = table.shape[1]
            flat = table.ravel()
            base = rows * width + i
            lo, hi = flat[base], flat[base + 1]
        return lo + frac * (hi - lo)


def ar1_paths(rng: np.random.Generator, phis, n_series: int, n_steps: int, block: int = 64) -> np.ndarray:
    """Stationary unit-variance AR(1) paths x_t = phi x_t-1 + sqrt(1 - phi^2) e_t, shape
    (len(phis), n_series, n_steps). Vectorised in blocks: inside a block the recursion is a
    triangular matrix product; only the carry between blocks is a (short) Python loop."""
    phis = np.asarray(phis, dtype=float)
    n_v = len(phis)
    shocks = rng.standard_normal((n_steps, n_v, n_series))
    e = shocks * np.sqrt(1.0 - phis * phis)[None, :, None]
    e[0] = shocks[0]  # x_0 ~ N(0, 1): stationary from the first hour
    n_b = -(-n_steps // block)
    e = np.concatenate([e, np.zeros((n_b * block - n_steps, n_v, n_series))]).reshape(n_b, block, n_v, n_series)
    k = np.arange(block)
    lag = k[:, None] - k[None, :]
    tri = np.where(lag >= 0, phis[:, None, None] ** np.maximum(lag, 0)[None], 0.0)  # [v, k, j] = phi^(k-j)
    within = np.einsum("vkj,bjvs->bkvs", tri, e)  # each block started from 0
    carry_pow = (phis[None, :] ** (k[:, None] + 1))[:, :, None]  # phi^(k+1)
    out = np.empty_like(within)
    prev = np.zeros((n_v, n_series))
    for b in range(n_b):
        out[b] = within[b] + carry_pow * prev[None]
        prev = out[b, -1]
    return np.ascontiguousarray(np.moveaxis(out.reshape(n_b * block, n_v, n_series)[:n_steps], 0, -1))
