"""Learning-rate sensitivity over a log-spaced grid, diverged runs capped at the initial loss.

Wortsman et al. ("Small-scale proxies for large-scale Transformer training instabilities",
2023, section 3.1) summarise how much a recipe's final loss depends on the learning rate by

    sensitivity = mean over the grid of min(L(η), L_0) − L*,

with L(η) the final loss at learning rate η, L_0 the loss at initialisation and L* the best
loss over the grid. Capping at L_0 keeps a diverged run (no finite final loss) in the mean as
"learned nothing" instead of dropping it, which would flatter an unstable recipe. Here a row
marked ``diverged`` counts as L_0 whatever its final loss, and L* is the minimum of the capped
losses (the best loss when any run beats L_0; 0 sensitivity when none does). The grid must be
log-spaced (to within :data:`LOG_SPACING_TOL` of a constant step in log η, which admits the
usual 1, 3, 10, 30, ... grids), so that the plain mean over grid points is the mean over log η.

Two levels (``level``):

- ``"seed"`` (default): the sensitivity of each seed's own curve, then their mean; the CI is a
  percentile bootstrap over seeds, and two arms are compared by the per-seed differences (paired
  by seed: same initialisation and data order in both arms).
- ``"mean"``: the sensitivity of the seed-mean capped curve (L* of the mean curve); the CI
  bootstraps seeds, recomputing the mean curve per resample. This is at most the ``"seed"``
  value (the mean of per-seed minima is below the minimum of the mean curve).

Input: a tidy table with one row per run and the columns ``arm, seed, lr, final_loss,
initial_loss, diverged`` (others are ignored); every arm and seed must have the same grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from .effects import _check_bootstrap_args, _percentile_interval, cohens_dz
from .results import bad_argument, check_columns, empty_row, finish_table

LEVELS = ("seed", "mean")
LOG_SPACING_TOL = 0.1  # admits the usual 1-3-10 grids (log steps ln 3 and ln 10/3, 4.6% from their mean)
RUN_COLUMNS = ("arm", "seed", "lr", "final_loss", "initial_loss", "diverged")
SENSITIVITY_COLUMNS = ["arm", "level", "sensitivity", "ci_low", "ci_high", "n_seeds", "n_lr", "n_diverged"]
CURVE_COLUMNS = ["arm", "lr", "capped_loss", "ci_low", "ci_high", "n_seeds", "n_diverged"]


def capped_losses(runs: pd.DataFrame) -> pd.Series:
    """min(final_loss, initial_loss) per row, and initial_loss for rows marked ``diverged``.

    Raises:
        ValueError: a missing column, a non-finite or negative initial loss, a non-boolean
            ``diverged``, or a non-finite final loss on a row not marked diverged.
    """
    check_columns(runs, **{f"runs[{c!r}]": c for c in RUN_COLUMNS})
    initial = runs["initial_loss"].to_numpy(np.float64)
    final = runs["final_loss"].to_numpy(np.float64)
    if not np.isin(runs["diverged"].to_numpy(), [True, False]).all():
        raise bad_argument("runs['diverged']", sorted(set(runs["diverged"].tolist()), key=str), "must be True or False")
    diverged = runs["diverged"].to_numpy(bool)
    if not np.isfinite(initial).all() or (initial < 0).any():
        raise bad_argument("runs['initial_loss']", initial[~np.isfinite(initial) | (initial < 0)][:3].tolist(),
                           "must be finite and >= 0 (the loss at initialisation)")
    bad = ~diverged & ~np.isfinite(final)
    if bad.any():
        raise bad_argument("runs['final_loss']", final[bad][:3].tolist(), "is not finite on a run not marked "
                           "diverged (mark it diverged=True, or fix the table)")
    return pd.Series(np.where(diverged, initial, np.fmin(final, initial)), index=runs.index, name="capped_loss")


def _plain(value):
    """A NumPy scalar as the Python number it holds (for error messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _grid(runs: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """The common lr grid and, per arm, a (seed, lr) table of capped losses, after every check."""
    capped = runs.assign(capped_loss=capped_losses(runs))
    if capped.empty:
        raise bad_argument("runs", "empty table", "needs at least one run")
    lrs = np.sort(capped["lr"].astype(np.float64).unique())
    if len(lrs) < 2 or not (lrs > 0).all() or not np.isfinite(lrs).all():
        raise bad_argument("runs['lr']", lrs.tolist(), "needs at least two distinct finite learning rates > 0")
    steps = np.diff(np.log(lrs))
    if np.abs(steps - steps.mean()).max() > LOG_SPACING_TOL * steps.mean():
        raise bad_argument("runs['lr']", lrs.tolist(), "must be a log-spaced grid (the ratio between neighbours "
                           f"constant to within {LOG_SPACING_TOL:.0%} in log), so that the mean over the grid is "
                           "the mean over log(lr)")
    dup = capped.duplicated(["arm", "seed", "lr"])
    if dup.any():
        first = [_plain(v) for v in capped.loc[dup, ["arm", "seed", "lr"]].iloc[0]]
        raise bad_argument("runs", f"(arm, seed, lr) = {first}", "appears twice; one row per run")
    tables = {}
    for arm, part in capped.groupby("arm", sort=False):
        wide = part.pivot(index="seed", columns="lr", values="capped_loss").reindex(columns=lrs)
        if wide.isna().any().any():
            seed, lr = wide.stack(future_stack=True).loc[lambda s: s.isna()].index[0]
            seed, lr = _plain(seed), _plain(lr)
            raise bad_argument("runs", f"arm={arm!r}", f"has no run at seed={seed!r}, lr={lr!r}: every arm and "
                               "seed needs the whole grid")
        tables[arm] = (wide.sort_index(), int(part["diverged"].sum()))
    return lrs, tables


def _sensitivity(capped: np.ndarray, level: str) -> np.ndarray:
    """Sensitivity of (..., n_seeds, n_lr) capped losses: per seed averaged, or of the seed mean."""
    if level == "seed":
        return (capped.mean(axis=-1) - capped.min(axis=-1)).mean(axis=-1)
    curve = capped.mean(axis=-2)
    return curve.mean(axis=-1) - curve.min(axis=-1)


def _check(level: str, n_boot: int, ci: float) -> None:
    if level not in LEVELS:
        raise bad_argument("level", level, f"must be one of {LEVELS}")
    _check_bootstrap_args(n_boot, ci)


def lr_sensitivity(runs: pd.DataFrame, *, level: str = "seed", n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0) -> pd.DataFrame:
    """Learning-rate sensitivity of each arm with a percentile-bootstrap CI over seeds.

    Args:
        runs: one row per run with :data:`RUN_COLUMNS` (see the module docstring).
        level: ``"seed"`` or ``"mean"`` (see the module docstring).
        n_boot, ci, seed: bootstrap resamples, coverage and ``np.random.default_rng`` seed.

    Returns:
        One row per arm (in order of appearance) with :data:`SENSITIVITY_COLUMNS`; the interval is
        NaN with a single seed.

    Raises:
        ValueError: bad level/n_boot/ci, or a table :func:`capped_losses` refuses, without at least
            two log-spaced learning rates, with a repeated run, or with an arm or seed missing
            part of the grid.

    Reference: Wortsman et al. (2023), section 3.1.
    """
    _check(level, n_boot, ci)
    lrs, tables = _grid(runs)
    rows = []
    for arm, (wide, n_diverged) in tables.items():
        capped = wide.to_numpy(np.float64)  # (n_seeds, n_lr)
        k = capped.shape[0]
        low = high = np.nan
        if k > 1:
            idx = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
            low, high = _percentile_interval(_sensitivity(capped[idx], level), ci)
        rows.append(dict(arm=arm, level=level, sensitivity=float(_sensitivity(capped, level)), ci_low=low,
                         ci_high=high, n_seeds=k, n_lr=len(lrs), n_diverged=n_diverged))
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def capped_loss_curves(runs: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Seed-mean capped final loss per arm and learning rate, with a bootstrap CI over seeds.

    Args:
        runs, n_boot, ci, seed: as in :func:`lr_sensitivity`.

    Returns:
        :data:`CURVE_COLUMNS`, one row per arm and lr (ascending); ``n_diverged`` counts the
        diverged runs at that lr.
    """
    _check("seed", n_boot, ci)
    lrs, tables = _grid(runs)
    diverged = runs.groupby(["arm", runs["lr"].astype(np.float64)])["diverged"].sum()
    rows = []
    for arm, (wide, _) in tables.items():
        capped = wide.to_numpy(np.float64)
        k = capped.shape[0]
        boot = capped[np.random.default_rng(seed).integers(0, k, size=(n_boot, k))].mean(axis=1) if k > 1 else None
        for j, lr in enumerate(lrs):
            low, high = _percentile_interval(boot[:, j], ci) if boot is not None else (np.nan, np.nan)
            rows.append(dict(arm=arm, lr=float(lr), capped_loss=float(capped[:, j].mean()), ci_low=low,
                             ci_high=high, n_seeds=k, n_diverged=int(diverged[arm, lr])))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def sensitivity_difference(runs: pd.DataFrame, treatment, baseline, *, level: str = "seed", n_boot: int = 2000,
                           ci: float = 0.95, seed: int = 0, adjust: str | None = None) -> pd.DataFrame:
    """Paired difference of learning-rate sensitivity, treatment − baseline, over the seeds both arms share.

    Args:
        runs: as in :func:`lr_sensitivity`; both arms must have the same seeds.
        treatment, baseline: two values of ``runs["arm"]``.
        level: ``"seed"``: estimate = mean per-seed difference, with a paired t-test (statistic,
            p-value) and Cohen's d_z; ``"mean"``: the difference of the seed-mean curves'
            sensitivities, CI only (no test).
        n_boot, ci, seed: the percentile bootstrap resamples seeds jointly for both arms.
        adjust: multiple-testing adjustment of ``p_adj`` (one row: none is needed).

    Returns:
        One row with :data:`~analysis_lib.stats.results.RESULT_COLUMNS`: metric ``lr_sensitivity``,
        layer ``model``, contrast ``"<treatment> - <baseline>"``, n = number of seeds.

    Raises:
        ValueError: an arm not in the table, the same arm twice, different seeds in the two arms,
            or anything :func:`lr_sensitivity` refuses.
    """
    _check(level, n_boot, ci)
    _, tables = _grid(runs)
    for name, arm in (("treatment", treatment), ("baseline", baseline)):
        if arm not in tables:
            raise bad_argument(name, arm, f"not an arm of runs; arms are {list(tables)}")
    if treatment == baseline:
        raise bad_argument("treatment", treatment, "must differ from baseline")
    (t_wide, _), (b_wide, _) = tables[treatment], tables[baseline]
    if list(t_wide.index) != list(b_wide.index):
        raise bad_argument("runs", f"seeds {list(t_wide.index)} vs {list(b_wide.index)}",
                           f"arms {treatment!r} and {baseline!r} must have the same seeds to be paired")
    t, b = t_wide.to_numpy(np.float64), b_wide.to_numpy(np.float64)
    k = t.shape[0]
    base = dict(metric="lr_sensitivity", layer="model", contrast=f"{treatment} - {baseline}")
    estimate = float(_sensitivity(t, level) - _sensitivity(b, level))
    method = "paired t-test on per-seed LR sensitivity" if level == "seed" else "LR sensitivity of the seed-mean curve"
    if k < 2:
        return finish_table([{**base, **empty_row(method + ", one seed", estimate, k)}], adjust)
    idx = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    low, high = _percentile_interval(_sensitivity(t[idx], level) - _sensitivity(b[idx], level), ci)
    row = {**base, **empty_row(method + ", bootstrap CI over seeds", estimate, k), "ci_low": low, "ci_high": high}
    if level == "seed":
        per_seed = (t.mean(1) - t.min(1)) - (b.mean(1) - b.min(1))
        if np.ptp(per_seed) > 0:
            test = sps.ttest_1samp(per_seed, 0.0)
            row.update(statistic=float(test.statistic), pvalue=float(test.pvalue), effect_size=cohens_dz(per_seed))
    return finish_table([row], adjust)
