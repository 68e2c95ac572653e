"""Separation and effect sizes over a two-level design (seeds, then examples within a seed).

In a design where many examples share one model and the same examples recur in every seed,
examples are neither independent nor nested in the usual sense; a per-seed statistic over
examples averaged over seeds, with a two-level bootstrap (seeds, then examples within each
seed) for its interval, respects both levels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps


def auroc(negative, positive) -> np.ndarray:
    """Area under the ROC curve of a score that should be larger for ``positive`` examples.

    The Mann-Whitney form: the share of (negative, positive) pairs ranked correctly, ties
    counting one half. Vectorised over leading axes.

    Args:
        negative: (..., n0) scores. positive: (..., n1) scores.

    Returns:
        (...) AUROC in [0, 1]; 0.5 = no separation.
    """
    neg, pos = np.asarray(negative, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    n0, n1 = neg.shape[-1], pos.shape[-1]
    ranks = sps.rankdata(np.concatenate([neg, pos], axis=-1), axis=-1)  # average ranks for ties
    return (ranks[..., n0:].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def paired_dz(differences: np.ndarray) -> np.ndarray:
    """Cohen's d_z over the problem axis: (..., n, k) paired differences -> (..., k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return differences.mean(axis=-2) / differences.std(axis=-2, ddof=1)


def hierarchical_bootstrap(groups: Sequence[np.ndarray], statistic: Callable, *, n_boot: int, ci: float = 0.95,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean over groups (seeds) of a per-group statistic, with a two-level percentile bootstrap CI.

    Each replicate resamples the groups with replacement and, within each, its rows (problems,
    kept paired across columns); a statistic undefined on a resample (NaN) is ignored.

    Args:
        groups: S arrays of shape (n_s, k). statistic: maps (..., n, k) to (..., m).
        n_boot, ci, seed: replicates, coverage, seed of the ``np.random.default_rng``.

    Returns:
        (estimate (m,), ci_low (m,), ci_high (m,), per-group values (S, m)).
    """
    per_group = np.stack([statistic(np.asarray(g, dtype=np.float64)) for g in groups])  # (S, m)
    rng = np.random.default_rng(seed)
    reps = np.stack([statistic(np.asarray(g, dtype=np.float64)[rng.integers(0, len(g), (n_boot, len(g)))])
                     for g in groups])  # (S, n_boot, m)
    pick = rng.integers(0, len(groups), (n_boot, len(groups)))  # (n_boot, S)
    boot = reps[pick, np.arange(n_boot)[:, None]].mean(axis=1)  # (n_boot, m)
    alpha = (1 - ci) / 2
    low, high = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
    return per_group.mean(axis=0), low, high, per_group
