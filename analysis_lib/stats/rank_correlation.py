"""Rank correlation of a generalisation measure with the test error across a sweep of trainings.

A measure *predicts* generalisation across a sweep when the configurations it ranks sharper also
have the larger test error: Kendall's τ between the measure and the test error over the sweep's
trainings, with a percentile-bootstrap CI over trainings (:func:`kendall_tau`,
:func:`kendall_table`).

The *granulated* τ of Jiang, Neyshabur, Mobahi, Krishnan & Bengio (2020), "Fantastic
Generalization Measures and Where to Find Them" (ICLR), asks the question one hyperparameter at a
time, so a measure cannot score by tracking one axis that happens to move the test error a lot:
for axis i with values Θ_i and the other axes' value combinations Θ_{−i},

    ψ_i = mean over θ_{−i} ∈ Θ_{−i} of τ({(measure, test error) of the trainings at θ_{−i}, varying θ_i}),
    ψ   = mean over axes of ψ_i

(:func:`granulated_kendall`). A group whose measure or test error is constant has no τ and is
left out of the mean (its count ``n`` says how many groups entered).

τ is Kendall's τ_b (Kendall, 1945, "The treatment of ties in ranking problems"):
τ_b = Σ_{i<j} sgn(x_i − x_j) sgn(y_i − y_j) / √((n₀ − n_x)(n₀ − n_y)), n₀ = n(n − 1)/2 pairs, n_x
and n_y the pairs tied in x and in y; it equals scipy's ``kendalltau`` and handles the ties a
bootstrap resample's repeated trainings bring.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .effects import _check_bootstrap_args, _percentile_interval, bootstrap_ci
from .results import bad_argument, check_columns, empty_row, result_table

_CHUNK = 2_000_000  # sign-matrix entries per block of bootstrap resamples


def tau_b(xy, axis: int = 0) -> np.ndarray:
    """Kendall's τ_b of the pairs in ``xy`` (module docstring); NaN where x or y is constant.

    Args:
        xy: shape (n, 2), or (B, n, 2) for B samples at once (``axis=1``, the form
            :func:`~analysis_lib.stats.effects.bootstrap_ci` passes).
        axis: the axis that indexes the n pairs (0 for one sample, 1 for a batch).

    Returns:
        A float (one sample) or shape (B,) float64.
    """
    xy = np.asarray(xy, dtype=np.float64)
    single = xy.ndim == 2
    batch = xy[None] if single else np.moveaxis(xy, axis, 1)
    n = batch.shape[1]
    out = np.empty(batch.shape[0])
    step = max(1, _CHUNK // max(n * n, 1))
    for start in range(0, batch.shape[0], step):
        b = batch[start:start + step]
        sx = np.sign(b[:, :, None, 0] - b[:, None, :, 0])
        sy = np.sign(b[:, :, None, 1] - b[:, None, :, 1])
        denom = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + step] = np.where(denom > 0, (sx * sy).sum(axis=(1, 2)) / denom, np.nan)
    return float(out[0]) if single else out


def _pairs(measure, test_error) -> np.ndarray:
    x, y = np.asarray(measure, dtype=np.float64), np.asarray(test_error, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise bad_argument("measure", x.shape, f"must be 1-D with the shape of test_error {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise bad_argument("measure", "non-finite values", "measure and test_error must be finite "
                           "(drop the trainings without a value first)")
    return np.stack([x, y], axis=1)


def kendall_tau(measure, test_error, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> dict:
    """Kendall's τ_b between a measure and the test error over trainings, with a bootstrap CI.

    Args:
        measure: shape (n,), the measure of each training. test_error: shape (n,), its test error.
        n_boot, ci, seed: percentile bootstrap over trainings (pairs resampled together).

    Returns:
        A result row (keys of :data:`~analysis_lib.stats.results.RESULT_COLUMNS` but metric,
        layer, contrast, p_adj): ``estimate`` τ_b, ``ci_low``/``ci_high``, ``statistic`` τ_b,
        ``pvalue`` scipy's two-sided test of τ = 0, ``n``; no interval when n < 3 or a side is
        constant (τ undefined).

    Raises:
        ValueError: shapes differ, values are not finite, or bad bootstrap arguments.

    Reference: Kendall (1945); Efron & Tibshirani (1993), ch. 13.
    """
    _check_bootstrap_args(n_boot, ci)
    xy = _pairs(measure, test_error)
    method = "Kendall tau-b, percentile bootstrap over trainings"
    tau = tau_b(xy) if len(xy) >= 2 else np.nan
    if len(xy) < 3 or np.isnan(tau):
        return empty_row(method, estimate=tau, n=len(xy))
    low, high = bootstrap_ci(xy, tau_b, n_boot=n_boot, ci=ci, seed=seed)
    pvalue = float(sps.kendalltau(xy[:, 0], xy[:, 1]).pvalue)
    return dict(estimate=tau, ci_low=low, ci_high=high, effect_size=tau, statistic=tau, pvalue=pvalue,
                method=method, n=len(xy))


def kendall_table(df: pd.DataFrame, measures: Sequence[str], target: str, *, by: Sequence[str] = (),
                  n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """:func:`kendall_tau` of each measure column against ``target``, per group of ``by``.

    Args:
        df: wide, one row per training; rows with a missing measure or target are left out of
            that measure's τ.
        measures: measure columns. target: the test-error column. by: grouping columns (e.g.
            the scenario), named in each row's ``contrast``.

    Returns:
        A result table: ``metric`` the measure, ``layer`` "model", ``contrast``
        "τ(<measure>, <target>)" plus the group; ``p_adj`` unadjusted (equal to ``pvalue``).
    """
    check_columns(df, target=target, **{f"measures[{i}]": m for i, m in enumerate(measures)},
                  **{f"by[{i}]": c for i, c in enumerate(by)})
    rows = []
    groups = df.groupby(list(by), sort=False) if by else [((), df)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        suffix = "".join(f" [{c}={v}]" for c, v in zip(by, key))
        for m in measures:
            sub = group[[m, target]].dropna()
            row = kendall_tau(sub[m], sub[target], n_boot=n_boot, ci=ci, seed=seed)
            rows.append({**row, "metric": m, "layer": "model", "contrast": f"τ({m}, {target}){suffix}",
                         "p_adj": row["pvalue"]})
    return result_table(rows)


def _axis_taus(df: pd.DataFrame, measure: str, target: str, axis: str, axes: Sequence[str]) -> np.ndarray:
    others = [a for a in axes if a != axis]
    groups = df.groupby(others, sort=True) if others else [((), df)]
    taus = [tau_b(g[[measure, target]].to_numpy()) for _, g in groups if len(g) >= 2]
    return np.array(taus, dtype=np.float64)


def granulated_kendall(df: pd.DataFrame, measure: str, target: str, axes: Sequence[str], *,
                       n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """The granulated Kendall τ of Jiang et al. (2020): ψ_i per hyperparameter axis and their mean ψ.

    Args:
        df: wide, one row per training (configuration), with a column per axis, ``measure``
            and ``target``; each combination of axis values at most once.
        measure: the measure column. target: the test-error column.
        axes: the hyperparameter columns (e.g. ``["rho", "seed"]``), at least one.
        n_boot, ci, seed: the CI of ψ_i is a percentile bootstrap of the mean over its groups
            (the other axes' combinations); that of ψ resamples each axis's groups at once. It
            reflects the spread of the groups' τ only, not the sampling noise within a group: with
            few groups, or groups that agree (e.g. every τ = −1 with two points each), it is narrow
            or a point; read it with ``n``.

    Returns:
        A result table, one row per axis (``contrast`` "ψ[<axis>]") then ψ ("ψ (mean over
        axes)"); ``estimate`` the mean τ, ``n`` the groups with a τ (for ψ, summed over axes);
        no p-values (NaN).

    Raises:
        ValueError: a column is missing, no axis is given, or a combination of axis values
            occurs twice.
    """
    _check_bootstrap_args(n_boot, ci)
    if not len(axes):
        raise bad_argument("axes", axes, "needs at least one hyperparameter column")
    check_columns(df, measure=measure, target=target, **{f"axes[{i}]": a for i, a in enumerate(axes)})
    df = df.dropna(subset=[measure, target])
    if df.duplicated(subset=list(axes)).any():
        raise bad_argument("axes", list(axes), "each combination of axis values must be one training "
                           "(average replicates first, or add the seed as an axis)")
    method = "granulated Kendall tau (Jiang et al. 2020), bootstrap over groups"
    per_axis = {a: _axis_taus(df, measure, target, a, axes) for a in axes}
    rng = np.random.default_rng(seed)
    rows, boots = [], []
    for a, taus in per_axis.items():
        taus = taus[~np.isnan(taus)]
        if taus.size == 0:
            rows.append({**empty_row(method), "contrast": f"ψ[{a}]"})
            boots.append(np.full(n_boot, np.nan))
            continue
        rep = taus[rng.integers(0, taus.size, size=(n_boot, taus.size))].mean(axis=1)
        boots.append(rep)
        low, high = _percentile_interval(rep, ci) if taus.size > 1 else (np.nan, np.nan)
        rows.append(dict(estimate=taus.mean(), ci_low=low, ci_high=high, effect_size=taus.mean(), statistic=np.nan,
                         pvalue=np.nan, method=method, n=taus.size, contrast=f"ψ[{a}]"))
    estimates = np.array([r["estimate"] for r in rows], dtype=np.float64)
    psi = float(estimates.mean()) if np.isfinite(estimates).all() else np.nan
    low, high = np.nan, np.nan
    if np.isfinite(psi) and sum(r["n"] for r in rows) > len(rows):
        low, high = _percentile_interval(np.mean(boots, axis=0), ci)
    rows.append(dict(estimate=psi, ci_low=low, ci_high=high, effect_size=psi, statistic=np.nan, pvalue=np.nan,
                     method=method, n=int(sum(r["n"] for r in rows)), contrast="ψ (mean over axes)"))
    return result_table([{**r, "metric": measure, "layer": "model", "p_adj": np.nan} for r in rows])

