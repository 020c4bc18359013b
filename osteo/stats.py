"""Statistics for comparing classifiers on a shared test set (plain functions on arrays).

``y``: labels 0/1, shape (n,); scores/probabilities of class 1, shape (n,) or (k, n).
DeLong's AUC covariance uses the fast midrank algorithm of Sun & Xu (2014).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks (1-based) with ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks = np.empty(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks
    return out


def delong_cov(y: Sequence[int], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) for ``scores`` of shape (k, n)."""
    y = np.asarray(y).astype(int)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both classes in y")
    k = s.shape[0]
    tx, ty, tz = np.empty((k, m)), np.empty((k, n)), np.empty((k, m + n))
    for r in range(k):
        tx[r], ty[r] = _midrank(pos[r]), _midrank(neg[r])
        tz[r] = _midrank(np.concatenate([pos[r], neg[r]]))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.atleast_2d(np.cov(v01))
    sy = np.atleast_2d(np.cov(v10))
    return aucs, sx / m + sy / n


def delong_ci(y: Sequence[int], p: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, lower, upper): DeLong's normal-approximation confidence interval, clipped to [0, 1]."""
    auc, cov = delong_cov(y, np.asarray(p)[None])
    se = float(np.sqrt(cov[0, 0]))
    z = stats.norm.ppf(0.5 + level / 2)
    return float(auc[0]), max(0.0, float(auc[0]) - z * se), min(1.0, float(auc[0]) + z * se)


def delong_paired(y: Sequence[int], p1: Sequence[float], p2: Sequence[float]) -> dict[str, float]:
    """DeLong's test of AUC(p1) = AUC(p2) on the same cases: AUCs, difference, z, two-sided p."""
    aucs, cov = delong_cov(y, np.vstack([p1, p2]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        return {"auc1": float(aucs[0]), "auc2": float(aucs[1]), "diff": diff, "z": 0.0,
                "p": 1.0 if diff == 0 else 0.0}
    z = diff / np.sqrt(var)
    return {"auc1": float(aucs[0]), "auc2": float(aucs[1]), "diff": diff, "z": float(z),
            "p": float(2 * stats.norm.sf(abs(z)))}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def calibration_bins(y: Sequence[int], p: Sequence[float], n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins of predicted probability: count, mean confidence, observed rate (n_bins,)."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        rate = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": conf, "observed": rate}


def expected_calibration_error(y: Sequence[int], p: Sequence[float], n_bins: int = 10) -> float:
    """ECE: sum over bins of (bin share) x |observed rate - mean confidence|."""
    b = calibration_bins(y, p, n_bins)
    ok = b["count"] > 0
    return float(np.sum(b["count"][ok] / b["count"].sum() * np.abs(b["observed"][ok] - b["confidence"][ok])))


def threshold_for_sensitivity(y: Sequence[int], p: Sequence[float], target: float = 0.9) -> float:
    """The highest threshold whose sensitivity (p >= t among positives) reaches ``target``."""
    pos = np.sort(np.asarray(p, float)[np.asarray(y) == 1])[::-1]
    if len(pos) == 0:
        return float("nan")
    k = int(np.ceil(target * len(pos))) - 1
    return float(pos[max(k, 0)])


def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None):
    """Mean and SD of TPR over folds on a common FPR grid (TPR 0 at FPR 0, 1 at FPR 1).

    ``curves``: per fold (fpr, tpr). Returns (grid (g,), mean (g,), sd (g,)).
    """
    grid = np.linspace(0, 1, 101) if grid is None else grid
    tprs = []
    for fpr, tpr in curves:
        t = np.interp(grid, fpr, tpr)
        t[0] = 0.0
        tprs.append(t)
    tprs = np.array(tprs)
    mean = tprs.mean(axis=0)
    mean[-1] = 1.0
    return grid, mean, tprs.std(axis=0)


def mean_pr(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray | None = None):
    """Mean and SD of precision over folds on a common recall grid; ``curves``: (recall, precision)."""
    grid = np.linspace(0, 1, 101) if grid is None else grid
    precs = []
    for rec, prec in curves:
        order = np.argsort(rec)
        precs.append(np.interp(grid, np.asarray(rec)[order], np.asarray(prec)[order]))
    precs = np.array(precs)
    return grid, precs.mean(axis=0), precs.std(axis=0)
