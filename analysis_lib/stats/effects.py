"""Effect sizes and percentile-bootstrap confidence intervals over seeds.

Small pure functions on float64 NumPy arrays; the table-building functions in
:mod:`analysis_lib.stats` call them once per (metric, layer, contrast) row. Every bootstrap takes
an explicit ``seed`` and builds its own ``np.random.default_rng(seed)``; no global RNG state is
read or advanced.

References:
    Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 13 (percentile interval).
    Lakens (2013), "Calculating and reporting effect sizes", Front. Psychol. 4:863 (d_z, g).
    Hedges & Olkin (1985), *Statistical Methods for Meta-Analysis*, ch. 5 (small-sample J).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as sps


def _check_bootstrap_args(n_boot: int, ci: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"invalid argument n_boot={n_boot!r}: must be an integer >= 1")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"invalid argument ci={ci!r}: must lie strictly between 0 and 1")


def _percentile_interval(replicates: np.ndarray, ci: float) -> tuple[float, float]:
    # nanquantile: a resample on which the statistic is undefined (e.g. a constant column for a
    # rank correlation) is dropped rather than poisoning the whole interval.
    finite = replicates[~np.isnan(replicates)]
    if finite.size == 0:
        return (np.nan, np.nan)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_ci(x, statistic: Callable = np.mean, *, n_boot: int = 2000, ci: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic(x)``, resampling rows of ``x``.

    Args:
        x: shape (n,) or (n, k); rows are the resampled units (e.g. per-seed differences, or
            (x, y) pairs for a correlation). Converted to float64.
        statistic: called as ``statistic(samples, axis=1)`` on all resamples at once, with
            ``samples`` of shape (n_boot, n) or (n_boot, n, k), returning shape (n_boot,). If it
            does not accept ``axis`` (TypeError) it is called once per resample instead.
        n_boot: number of bootstrap resamples.
        ci: coverage of the two-sided interval, e.g. 0.95.
        seed: seed of the ``np.random.default_rng`` that draws the resamples.

    Returns:
        ``(low, high)``: the ``(1-ci)/2`` and ``(1+ci)/2`` quantiles of the bootstrap
        replicates (resamples with an undefined, NaN statistic are ignored).

    Raises:
        ValueError: ``x`` is empty, ``n_boot < 1`` or ``ci`` not in (0, 1).

    Reference: Efron & Tibshirani (1993), ch. 13.
    """
    _check_bootstrap_args(n_boot, ci)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"invalid argument x of shape {x.shape}: needs at least one row")
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    samples = x[idx]  # (n_boot, n) or (n_boot, n, k)
    try:
        replicates = np.asarray(statistic(samples, axis=1), dtype=np.float64)
    except TypeError:
        replicates = np.array([statistic(s) for s in samples], dtype=np.float64)
    return _percentile_interval(replicates.reshape(n_boot), ci)


def bootstrap_diff_ci(treatment, baseline, *, n_boot: int = 2000, ci: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``mean(treatment) - mean(baseline)`` for independent groups.

    Each group is resampled separately (a stratified bootstrap), so group sizes stay fixed.

    Args:
        treatment: shape (n1,), one value per unit.
        baseline: shape (n2,), one value per unit.
        n_boot, ci, seed: as in :func:`bootstrap_ci`.

    Returns:
        ``(low, high)`` of the difference of means.

    Reference: Efron & Tibshirani (1993), ch. 8.3 (two-sample bootstrap).
    """
    _check_bootstrap_args(n_boot, ci)
    t = np.asarray(treatment, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if t.size == 0 or b.size == 0:
        raise ValueError("invalid arguments treatment/baseline: each needs at least one value")
    rng = np.random.default_rng(seed)
    t_means = t[rng.integers(0, t.size, size=(n_boot, t.size))].mean(axis=1)
    b_means = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(axis=1)
    return _percentile_interval(t_means - b_means, ci)


def cohens_dz(differences) -> float:
    """Cohen's d_z: mean of paired differences over their standard deviation (ddof=1).

    Args:
        differences: shape (n,), treatment minus baseline per unit.

    Returns:
        d_z, or NaN when n < 2 or the differences have zero spread.

    Reference: Lakens (2013), eq. 6.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return np.nan
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else np.nan


def hedges_g(treatment, baseline) -> float:
    """Hedges' g: difference of means over the pooled SD, times the small-sample correction J.

    ``g = J * (mean_t - mean_b) / s_pooled`` with ``J = 1 - 3 / (4 (n1 + n2) - 9)``.

    Args:
        treatment: shape (n1,).
        baseline: shape (n2,).

    Returns:
        g, or NaN when either group has fewer than 2 values or the pooled SD is zero.

    Reference: Hedges & Olkin (1985), ch. 5; Lakens (2013), eq. 4.
    """
    t = np.asarray(treatment, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    n1, n2 = t.size, b.size
    if n1 < 2 or n2 < 2:
        return np.nan
    pooled_var = ((n1 - 1) * t.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2)
    if pooled_var <= 0:
        return np.nan
    correction = 1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)
    return float(correction * (t.mean() - b.mean()) / np.sqrt(pooled_var))


def spearman_rho(xy, axis: int = 0) -> np.ndarray:
    """Spearman's rho of the two columns of ``xy``, vectorised over leading axes.

    Pearson correlation of average ranks, which is what ``scipy.stats.spearmanr`` computes.

    Args:
        xy: shape (..., n, 2); the last axis holds the paired (x, y) values.
        axis: the axis of length n along which observations lie (the one before last).

    Returns:
        rho with shape ``xy.shape[:-2]``; NaN where x or y is constant.

    Reference: Spearman (1904); scipy.stats.spearmanr.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if axis % xy.ndim != xy.ndim - 2:
        raise ValueError(f"invalid argument axis={axis!r}: observations must be the axis before "
                         f"the last (got shape {xy.shape})")
    ranks = sps.rankdata(xy, axis=-2)
    centred = ranks - ranks.mean(axis=-2, keepdims=True)
    cov = (centred[..., 0] * centred[..., 1]).sum(axis=-1)
    norm = np.sqrt((centred[..., 0] ** 2).sum(axis=-1) * (centred[..., 1] ** 2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, cov / norm, np.nan)


def mean_ci(df, by, *, value: str = "value", n_boot: int = 2000, ci: float = 0.95, seed: int = 0):
    """Mean of ``value`` per group with a percentile-bootstrap CI over the group's rows (seeds).

    Args:
        df: tidy frame, one row per replicate (e.g. per seed) and group.
        by: grouping columns, e.g. ``["lr", "metric"]``; NaN values are dropped before averaging.

    Returns:
        DataFrame with the ``by`` columns and ``mean, ci_low, ci_high, n``.
    """
    import pandas as pd

    rows = []
    for key, sub in df.dropna(subset=[value]).groupby(list(by), sort=False):
        x = sub[value].to_numpy(dtype=np.float64)
        low, high = bootstrap_ci(x, n_boot=n_boot, ci=ci, seed=seed) if len(x) > 1 else (np.nan, np.nan)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": x.mean(), "ci_low": low, "ci_high": high, "n": len(x)})
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])
