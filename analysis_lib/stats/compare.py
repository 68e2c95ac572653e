"""Comparisons of conditions over seeds, as tidy result tables with fixed columns.

Input is a tidy long DataFrame, one value per row, e.g.
``run_id, optimizer, lr, seed, step, layer, metric, value`` (``layer == "model"`` for whole-model
metrics). Seeds are the replicates ("units"): before any test, duplicate rows of one unit
(same group, condition level and seed, e.g. several steps) are averaged, so each unit counts
once. Pass one step per run (e.g. the final one) unless the average over steps is what you mean.

Every function returns a DataFrame with exactly
:data:`~analysis_lib.stats.results.RESULT_COLUMNS`; ``p_adj`` is adjusted across all rows of the
returned table. Effect sizes and bootstraps live in :mod:`analysis_lib.stats.effects`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from .effects import bootstrap_ci, bootstrap_diff_ci, cohens_dz, hedges_g
from .results import bad_argument, check_adjust, check_columns, empty_row, finish_table

TESTS = ("auto", "t", "rank")
_TEST_NAMES = {(True, "t"): "paired t-test", (True, "rank"): "Wilcoxon signed-rank",
               (False, "t"): "Welch t-test", (False, "rank"): "Mann-Whitney U"}



def _levels_and_baseline(df: pd.DataFrame, condition: str, baseline) -> tuple[list, object]:
    levels = sorted(df[condition].dropna().unique())
    if len(levels) < 2:
        raise bad_argument("condition", condition, f"needs at least two levels, found {levels}")
    if baseline is None:
        return levels, levels[0]
    if baseline not in levels:
        raise bad_argument("baseline", baseline, f"not a level of {condition!r}; levels are {levels}")
    return levels, baseline


def _unit_table(df: pd.DataFrame, condition: str, by: tuple, value: str, unit: str) -> pd.DataFrame:
    """Wide table: index (*by, unit), one column per condition level, duplicates averaged."""
    keys = [*by, condition, unit]
    means = df.astype({value: np.float64}).groupby(keys, observed=True)[value].mean()
    return means.unstack(condition)


def _group_labels(df: pd.DataFrame, by: tuple, key: tuple) -> tuple[object, object, str]:
    """Metric and layer for a result row, plus any other `by` keys as a contrast suffix."""
    named = dict(zip(by, key))
    labels = []
    for col in ("metric", "layer"):
        if col in named:
            labels.append(named.pop(col))
        elif col in df.columns and df[col].nunique() == 1:
            labels.append(df[col].iloc[0])
        else:
            labels.append("all")
    extra = ", ".join(f"{k}={v}" for k, v in named.items())
    return labels[0], labels[1], f" [{extra}]" if extra else ""


def _contrast_rows(df, condition, baseline, by, value, unit, row_fn: Callable) -> list[dict]:
    by = tuple(by)
    check_columns(df, condition=condition, value=value, unit=unit,
                   **{f"by[{i}]": c for i, c in enumerate(by)})
    if "metric" not in by and "metric" in df.columns and df["metric"].nunique() > 1:
        raise bad_argument("by", by, "must include 'metric' when df holds several metrics (values of "
                   "different metrics would be averaged together)")
    if df.empty:  # no data (e.g. every run diverged): no tests, rather than "fewer than two levels"
        return []
    levels, baseline = _levels_and_baseline(df, condition, baseline)
    wide = _unit_table(df, condition, by, value, unit)
    groups = wide.groupby(level=list(by), observed=True) if by else [((), wide)]
    if by:  # rows follow the data's order (layers in forward order), not alphabetical order
        first = {k: i for i, k in enumerate(df[list(by)].drop_duplicates().itertuples(index=False, name=None))}
        groups = sorted(groups, key=lambda kv: first.get(kv[0] if isinstance(kv[0], tuple) else (kv[0],), len(first)))
    rows = []
    for key, sub in groups:
        metric, layer, suffix = _group_labels(df, by, key if isinstance(key, tuple) else (key,))
        for level in (lv for lv in levels if lv != baseline):
            t = sub[level] if level in sub else pd.Series(np.nan, index=sub.index)
            b = sub[baseline] if baseline in sub else pd.Series(np.nan, index=sub.index)
            row = row_fn(t, b)
            rows.append(dict(row, metric=metric, layer=layer,
                             contrast=f"{level} - {baseline}{suffix}"))
    return rows


def _paired_arrays(t: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    # Aligned on the unit index, so pairing is by seed, never by row order; a unit missing (or
    # NaN, e.g. diverged) on either side is dropped.
    both = pd.concat([t, b], axis=1).dropna()
    return both.iloc[:, 0].to_numpy(np.float64), both.iloc[:, 1].to_numpy(np.float64)


def _run_test(test_fn: Callable, t: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    try:
        res = test_fn(t, b)
    except ValueError:  # e.g. Wilcoxon with every difference zero
        return np.nan, np.nan
    return float(res[0]), float(res[1])


def _paired_row(t, b, *, test, n_boot, ci, seed) -> dict:
    t, b = _paired_arrays(t, b)
    diff, name = t - b, _TEST_NAMES[(True, test)]
    if diff.size < 2:
        return empty_row(name, diff.mean() if diff.size else np.nan, diff.size)
    test_fn = sps.ttest_rel if test == "t" else sps.wilcoxon
    stat, p = _run_test(test_fn, t, b)
    low, high = bootstrap_ci(diff, np.mean, n_boot=n_boot, ci=ci, seed=seed)
    return dict(estimate=diff.mean(), ci_low=low, ci_high=high, effect_size=cohens_dz(diff),
                statistic=stat, pvalue=p, method=name, n=diff.size)


def _unpaired_row(t, b, *, test, n_boot, ci, seed) -> dict:
    t, b = t.dropna().to_numpy(np.float64), b.dropna().to_numpy(np.float64)
    name = _TEST_NAMES[(False, test)]
    if t.size < 2 or b.size < 2:
        est = t.mean() - b.mean() if t.size and b.size else np.nan
        return empty_row(name, est, t.size + b.size)
    test_fn = (partial(sps.ttest_ind, equal_var=False) if test == "t"
               else partial(sps.mannwhitneyu, alternative="two-sided"))
    stat, p = _run_test(test_fn, t, b)
    low, high = bootstrap_diff_ci(t, b, n_boot=n_boot, ci=ci, seed=seed)
    return dict(estimate=t.mean() - b.mean(), ci_low=low, ci_high=high,
                effect_size=hedges_g(t, b), statistic=stat, pvalue=p, method=name,
                n=t.size + b.size)


def compare_conditions(df: pd.DataFrame, condition: str, *, baseline=None, paired: bool = True,
                       test: str = "auto", by: Sequence[str] = ("metric", "layer"),
                       value: str = "value", unit: str = "seed", adjust: str | None = "holm",
                       n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each level of ``condition`` against a baseline, per group in ``by``, with effect sizes.

    Rows of one unit (same ``by`` group, level and ``unit``) are first averaged. Paired
    (``paired=True``): units are matched by ``unit`` and a unit missing or NaN on either side
    is dropped; fewer than 2 pairs (2 units per side if unpaired) gives a row with NaN
    statistic and p-value. ``by`` columns other than metric/layer are appended to ``contrast``
    as ``" [lr=0.1]"``. Every row's bootstrap uses the same ``seed``, so a row does not change
    when other groups are added.

    Args:
        df: tidy long frame with columns ``condition``, ``unit``, ``value`` and ``by``.
        condition: column whose levels are compared.
        baseline: reference level; default the first level in sorted order.
        paired: pair by ``unit`` (same seed under both conditions) or treat groups as independent.
        test: ``"auto"`` (= ``"t"``); ``"t"``: paired t-test / Welch t-test; ``"rank"``:
            Wilcoxon signed-rank / Mann-Whitney U. All two-sided.
        by: grouping columns, one comparison per group and level.
        value: column holding the measured value.
        unit: column identifying the replicate (the seed).
        adjust: ``"holm"``, ``"fdr_bh"``, ``"bonferroni"`` or ``None``, across all rows.
        n_boot, ci, seed: percentile bootstrap of the estimate over units (each group
            resampled separately when unpaired).

    Returns:
        DataFrame with :data:`RESULT_COLUMNS`; ``contrast`` is ``"treatment - baseline"`` and
        ``estimate`` the mean paired difference (paired) or difference of means (unpaired);
        ``effect_size`` is Cohen's d_z (paired) or Hedges' g (unpaired); ``n`` counts pairs
        (paired) or units in both groups (unpaired).

    Raises:
        ValueError: a named column is missing, ``baseline`` is not a level, ``condition`` has
            fewer than two levels, or ``test``/``adjust`` is unknown. An empty ``df`` (no data,
            e.g. every run diverged) gives an empty table instead.

    References: Student (1908); Welch (1947); Wilcoxon (1945); Mann & Whitney (1947);
        Lakens (2013) for d_z and g; Efron & Tibshirani (1993) for the bootstrap.
    """
    if test not in TESTS:
        raise bad_argument("test", test, f"must be one of {TESTS}")
    check_adjust(adjust)
    test = "t" if test == "auto" else test
    row_fn = _paired_row if paired else _unpaired_row
    rows = _contrast_rows(df, condition, baseline, by, value, unit,
                          partial(row_fn, test=test, n_boot=n_boot, ci=ci, seed=seed))
    return finish_table(rows, adjust)


def _tost_row(t, b, *, paired, margin, n_boot, seed) -> dict:
    # 90% CI: TOST at alpha = 0.05 rejects exactly when the (1 - 2 alpha) CI lies inside the
    # margin, so this is the interval to read against +-margin.
    name = f"TOST {'paired' if paired else 'Welch'} (margin={margin:g}, 90% CI)"
    row = (_paired_row(t, b, test="t", n_boot=n_boot, ci=0.90, seed=seed) if paired
           else _unpaired_row(t, b, test="t", n_boot=n_boot, ci=0.90, seed=seed))
    row["method"] = name
    x1, x2 = _paired_arrays(t, b) if paired else (t.dropna().to_numpy(np.float64),
                                                  b.dropna().to_numpy(np.float64))
    if min(x1.size, x2.size) < 2:
        return row
    if paired:
        p, lower, upper = ttost_paired(x1, x2, -margin, margin)
    else:
        p, lower, upper = ttost_ind(x1, x2, -margin, margin, usevar="unequal")
    # Report the t of the binding one-sided test (the one whose p is the TOST p).
    row["statistic"] = float(lower[0] if lower[1] >= upper[1] else upper[0])
    row["pvalue"] = float(p)
    return row


def equivalence_test(df: pd.DataFrame, condition: str, *, margin: float, baseline=None,
                     paired: bool = True, by: Sequence[str] = ("metric", "layer"),
                     value: str = "value", unit: str = "seed", adjust: str | None = "holm",
                     n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """TOST equivalence test of each level against a baseline: is |difference| < ``margin``?

    Two one-sided t-tests with bounds ``(-margin, +margin)`` on the raw scale of ``value``; a
    small p-value supports "no difference larger than margin". Units are averaged, paired and
    dropped as in :func:`compare_conditions`.

    Args:
        df, condition, baseline, paired, by, value, unit, adjust: as in
            :func:`compare_conditions`.
        margin: positive equivalence bound, in units of ``value``.
        n_boot, seed: bootstrap of the estimate's CI, which is at 90% (= 1 - 2 * 0.05).

    Returns:
        DataFrame with :data:`RESULT_COLUMNS`; ``pvalue`` is the TOST p-value (the larger of
        the two one-sided p-values), ``statistic`` that test's t; ``effect_size`` is d_z or g.

    Raises:
        ValueError: ``margin`` not positive, plus the cases of :func:`compare_conditions`.

    References: Schuirmann (1987), J. Pharmacokinet. Biopharm. 15:657; Lakens (2017),
        "Equivalence tests", Soc. Psychol. Personal. Sci. 8:355; statsmodels ``ttost_paired``,
        ``ttost_ind(usevar="unequal")``.
    """
    if not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin > 0):
        raise bad_argument("margin", margin, "must be a positive finite number")
    check_adjust(adjust)
    rows = _contrast_rows(
        df, condition, baseline, by, value, unit,
        partial(_tost_row, paired=paired, margin=margin, n_boot=n_boot, seed=seed))
    return finish_table(rows, adjust)
