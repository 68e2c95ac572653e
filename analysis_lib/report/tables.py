"""Tables as a report shows them: test tables and verdict tables as escaped pandas Stylers."""

from __future__ import annotations

import pandas as pd


def format_test_table(tests: pd.DataFrame, *, digits: int = 3, alpha: float = 0.05):
    """A Styler of a test table: significant digits, p-values in scientific form, significant rows bold."""
    fmt = {c: f"{{:.{digits}g}}" for c in ("estimate", "ci_low", "ci_high", "effect_size", "statistic")}
    fmt.update({"pvalue": "{:.2e}", "p_adj": "{:.2e}"})
    bold = lambda row: ["font-weight: bold" if row["p_adj"] < alpha else "" for _ in row]  # noqa: E731
    # escape="html": condition names come from parameters and must render as text.
    return tests.style.format(fmt, na_rep="–", escape="html").apply(bold, axis=1).hide(axis="index")


def format_verdict_table(verdict: pd.DataFrame):
    """A Styler of a verdict table, every value escaped, without the index."""
    return verdict.style.format(escape="html").hide(axis="index")
