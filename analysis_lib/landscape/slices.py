"""Sharpness and roughness of 1-D loss slices, with uncertainty across random directions.

A slice is L(α) = L(θ₀ + α d) on a uniform grid that contains α = 0 (the rows with β = 0 of a
tidy surface table, :data:`analysis_lib.landscape.surfaces.SURFACE_COLUMNS`). For each slice:

- ``curvature``: 2c of the least-squares quadratic a + bα + cα² over |α| ≤ ``fit_fraction`` ×
  the slice's half-width: the directional second derivative dᵀHd at the centre for a smooth
  slice (exact for a quadratic).
- ``second_difference``: (L(h) − 2 L(0) + L(−h)) / h² with h the grid step; the same quantity
  from the three central points only (noisier, no smoothing).
- ``rise``: (L(r) + L(−r)) / 2 − L(0), the loss increase at radius r (``rise_fraction`` × the
  slice's half-width, default its end points; linear interpolation between grid points).
  Keskar et al. 2017's sharpness is the worst case of this over a ball; here it is the average
  over two signs and over the sampled directions.
- ``roughness``: the excess total variation, Σ|L_{i+1} − L_i| / ((L_first − L_min) +
  (L_last − L_min)) − 1. It is 0 for any slice that falls monotonically to its minimum and rises
  monotonically after it (a bowl, quadratic or not) and grows with every extra bump: each local
  maximum of height δ above its neighbouring minima adds 2δ to the numerator. NaN for a flat slice;
  values within 1e-12 of 0 (the round-off of a bowl's sums) are reported as exactly 0.

Directions are random, so each summary is a Monte-Carlo estimate: :func:`summary_table` reports
its mean over directions with a bootstrap CI (:func:`analysis_lib.stats.effects.mean_ci`); a difference between
conditions smaller than that spread is not a finding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats.effects import mean_ci

SUMMARIES = ("curvature", "second_difference", "rise", "roughness")
_SURFACE_VALUES = ("alpha", "beta", "metric", "value")


def _slice_summary(alpha: np.ndarray, loss: np.ndarray, fit_radius: float, radius: float) -> dict:
    """The four summaries of one slice; ``alpha`` sorted ascending, uniform, containing 0."""
    steps = np.diff(alpha)
    h = steps.mean()
    if len(alpha) < 3 or not np.allclose(steps, h, rtol=1e-6, atol=0):
        raise ValueError(f"a slice needs >= 3 uniformly spaced alphas, got {alpha.tolist()}")
    zero = np.flatnonzero(np.isclose(alpha, 0.0, atol=1e-9 * h))
    if zero.size != 1 or zero[0] in (0, len(alpha) - 1):
        raise ValueError(f"a slice needs alpha = 0 strictly inside its grid, got {alpha.tolist()}")
    i0, l0 = zero[0], loss[zero[0]]
    window = np.abs(alpha) <= fit_radius + 1e-9 * h
    if window.sum() < 3:
        raise ValueError(f"fit_radius={fit_radius} leaves {window.sum()} points; needs >= 3")
    c2 = np.polyfit(alpha[window], loss[window], 2)[0]
    rise = (np.interp(radius, alpha, loss) + np.interp(-radius, alpha, loss)) / 2 - l0
    span = (loss[0] - loss.min()) + (loss[-1] - loss.min())
    excess = np.abs(np.diff(loss)).sum() / span - 1 if span > 0 else np.nan
    return {"curvature": 2 * c2, "second_difference": (loss[i0 + 1] - 2 * l0 + loss[i0 - 1]) / h**2,
            "rise": rise, "roughness": excess if not abs(excess) < 1e-12 else 0.0}  # round-off of a bowl


def slice_summaries(surfaces: pd.DataFrame, *, metric: str = "loss", fit_fraction: float = 0.25,
                    rise_fraction: float = 1.0) -> pd.DataFrame:
    """:data:`SUMMARIES` of every 1-D slice (β = 0 rows) of a tidy surface table.

    Args:
        surfaces: tidy frame with ``alpha, beta, metric, value`` plus label columns (``run_id,
            direction_seed, split``, conditions, normalisation); one slice per combination.
        metric: which surface metric to summarise (``"loss"``; ``"acc"`` works too).
        fit_fraction: half-width of the quadratic fit window as a fraction of the slice's
            largest |α| (at least the three central points are used).
        rise_fraction: where ``rise`` is read, as a fraction of the slice's largest |α|.

    Returns:
        Tidy frame: the label columns, then ``metric`` (a summary name) and ``value``; empty
        when ``surfaces`` is (ValueError when it has rows but none of ``metric`` at β = 0).
    """
    if not (0 < fit_fraction <= 1 and 0 < rise_fraction <= 1):
        raise ValueError(f"invalid arguments fit_fraction={fit_fraction}, rise_fraction={rise_fraction}: "
                         "each must lie in (0, 1]")
    labels = [c for c in surfaces.columns if c not in _SURFACE_VALUES]
    sub = surfaces[(surfaces["metric"] == metric) & (surfaces["beta"] == 0)]
    if sub.empty and not surfaces.empty:
        raise ValueError(f"no slice rows with metric={metric!r} and beta == 0")
    rows = []  # no surfaces at all (e.g. every run diverged): no summaries
    for key, one in sub.groupby(labels, sort=False, dropna=False):
        one = one.sort_values("alpha")
        alpha, loss = one["alpha"].to_numpy(np.float64), one["value"].to_numpy(np.float64)
        half = np.abs(alpha).max()
        step = np.diff(alpha).mean() if len(alpha) > 1 else 0.0
        summary = _slice_summary(alpha, loss, max(fit_fraction * half, step), rise_fraction * half)
        key = key if isinstance(key, tuple) else (key,)
        rows.extend({**dict(zip(labels, key)), "metric": name, "value": summary[name]} for name in SUMMARIES)
    return pd.DataFrame(rows, columns=[*labels, "metric", "value"])


def summary_table(summaries: pd.DataFrame, *, over: str = "direction_seed", n_boot: int = 2000,
                  ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean of each summary over directions with a percentile-bootstrap CI, per everything else.

    Args:
        summaries: from :func:`slice_summaries`.
        over: the replicate column averaged over (the direction seed).
        n_boot, ci, seed: of the bootstrap (:func:`~analysis_lib.stats.effects.mean_ci`).

    Returns:
        One row per group: the label columns (without ``over``), ``metric, mean, ci_low,
        ci_high, n`` with n the number of directions.
    """
    by = [c for c in summaries.columns if c not in (over, "value")]
    return mean_ci(summaries, by, n_boot=n_boot, ci=ci, seed=seed)
