"""Verdict tables: the claim from the literature, what we measured, and whether it reproduced.

A verdict is read off a confidence interval, never off a p-value alone: a claim of a positive
effect reproduces when the whole interval is above zero, is contradicted when the whole interval
is below zero, and is inconclusive otherwise (the experiment cannot tell at this n).
"""

from __future__ import annotations

import math

import pandas as pd

VERDICT_COLUMNS = ["claim", "source", "measured", "n", "reproduced"]
OUTCOMES = ("yes", "no", "partly", "inconclusive")


def verdict_from_interval(ci_low: float, ci_high: float, expected: str = "positive") -> str:
    """``"yes"`` when the interval lies on the expected side of 0, ``"no"`` when on the other side.

    Args:
        ci_low, ci_high: confidence interval of the effect (NaN gives ``"inconclusive"``).
        expected: ``"positive"`` or ``"negative"``, the sign the claim predicts.
    """
    if expected not in ("positive", "negative"):
        raise ValueError(f"expected={expected!r}: must be 'positive' or 'negative'")
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return "inconclusive"
    above, below = ci_low > 0, ci_high < 0
    if expected == "negative":
        above, below = below, above
    return "yes" if above else "no" if below else "inconclusive"


def describe_estimate(row: pd.Series, name: str, digits: int = 3) -> str:
    """``"rho = 0.41 [0.12, 0.66], p = 0.003"`` from a stats result row."""
    g = lambda v: f"{v:.{digits}g}"  # noqa: E731
    p = row.get("p_adj", row.get("pvalue"))
    return f"{name} = {g(row['estimate'])} [{g(row['ci_low'])}, {g(row['ci_high'])}], p = {p:.2g}"


def verdict_table(rows: list[dict]) -> pd.DataFrame:
    """A verdict table with fixed columns; each row needs every key of VERDICT_COLUMNS."""
    for row in rows:
        missing = set(VERDICT_COLUMNS) - set(row)
        if missing:
            raise ValueError(f"verdict row {row!r} lacks {sorted(missing)}")
        if row["reproduced"] not in OUTCOMES:
            raise ValueError(f"reproduced={row['reproduced']!r}: must be one of {OUTCOMES}")
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdict_row(claim: str, source: str, result: pd.Series, name: str, expected: str,
                alpha: float = 0.05) -> dict:
    """A verdict row from one stats result row: the estimate with its CI, n, and the outcome.

    The outcome is read off the CI, and downgraded to ``"inconclusive"`` when the (adjusted)
    p-value is not below ``alpha``: with few seeds a bootstrap CI can exclude zero while the test
    cannot, and a verdict needs both.
    """
    outcome = verdict_from_interval(result["ci_low"], result["ci_high"], expected)
    p = result.get("p_adj", result.get("pvalue", float("nan")))
    if outcome != "inconclusive" and not (p < alpha):
        outcome = "inconclusive"
    return {"claim": claim, "source": source, "measured": describe_estimate(result, name),
            "n": int(result["n"]), "reproduced": outcome}


def verdict_within(ci_low: float, ci_high: float, lo: float, hi: float) -> str:
    """``"yes"`` when the CI lies inside [lo, hi] (equivalence), ``"no"`` when it lies outside."""
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return "inconclusive"
    if lo <= ci_low and ci_high <= hi:
        return "yes"
    return "no" if ci_high < lo or ci_low > hi else "inconclusive"


def share_verdict(flags) -> str:
    """``yes`` when every run satisfied a criterion, ``partly`` when some, ``no`` when none.

    Args:
        flags: one boolean (or 0/1) per run; empty gives ``"inconclusive"``.
    """
    if len(flags) == 0:
        return "inconclusive"
    return "yes" if flags.all() else "partly" if flags.any() else "no"
