"""Whole-table models: a linear mixed model with a random intercept per seed, and a rank correlation.

Both return :data:`~analysis_lib.stats.results.RESULT_COLUMNS` tables, like
:mod:`analysis_lib.stats.compare`.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from .effects import bootstrap_ci, spearman_rho
from .results import adjust_pvalues, bad_argument, check_adjust, check_columns, empty_row, result_table


def _single_metric(df: pd.DataFrame, metric) -> tuple[pd.DataFrame, object]:
    if "metric" not in df.columns:
        return df, metric
    present = sorted(df["metric"].dropna().unique())
    if metric is None:
        if len(present) > 1:
            raise bad_argument("metric", metric, f"df holds several metrics {present}; pick one")
        return df, present[0] if present else None
    if metric not in present:
        raise bad_argument("metric", metric, f"not in df; metrics are {present}")
    return df[df["metric"] == metric], metric


def _formula_columns(formula: str, df: pd.DataFrame) -> tuple[str, list[str]]:
    """Response column and the right-hand-side columns a formula mentions."""
    if "~" not in formula:
        raise bad_argument("formula", formula, "must look like 'value ~ C(condition) * C(layer)'")
    # Identifiers that are df columns; function names such as C or np.log are not columns.
    lhs, rhs = ([t for t in re.findall(r"[A-Za-z_]\w*", side) if t in df.columns]
                for side in formula.split("~", 1))
    if len(lhs) != 1:
        raise bad_argument("formula", formula, f"left side must name one column of {list(df.columns)}")
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
    check_adjust(adjust)
    df, metric = _single_metric(df, metric)
    check_columns(df, groups=groups)
    response, predictors = _formula_columns(formula, df)
    keys = list(dict.fromkeys([*predictors, groups]))
    data = (df.dropna(subset=[response, *keys]).astype({response: np.float64})
            .groupby(keys, observed=True, as_index=False)[response].mean())
    if data[groups].nunique() < 2:  # e.g. every run diverged: nothing to fit, one row that says so
        row = empty_row(f"MixedLM: not estimable from {len(data)} observations in "
                        f"{data[groups].nunique()} {groups} groups", n=len(data))
        return result_table([{**row, "metric": metric, "layer": "all", "contrast": "all"}])
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
    table = result_table(table)
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
    check_columns(df, x=x, y=y)
    df, metric = _single_metric(df, metric)
    xy = df[[x, y]].astype(np.float64).dropna().to_numpy()  # (n, 2)
    if len(xy) < 3:
        row = empty_row("Spearman", n=len(xy))
    else:
        res = sps.spearmanr(xy[:, 0], xy[:, 1])
        low, high = bootstrap_ci(xy, spearman_rho, n_boot=n_boot, ci=ci, seed=seed)
        rho = float(res.statistic)
        row = dict(estimate=rho, ci_low=low, ci_high=high, effect_size=rho, statistic=rho,
                   pvalue=float(res.pvalue), method="Spearman", n=len(xy))
    row.update(metric=y if metric is None else metric, layer="model", contrast=f"{y} ~ {x}",
               p_adj=row["pvalue"])
    return result_table([row])
