"""Confidence and calibration metrics: correlations, AUROC, interval coverage (issue 10, item 3).

Numpy in, float out. The NaN rules, for every function: pairs where either value is NaN are
dropped first (``pearson``, ``spearman``, ``auroc``); a result that is undefined on what is
left (fewer than 2 pairs, a constant input, an empty class, no observations) is NaN, never an
exception, so a bench table can show a missing value instead of stopping.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pearson", "spearman", "auroc", "coverage", "average_ranks"]


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float64 copies of x and y with the pairs holding a NaN removed."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same number of values, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation r = sum (x - x_bar)(y - y_bar) / sqrt(sum (x - x_bar)^2 sum (y - y_bar)^2).

    Arguments:
        x, y: (N,) values (any shape, flattened; the same number of values).

    Returns:
        r in [-1, 1]; NaN when fewer than 2 pairs remain or either input is constant.
    """
    x, y = _paired(x, y)
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if denom == 0.0:
        return math.nan
    return float(np.clip(float(dx @ dy) / denom, -1.0, 1.0))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of x (N,), tied values sharing the mean of the ranks they span.

    Example: ``average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]``.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # start of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks (ties share ranks).

    Arguments:
        x, y: (N,) values (flattened; the same number of values).

    Returns:
        rho in [-1, 1]; NaN when fewer than 2 pairs remain or either input is constant.
    """
    x, y = _paired(x, y)
    if x.size < 2:
        return math.nan
    return pearson(average_ranks(x), average_ranks(y))


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve in its Mann-Whitney form: P(score_pos > score_neg), ties 1/2.

    AUROC = (sum over positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with average
    ranks over all scores: exactly the fraction of (positive, negative) pairs ordered correctly,
    a tie counting one half.

    Arguments:
        scores: (N,) higher means "more likely positive"; NaN scores are dropped.
        positives: (N,) bool (or 0/1) labels.

    Returns:
        AUROC in [0, 1] (0.5: no better than chance); NaN when either class is empty.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives).reshape(-1)
    if s.shape != pos.shape:
        raise ValueError(
            f"scores and positives must have the same number of values, got {s.size} and {pos.size}"
        )
    keep = ~np.isnan(s)
    s, pos = s[keep], pos[keep].astype(bool)
    n_pos = int(pos.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(average_ranks(s)[pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def coverage(inside: np.ndarray) -> tuple[float, float]:
    """Observed coverage of a predictive region and its binomial standard error.

    fraction = mean(inside), se = sqrt(fraction (1 - fraction) / N). For a region of level p
    and a calibrated predictor, fraction ~ p within about 2 sqrt(p (1 - p) / N).

    Arguments:
        inside: (...) bool, True where the truth lies inside the predicted region (flattened).

    Returns:
        (fraction, standard error); (NaN, NaN) when there are no observations.
    """
    flat = np.asarray(inside, dtype=bool).reshape(-1)
    if flat.size == 0:
        return math.nan, math.nan
    frac = float(flat.mean())
    return frac, math.sqrt(frac * (1.0 - frac) / flat.size)
