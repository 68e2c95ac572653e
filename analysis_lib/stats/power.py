"""Power of a test: the smallest effect the design could detect, and the seeds the observed one needs.

An "inconclusive" outcome says the interval straddles the bar. Whether that means "no effect worth
mentioning" or "too few seeds to tell" depends on the design's power, so every inconclusive row
carries both numbers (:func:`power_note`):

- the **minimum detectable effect** (MDE): the smallest true effect that this design (its n, its
  observed spread, the α its p-value was compared with) would declare at ``power`` (80%);
- the **seeds needed** for the observed effect to be detected at that power.

Two ways, by what the row's result holds:

- **t-tests** (``method`` a paired t-test or a Welch t-test, with Cohen's d_z or Hedges' g in
  ``effect_size``): the exact noncentral-t power of ``statsmodels.stats.power`` (``TTestPower``
  for n pairs, ``TTestIndPower`` for n units in two equal groups). The spread is read back from
  the effect size: s = |estimate / effect_size|, so MDE = d_min × s.
- **any other interval** (a bootstrap CI of a mean, a ratio, a correlation): the normal
  approximation from the interval's half-width h, SE = h / z_{(1+ci)/2}, MDE = (z_{1-α/2} +
  z_power) × SE, and seeds ≈ n × ((z_{1-α/2} + z_power) × SE / |estimate − bar|)², since the SE
  of a mean over seeds shrinks like 1/√n.

α is the level the row's raw p-value had to pass: for an adjusted p (Holm, Bonferroni,
Benjamini-Hochberg) that is α × p / p_adj, the raw threshold the adjustment implied for this row.

References: Cohen (1988), Statistical Power Analysis for the Behavioral Sciences; statsmodels
``TTestPower`` / ``TTestIndPower`` (noncentral t).
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats as sps

POWER = 0.8
MAX_SEEDS = 10_000  # beyond this "seeds needed" is reported as "more than"


def effective_alpha(result: pd.Series, alpha: float = 0.05) -> float:
    """The level the row's raw p-value had to pass: ``alpha × p / p_adj`` when p was adjusted."""
    p, p_adj = result.get("pvalue", math.nan), result.get("p_adj", math.nan)
    if _finite(p) and _finite(p_adj) and p_adj > 0 and p_adj != p:
        return float(min(alpha, alpha * p / p_adj))
    return float(alpha)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _design(method) -> str | None:
    method = str(method or "")
    return "paired" if method.startswith("paired t-test") else "welch" if method.startswith("Welch t-test") else None


def t_test_power(design: str, n: int, alpha: float, power: float = POWER, effect: float | None = None):
    """``effect`` None: the standardised effect detectable at ``power``; else the n that detects it.

    Args:
        design: ``"paired"`` (n pairs, effect d_z) or ``"welch"`` (n units in two equal groups,
            effect Hedges' g; the pooled-variance power, which is Welch's for equal groups and
            variances). alpha: two-sided level.

    Returns:
        The effect (float), or the smallest whole n (units in both groups for ``"welch"``) with
        at least ``power``; ``inf`` beyond :data:`MAX_SEEDS`.
    """
    from statsmodels.stats.power import TTestIndPower, TTestPower

    paired = design == "paired"
    solver, key = (TTestPower(), "nobs") if paired else (TTestIndPower(), "nobs1")  # n1 = n2 = n / 2
    if effect is None:
        return float(solver.solve_power(effect_size=None, alpha=alpha, power=power, alternative="two-sided",
                                        **{key: n if paired else n / 2}))
    # The smallest whole number of seeds with at least `power`: doubling, then bisection (power
    # grows with n). statsmodels' root finder can return spurious roots below 2 for large effects.
    def enough(units: int) -> bool:
        return solver.power(effect_size=abs(effect), alpha=alpha, alternative="two-sided",
                            **{key: units if paired else units / 2}) >= power

    low, high = (1, 2) if paired else (2, 4)
    while not enough(high):
        if high > MAX_SEEDS:
            return math.inf
        low, high = high, 2 * high
    while high - low > (1 if paired else 2):
        mid = (low + high) // 2 if paired else 2 * ((low + high) // 4)
        mid = mid if low < mid < high else low + (1 if paired else 2)
        low, high = (low, mid) if enough(mid) else (mid, high)
    return float(high)


def detectable(result: pd.Series, *, alpha: float = 0.05, power: float = POWER, bar: float = 0.0,
               ci: float = 0.95) -> dict | None:
    """The minimum detectable effect and the seeds the observed effect needs, for one result row.

    Args:
        result: a stats result row (``estimate, ci_low, ci_high, n`` and, for t-tests,
            ``method, effect_size, pvalue, p_adj``). bar: the value the claim is tested against.
        alpha: the family level (made per-row by :func:`effective_alpha`). ci: the interval's coverage.

    Returns:
        ``{"mde", "n_needed", "alpha", "how"}`` (``n_needed`` None when the observed effect is 0,
        ``how`` "t-test" or "normal"), or None when the row has no interval or n < 2.
    """
    estimate, n = result.get("estimate", math.nan), result.get("n", 0)
    if not (_finite(estimate) and _finite(n) and n >= 2):
        return None
    level, gap = effective_alpha(result, alpha), abs(float(estimate) - bar)
    design, d = _design(result.get("method")), result.get("effect_size", math.nan)
    if design and bar == 0.0 and _finite(d) and d != 0 and n >= (2 if design == "paired" else 4):
        sd = abs(float(estimate) / float(d))
        mde = t_test_power(design, int(n), level, power) * sd
        needed = t_test_power(design, int(n), level, power, effect=float(d)) if gap > 0 else None
        return {"mde": mde, "n_needed": needed, "alpha": level, "how": "t-test"}
    lo, hi = result.get("ci_low", math.nan), result.get("ci_high", math.nan)
    if not (_finite(lo) and _finite(hi)) or hi <= lo:
        return None
    se = (float(hi) - float(lo)) / 2 / sps.norm.ppf((1 + ci) / 2)
    mde = (sps.norm.ppf(1 - level / 2) + sps.norm.ppf(power)) * se
    needed = float(n) * (mde / gap) ** 2 if gap > 0 else None
    return {"mde": mde, "n_needed": needed, "alpha": level, "how": "normal"}


def power_note(result: pd.Series, name: str, *, alpha: float = 0.05, power: float = POWER, bar: float = 0.0,
               ci: float = 0.95) -> str:
    """One sentence for a result row: what the design could detect, and what the observed effect needs.

    E.g. ``"80% power at α = 0.05 needs |Δ loss − 0| ≥ 0.31 (observed 0.12); the observed effect would
    need about 23 seeds (paired t-test power)"``; empty when :func:`detectable` has nothing to say.
    """
    found = detectable(result, alpha=alpha, power=power, bar=bar, ci=ci)
    if found is None:
        return ""
    gap = abs(float(result["estimate"]) - bar)
    distance = f"|{name}|" if bar == 0 else f"|{name} − {bar:g}|"
    text = (f"{power:.0%} power at α = {found['alpha']:.2g} needs {distance} ≥ {found['mde']:.3g} "
            f"(observed {gap:.3g})")
    if found["n_needed"] is None:
        return text + "; the observed effect is 0"
    seeds = math.ceil(found["n_needed"]) if math.isfinite(found["n_needed"]) else MAX_SEEDS + 1
    count = f"more than {MAX_SEEDS:,}" if seeds > MAX_SEEDS else f"about {seeds}"
    how = "t-test power" if found["how"] == "t-test" else "normal approximation from the interval"
    return text + f"; the observed effect would need {count} seeds ({how})"


def band_note(estimate: float, ci_low: float, ci_high: float, n: int, lo: float, hi: float, *,
              ci: float = 0.95) -> str:
    """For an interval that straddles an edge of the band [lo, hi]: the seeds it would need to clear it.

    An equivalence rule decides once the interval lies wholly inside the band (or wholly outside).
    Its half-width h must shrink to the distance d from the estimate to the nearest edge; since h
    shrinks like 1/√n, that takes about n·(h/d)² seeds (the normal approximation; the estimate
    assumed to stay where it is). Empty without a finite interval or n < 2.
    """
    values = (estimate, ci_low, ci_high, n)
    if not all(_finite(v) for v in values) or n < 2 or ci_high <= ci_low:
        return ""
    half, gap = (ci_high - ci_low) / 2, min(abs(estimate - lo), abs(estimate - hi))
    text = f"the {ci:.0%} interval (half-width {half:.3g}) must shrink to {gap:.3g} to clear the band edge"
    if gap == 0:
        return text + "; the estimate sits on the edge"
    seeds = math.ceil(n * (half / gap) ** 2 - 1e-9)  # round-off must not add a seed
    count = f"more than {MAX_SEEDS:,}" if seeds > MAX_SEEDS else f"about {seeds}"
    return text + f": {count} seeds (normal approximation from the interval)"
