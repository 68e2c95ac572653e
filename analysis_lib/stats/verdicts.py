"""Verdict tables: the claim from the literature, what we measured, and whether it reproduced.

A verdict is read off a confidence interval, never off a p-value alone: a claim of a positive
effect reproduces when the whole interval is above zero, is contradicted when the whole interval
is below zero, and is inconclusive otherwise (the experiment cannot tell at this n).

A claim the data never reached is **not tested**, never "yes" or "no": its interval could not be
computed (NaN), no run contributed (n = 0), or none of the study's runs finished (all diverged or
failed; :func:`verdict_table` with ``runs``).

Besides the five required columns a row may carry ``rule`` (the rule that decided it, in words,
written by the code that applied it; the report lists each distinct rule once) and ``power`` (for
an inconclusive row: the smallest effect the design could detect at 80% power and the seeds the
observed effect would need, :mod:`analysis_lib.stats.power`) and ``robustness`` (for a "no" or
"partly": whether it holds under the study's alternative protocol choices,
:mod:`analysis_lib.studies.sensitivity`).
"""

from __future__ import annotations

import math

import pandas as pd

REQUIRED_COLUMNS = ["claim", "source", "measured", "n", "reproduced"]
VERDICT_COLUMNS = [*REQUIRED_COLUMNS, "rule", "power", "robustness"]  # the last three may be left out ("")
NOT_TESTED = "not tested"
NO_POWER = "not computed for this rule (it combines several tests, or has no interval)"
OUTCOMES = ("yes", "no", "partly", "inconclusive", NOT_TESTED)


def verdict_from_interval(ci_low: float, ci_high: float, expected: str = "positive") -> str:
    """``"yes"`` when the interval lies on the expected side of 0, ``"no"`` when on the other side.

    Args:
        ci_low, ci_high: confidence interval of the effect (NaN gives ``"not tested"``).
        expected: ``"positive"`` or ``"negative"``, the sign the claim predicts.
    """
    if expected not in ("positive", "negative"):
        raise ValueError(f"expected={expected!r}: must be 'positive' or 'negative'")
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return NOT_TESTED
    above, below = ci_low > 0, ci_high < 0
    if expected == "negative":
        above, below = below, above
    return "yes" if above else "no" if below else "inconclusive"


def describe_estimate(row: pd.Series, name: str, digits: int = 3) -> str:
    """``"rho = 0.41 [0.12, 0.66], p = 0.003"`` from a stats result row."""
    g = lambda v: f"{v:.{digits}g}"  # noqa: E731
    p = row.get("p_adj", row.get("pvalue"))
    return f"{name} = {g(row['estimate'])} [{g(row['ci_low'])}, {g(row['ci_high'])}], p = {p:.2g}"


def verdict_table(rows: list[dict], *, runs: dict | None = None) -> pd.DataFrame:
    """A verdict table with fixed columns; each row needs every key of REQUIRED_COLUMNS (the others are optional).

    Args:
        rows: the study's verdict rows.
        runs: the study's run status counts (``GridResult.status_counts()``). When none of the
            runs finished (all diverged or failed) every row is "not tested", its reason first.

    A row with n = 0 is "not tested" whatever its rule said: no data reached it.
    """
    total = sum((runs or {}).values())
    if runs is not None and not runs.get("finished", 0):
        reason = (f"not tested: none of {total} runs finished ({runs.get('diverged', 0)} diverged, "
                  f"{runs.get('failed', 0)} failed)")
        rows = [{**row, "measured": f"{reason}; {row.get('measured', '')}", "reproduced": NOT_TESTED}
                for row in rows]
    rows = [{**row, "reproduced": NOT_TESTED} if _no_data(row.get("n")) else row for row in rows]
    rows = [{"rule": "", "power": "", "robustness": "", **row} for row in rows]
    for row in rows:  # every inconclusive row says what the design could detect, or that it was not computed
        if row["reproduced"] == "inconclusive" and not row["power"]:
            row["power"] = NO_POWER
    for row in rows:
        missing = set(REQUIRED_COLUMNS) - set(row)
        if missing:
            raise ValueError(f"verdict row {row!r} lacks {sorted(missing)}")
        if row["reproduced"] not in OUTCOMES:
            raise ValueError(f"reproduced={row['reproduced']!r}: must be one of {OUTCOMES}")
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _no_data(n) -> bool:
    try:
        return n is None or math.isnan(float(n)) or float(n) == 0
    except (TypeError, ValueError):
        return False


def verdict_row(claim: str, source: str, result: pd.Series, name: str, expected: str,
                alpha: float = 0.05) -> dict:
    """A verdict row from one stats result row: the estimate with its CI, n, and the outcome.

    The outcome is read off the CI, and downgraded to ``"inconclusive"`` when the (adjusted)
    p-value is not below ``alpha``: with few seeds a bootstrap CI can exclude zero while the test
    cannot, and a verdict needs both.
    """
    from .power import power_note

    outcome = verdict_from_interval(result["ci_low"], result["ci_high"], expected)
    p = result.get("p_adj", result.get("pvalue", float("nan")))
    if outcome not in ("inconclusive", NOT_TESTED) and not (p < alpha):
        outcome = "inconclusive"
    return {"claim": claim, "source": source, "measured": describe_estimate(result, name),
            "n": int(result["n"]), "reproduced": outcome, "rule": interval_rule(result, expected, alpha),
            "power": power_note(result, name, alpha=alpha) if outcome == "inconclusive" else ""}


def interval_rule(result: pd.Series, expected: str, alpha: float = 0.05) -> str:
    """The rule :func:`verdict_row` applies to ``result``, in words (its test and adjustment named)."""
    method = str(result.get("method", "") or "")
    adjusted = next((a for a in ("holm", "fdr_bh", "bonferroni") if method.endswith(a)), None)
    p = f"the {ADJUSTMENTS[adjusted]}-adjusted p" if adjusted else "p"
    side, other = ("above", "below") if expected == "positive" else ("below", "above")
    test = method.split(",")[0].strip() or "the test"
    return (f"yes when the 95% CI lies {side} 0 and {p} < {alpha:g} ({test}); no when it lies {other} 0 "
            f"and {p} < {alpha:g}; inconclusive otherwise")


ADJUSTMENTS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}


def verdict_within(ci_low: float, ci_high: float, lo: float, hi: float) -> str:
    """``"yes"`` when the CI lies inside [lo, hi] (equivalence), ``"no"`` when it lies outside."""
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return NOT_TESTED
    if lo <= ci_low and ci_high <= hi:
        return "yes"
    return "no" if ci_high < lo or ci_low > hi else "inconclusive"


def share_verdict(flags) -> str:
    """``yes`` when every run satisfied a criterion, ``partly`` when some, ``no`` when none.

    Args:
        flags: one boolean (or 0/1) per run; empty gives ``"not tested"``.
    """
    if len(flags) == 0:
        return NOT_TESTED
    return "yes" if flags.all() else "partly" if flags.any() else "no"
