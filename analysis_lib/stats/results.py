"""The fixed-column result table every comparison returns, and multiple-testing adjustment.

Every test function of :mod:`analysis_lib.stats` returns a DataFrame with exactly
:data:`RESULT_COLUMNS` (``metric, layer, contrast, estimate, ci_low, ci_high, effect_size,
statistic, pvalue, p_adj, method, n``), so tables from different tests concatenate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESULT_COLUMNS = ("metric", "layer", "contrast", "estimate", "ci_low", "ci_high", "effect_size",
                  "statistic", "pvalue", "p_adj", "method", "n")
ADJUST_METHODS = ("holm", "fdr_bh", "bonferroni", None)


def bad_argument(name: str, value, allowed: str) -> ValueError:
    """The ValueError ``invalid argument <name>=<value>: <allowed>`` (to raise)."""
    return ValueError(f"invalid argument {name}={value!r}: {allowed}")


def check_adjust(adjust, name: str = "adjust") -> None:
    """Raise ValueError unless ``adjust`` is one of :data:`ADJUST_METHODS`."""
    if adjust not in ADJUST_METHODS:
        raise bad_argument(name, adjust, f"must be one of {ADJUST_METHODS}")


def check_columns(df: pd.DataFrame, **columns: str) -> None:
    """Raise ValueError naming the argument whose column is not in ``df``."""
    for name, col in columns.items():
        if col not in df.columns:
            raise bad_argument(name, col, f"not a column of df; columns are {list(df.columns)}")


def adjust_pvalues(pvalues, method: str | None = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values; NaN p-values stay NaN and are not in the family.

    Args:
        pvalues: shape (m,), raw p-values, NaN allowed.
        method: ``"holm"`` (family-wise error), ``"fdr_bh"`` (false discovery rate),
            ``"bonferroni"``, or ``None`` for no adjustment (returns a float64 copy).

    Returns:
        shape (m,) float64 adjusted p-values, each >= its raw p-value and <= 1.

    With the m p-values sorted, p_(1) ≤ … ≤ p_(m): Holm's adjusted p_(i) is the running maximum of
    (m − j + 1) p_(j) over j ≤ i, Benjamini–Hochberg's the running minimum of m p_(j) / j over
    j ≥ i, Bonferroni's m p_(i), each capped at 1. These are statsmodels' ``multipletests``
    values (tested equal); written out here because its Holm branch runs ``gc.collect()`` on every
    call, 0.19 s in a notebook kernel holding torch and the run tables (measured: 36 calls took 6.8 s
    of a 10-s sensitivity analysis).

    Reference: Holm (1979); Benjamini & Hochberg (1995).
    """
    check_adjust(method, "method")
    p = np.asarray(pvalues, dtype=np.float64).copy()
    finite = ~np.isnan(p)
    if method is not None and finite.any():
        p[finite] = _adjusted(p[finite], method)
    return p


def _adjusted(p: np.ndarray, method: str) -> np.ndarray:
    m = len(p)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        ranked = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    elif method == "fdr_bh":
        ranked = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:  # bonferroni
        ranked = ranked * m
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    return out


def result_table(rows) -> pd.DataFrame:
    """Rows (list of dicts or a frame) as a table with RESULT_COLUMNS and float64 numbers."""
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    numeric = ["estimate", "ci_low", "ci_high", "effect_size", "statistic", "pvalue", "p_adj"]
    return table.astype({**{c: np.float64 for c in numeric}, "n": np.int64})


def finish_table(rows: list[dict], adjust) -> pd.DataFrame:
    """Rows as a result table with ``p_adj`` adjusted across all of them and the method named."""
    table = result_table(rows)
    table["p_adj"] = adjust_pvalues(table["pvalue"].to_numpy(), adjust)
    table["method"] = table["method"] + f", {adjust or 'unadjusted'}"
    return table


def empty_row(method: str, estimate=np.nan, n: int = 0) -> dict:
    """A result row without an interval or test (too few units), for :func:`result_table`."""
    return dict(estimate=estimate, ci_low=np.nan, ci_high=np.nan, effect_size=np.nan,
                statistic=np.nan, pvalue=np.nan, method=method, n=n)
