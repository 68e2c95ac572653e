"""Comparisons of conditions over seeds, as tidy result tables with fixed columns.

Input is a tidy long DataFrame, one value per row, e.g.
``run_id, optimizer, lr, seed, step, layer, metric, value`` (``layer == "model"`` for whole-model
metrics). Seeds are the replicates ("units"): before any test, duplicate rows of one unit
(same group, condition level and seed, e.g. several steps) are averaged, so each unit counts
once. Pass one step per run (e.g. the final one) unless the average over steps is what you mean.

Every function returns a DataFrame with exactly :data:`RESULT_COLUMNS`, so tables from
different tests concatenate. ``p_adj`` is adjusted across all rows of the returned table.

Effect sizes and bootstraps live in :mod:`analysis_lib.effects`.
"""

from __future__ import annotations

import re
import warnings
from functools import partial
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from analysis_lib.effects import (bootstrap_ci, bootstrap_diff_ci, cohens_dz, hedges_g,
                                  spearman_rho)

__all__ = ["RESULT_COLUMNS", "adjust_pvalues", "bootstrap_ci", "compare_conditions",
           "equivalence_test", "mixed_model", "spearman_ci"]

RESULT_COLUMNS = ("metric", "layer", "contrast", "estimate", "ci_low", "ci_high", "effect_size",
                  "statistic", "pvalue", "p_adj", "method", "n")
TESTS = ("auto", "t", "rank")
ADJUST_METHODS = ("holm", "fdr_bh", "bonferroni", None)
_TEST_NAMES = {(True, "t"): "paired t-test", (True, "rank"): "Wilcoxon signed-rank",
               (False, "t"): "Welch t-test", (False, "rank"): "Mann-Whitney U"}


def _bad(name: str, value, allowed: str) -> ValueError:
    return ValueError(f"invalid argument {name}={value!r}: {allowed}")


def _check_adjust(adjust, name: str = "adjust") -> None:
    if adjust not in ADJUST_METHODS:
        raise _bad(name, adjust, f"must be one of {ADJUST_METHODS}")


def _check_columns(df: pd.DataFrame, **columns: str) -> None:
    for name, col in columns.items():
        if col not in df.columns:
            raise _bad(name, col, f"not a column of df; columns are {list(df.columns)}")


def adjust_pvalues(pvalues, method: str | None = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaN p-values stay NaN and are not in the family.

    Args:
        pvalues: shape (m,), raw p-values, NaN allowed.
        method: ``"holm"`` (family-wise error), ``"fdr_bh"`` (false discovery rate),
            ``"bonferroni"``, or ``None`` for no adjustment (returns a float64 copy).

    Returns:
        shape (m,) float64 adjusted p-values, each >= its raw p-value and <= 1.

    Reference: Holm (1979); Benjamini & Hochberg (1995); statsmodels ``multipletests``.
    """
    _check_adjust(method, "method")
    p = np.asarray(pvalues, dtype=np.float64).copy()
    finite = ~np.isnan(p)
    if method is not None and finite.any():
        p[finite] = multipletests(p[finite], method=method)[1]
    return p


def _as_result(rows) -> pd.DataFrame:
    """Rows (list of dicts or a frame) as a table with RESULT_COLUMNS and float64 numbers."""
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    numeric = ["estimate", "ci_low", "ci_high", "effect_size", "statistic", "pvalue", "p_adj"]
    return table.astype({**{c: np.float64 for c in numeric}, "n": np.int64})


def _finish(rows: list[dict], adjust) -> pd.DataFrame:
    table = _as_result(rows)
    table["p_adj"] = adjust_pvalues(table["pvalue"].to_numpy(), adjust)
    table["method"] = table["method"] + f", {adjust or 'unadjusted'}"
    return table


# --------------------------------------------------------------------------------------------
# Condition contrasts: one row per (group in `by`) x (non-baseline level).

def _levels_and_baseline(df: pd.DataFrame, condition: str, baseline) -> tuple[list, object]:
    levels = sorted(df[condition].dropna().unique())
    if len(levels) < 2:
        raise _bad("condition", condition, f"needs at least two levels, found {levels}")
    if baseline is None:
        return levels, levels[0]
    if baseline not in levels:
        raise _bad("baseline", baseline, f"not a level of {condition!r}; levels are {levels}")
    return levels, baseline


def _unit_table(df: pd.DataFrame, condition: str, by: tuple, value: str, unit: str) -> pd.DataFrame:
    """Wide table: index (*by, unit), one column per condition level, duplicates averaged."""
    keys = [*by, condition, unit]
    means = df.astype({value: np.float64}).groupby(keys, observed=True)[value].mean()
    return means.unstack(condition)


def _group_labels(df: pd.DataFrame, by: tuple, key: tuple) -> tuple[object, object, str]:
    """metric and layer for a result row, plus any other `by` keys as a contrast suffix."""
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
    _check_columns(df, condition=condition, value=value, unit=unit,
                   **{f"by[{i}]": c for i, c in enumerate(by)})
    if "metric" not in by and "metric" in df.columns and df["metric"].nunique() > 1:
        raise _bad("by", by, "must include 'metric' when df holds several metrics (values of "
                   "different metrics would be averaged together)")
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


def _empty_row(method: str, estimate=np.nan, n: int = 0) -> dict:
    return dict(estimate=estimate, ci_low=np.nan, ci_high=np.nan, effect_size=np.nan,
                statistic=np.nan, pvalue=np.nan, method=method, n=n)


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
        return _empty_row(name, diff.mean() if diff.size else np.nan, diff.size)
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
        return _empty_row(name, est, t.size + b.size)
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
            fewer than two levels, or ``test``/``adjust`` is unknown.

    References: Student (1908); Welch (1947); Wilcoxon (1945); Mann & Whitney (1947);
        Lakens (2013) for d_z and g; Efron & Tibshirani (1993) for the bootstrap.
    """
    if test not in TESTS:
        raise _bad("test", test, f"must be one of {TESTS}")
    _check_adjust(adjust)
    test = "t" if test == "auto" else test
    row_fn = _paired_row if paired else _unpaired_row
    rows = _contrast_rows(df, condition, baseline, by, value, unit,
                          partial(row_fn, test=test, n_boot=n_boot, ci=ci, seed=seed))
    return _finish(rows, adjust)


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
        raise _bad("margin", margin, "must be a positive finite number")
    _check_adjust(adjust)
    rows = _contrast_rows(
        df, condition, baseline, by, value, unit,
        partial(_tost_row, paired=paired, margin=margin, n_boot=n_boot, seed=seed))
    return _finish(rows, adjust)


# --------------------------------------------------------------------------------------------
# Whole-table models.

def _single_metric(df: pd.DataFrame, metric) -> tuple[pd.DataFrame, object]:
    if "metric" not in df.columns:
        return df, metric
    present = sorted(df["metric"].dropna().unique())
    if metric is None:
        if len(present) > 1:
            raise _bad("metric", metric, f"df holds several metrics {present}; pick one")
        return df, present[0] if present else None
    if metric not in present:
        raise _bad("metric", metric, f"not in df; metrics are {present}")
    return df[df["metric"] == metric], metric


def _formula_columns(formula: str, df: pd.DataFrame) -> tuple[str, list[str]]:
    """Response column and the right-hand-side columns a formula mentions."""
    if "~" not in formula:
        raise _bad("formula", formula, "must look like 'value ~ C(condition) * C(layer)'")
    # Identifiers that are df columns; function names such as C or np.log are not columns.
    lhs, rhs = ([t for t in re.findall(r"[A-Za-z_]\w*", side) if t in df.columns]
                for side in formula.split("~", 1))
    if len(lhs) != 1:
        raise _bad("formula", formula, f"left side must name one column of {list(df.columns)}")
    return lhs[0], list(dict.fromkeys(rhs))


def _fit_status(fit, caught: list) -> str:
    """Method suffix from the fit's flag and the ConvergenceWarnings statsmodels raised."""
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    # A failed first optimizer followed by a successful retry leaves fit.converged True; the
    # gradient check after the last optimizer is what says the optimum was not reached.
    if not fit.converged or any("Gradient optimization failed" in m for m in messages):
        return "; not converged"
    # Boundary = estimated seed variance ~0: a valid fit (it reduces to OLS), flagged because
    # the random intercept then adds nothing and its Wald CI is unreliable.
    if any("boundary" in m for m in messages):
        return "; variance on boundary"
    return ""


def mixed_model(df: pd.DataFrame, formula: str = "value ~ C(condition) * C(layer)", *,
                groups: str = "seed", metric=None, adjust: str | None = "holm") -> pd.DataFrame:
    """Fixed effects of a linear mixed model with a random intercept per ``groups`` (seed).

    Rows with the same values of every formula column and ``groups`` are averaged first, so
    one seed contributes one observation per cell. Fit by REML with ``smf.mixedlm``.

    Args:
        df: tidy frame holding the formula's columns and ``groups``.
        formula: patsy formula, e.g. ``"value ~ C(optimizer) * C(layer)"``.
        groups: column of the random intercept (the replicate).
        metric: keep only rows with this ``metric``; required if df holds several.
        adjust: multiple-testing adjustment across the fixed-effect terms except Intercept
            (whose ``p_adj`` is NaN: it is not part of the family).

    Returns:
        One row per fixed-effect term in :data:`RESULT_COLUMNS`: ``contrast`` the term name,
        ``estimate`` the coefficient, ``ci_low/high`` its Wald 95% CI, ``statistic`` the z,
        ``effect_size`` NaN, ``layer`` ``"all"``, ``n`` observations. ``method`` ends in
        ``"; not converged"`` when the optimizer failed (estimates kept, not to be trusted) or
        ``"; variance on boundary"`` when the seed variance is estimated as ~0. Other
        statsmodels warnings of the fit are swallowed; these suffixes summarise them.

    References: Laird & Ware (1982), Biometrics 38:963; statsmodels ``MixedLM``.
    """
    _check_adjust(adjust)
    df, metric = _single_metric(df, metric)
    _check_columns(df, groups=groups)
    response, predictors = _formula_columns(formula, df)
    keys = list(dict.fromkeys([*predictors, groups]))
    data = (df.dropna(subset=[response, *keys]).astype({response: np.float64})
            .groupby(keys, observed=True, as_index=False)[response].mean())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = smf.mixedlm(formula, data, groups=data[groups]).fit(reml=True)
    terms = list(fit.fe_params.index)
    conf = fit.conf_int().loc[terms]
    pvalue = fit.pvalues.loc[terms].to_numpy(np.float64)
    family = np.array([t != "Intercept" for t in terms])
    table = pd.DataFrame({
        "metric": metric, "layer": "all", "contrast": terms,
        "estimate": fit.fe_params.to_numpy(np.float64), "ci_low": conf.iloc[:, 0].to_numpy(),
        "ci_high": conf.iloc[:, 1].to_numpy(), "effect_size": np.nan,
        "statistic": fit.tvalues.loc[terms].to_numpy(np.float64), "pvalue": pvalue,
        "p_adj": np.nan,
        "method": f"MixedLM (random intercept: {groups}), {adjust or 'unadjusted'}"
                  + _fit_status(fit, caught),
        "n": int(fit.nobs)})
    table = _as_result(table)
    table.loc[family, "p_adj"] = adjust_pvalues(pvalue[family], adjust)
    return table


def spearman_ci(df: pd.DataFrame, x: str, y: str, *, n_boot: int = 2000, ci: float = 0.95,
                seed: int = 0, metric=None) -> pd.DataFrame:
    """Spearman rank correlation of two columns with a percentile-bootstrap CI over rows.

    Each row is one observation (no averaging); rows with NaN in ``x`` or ``y`` are dropped.

    Args:
        df: frame holding columns ``x`` and ``y`` (and ``metric`` if filtering).
        x, y: column names; the contrast reads ``"y ~ x"``.
        n_boot, ci, seed: bootstrap resampling (x, y) rows together.
        metric: keep only rows with this ``metric``; the label in the result. Default: the
            single metric in df, or ``y`` if df has no ``metric`` column.

    Returns:
        One row in :data:`RESULT_COLUMNS`: ``estimate``, ``effect_size`` and ``statistic`` all
        rho, ``pvalue`` from ``scipy.stats.spearmanr`` (``p_adj`` equal to it), ``layer``
        ``"model"``, ``n`` rows used. Fewer than 3 rows gives NaNs.

    Reference: Spearman (1904); Efron & Tibshirani (1993) for the bootstrap.
    """
    _check_columns(df, x=x, y=y)
    df, metric = _single_metric(df, metric)
    xy = df[[x, y]].astype(np.float64).dropna().to_numpy()  # (n, 2)
    if len(xy) < 3:
        row = _empty_row("Spearman", n=len(xy))
    else:
        res = sps.spearmanr(xy[:, 0], xy[:, 1])
        low, high = bootstrap_ci(xy, spearman_rho, n_boot=n_boot, ci=ci, seed=seed)
        rho = float(res.statistic)
        row = dict(estimate=rho, ci_low=low, ci_high=high, effect_size=rho, statistic=rho,
                   pvalue=float(res.pvalue), method="Spearman", n=len(xy))
    row.update(metric=y if metric is None else metric, layer="model", contrast=f"{y} ~ {x}",
               p_adj=row["pvalue"])
    return _as_result([row])
