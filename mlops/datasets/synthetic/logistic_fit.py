"""Fitting the late and cancellation models, logit = a[carrier, hour] + a[cell] + weather . beta:
Newton's method on the one-hot cells, raking of the margins, and re-targeting the cell terms to
the synthetic weather."""

from __future__ import annotations

import numpy as np

from mlops.datasets.synthetic.numerics import logit, sigmoid


def fit_cell_logistic(
    cell: np.ndarray,
    n_cells: int,
    features: np.ndarray,
    y: np.ndarray,
    offset: np.ndarray | None = None,
    iters: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression logit = a[cell] + features @ b + offset by Newton's method, using the block
    structure of the one-hot cells (a diagonal block from bincounts), so a 330k-row fit costs a
    few milliseconds per iteration. Empty cells keep the overall level. Returns (a, b)."""
    n, k = features.shape
    off = np.zeros(n) if offset is None else offset
    a = np.full(n_cells, float(logit(np.clip(y.mean(), 1e-4, 1 - 1e-4)) - off.mean()))
    b = np.zeros(k)
    damp = 1e-6 * np.eye(n_cells + k)
    for _ in range(iters):
        p = sigmoid(a[cell] + features @ b + off)
        w = p * (1 - p)
        r = y - p
        grad = np.concatenate([np.bincount(cell, r, minlength=n_cells), features.T @ r])
        h_ab = np.column_stack([np.bincount(cell, w * features[:, j], minlength=n_cells) for j in range(k)])
        hess = (
            np.block(
                [
                    [np.diag(np.bincount(cell, w, minlength=n_cells)), h_ab],
                    [h_ab.T, features.T @ (features * w[:, None])],
                ]
            )
            + damp
        )
        step = np.clip(np.linalg.solve(hess, grad), -5, 5)
        a += step[:n_cells]
        b += step[n_cells:]
        if np.max(np.abs(step)) < 1e-6:
            break
    return a, b


def rake_to_margins(
    y: np.ndarray,
    fixed: np.ndarray,
    off: np.ndarray,
    ci: np.ndarray,
    hi: np.ndarray,
    cell_a: np.ndarray,
    cell: np.ndarray,
    sweeps: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Backfitting of logit = off[c, h] + cell_a[cell] + fixed: one Newton step per level and
    margin per sweep until every carrier's, hour's and cell's predicted late count equals the
    observed count. Returns the raked (off, cell_a)."""
    off, cell_a = off.copy(), cell_a.copy()

    def step(idx: np.ndarray, n: int) -> np.ndarray:
        p = sigmoid(off[ci, hi] + cell_a[cell] + fixed)
        num = np.bincount(idx, y - p, minlength=n)
        den = np.bincount(idx, p * (1 - p), minlength=n)
        return np.clip(np.where(den > 1e-9, num / np.maximum(den, 1e-9), 0.0), -2.0, 2.0)

    for _ in range(sweeps):
        d_c = step(ci, off.shape[0])
        off += d_c[:, None]
        d_h = step(hi, off.shape[1])
        off += d_h[None, :]
        d_g = step(cell, len(cell_a))
        cell_a += d_g
        if max(np.abs(d_c).max(), np.abs(d_h).max(), np.abs(d_g).max()) < 1e-5:
            break
    return off, cell_a


def retarget_cells(
    y: np.ndarray, fixed: np.ndarray, cell_a: np.ndarray, cell: np.ndarray, weather: np.ndarray, iters: int = 8
) -> np.ndarray:
    """Newton steps on the cell terms until, averaged over the weather paths (rows of `weather`),
    the expected count of every cell equals the observed count."""
    cell_a = cell_a.copy()
    n = len(cell_a)
    target = np.bincount(cell, y, minlength=n)
    for _ in range(iters):
        p = sigmoid(cell_a[cell][None, :] + fixed[None, :] + weather)
        got = np.bincount(cell, p.mean(0), minlength=n)
        slope = np.bincount(cell, (p * (1 - p)).mean(0), minlength=n)
        step = np.clip(np.where(slope > 1e-9, (target - got) / np.maximum(slope, 1e-9), 0.0), -2.0, 2.0)
        cell_a += step
        if np.abs(step).max() < 1e-5:
            break
    return cell_a
