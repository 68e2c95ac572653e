"""Power of a verdict, checked by simulation.

A design run at its own minimum detectable effect rejects in about 80% of simulated experiments
(scipy's t-tests, not statsmodels' power formulas).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib.stats.power import detectable, effective_alpha, power_note
from analysis_lib.stats.verdicts import verdict_row, verdict_table

SIMULATIONS = 6000


def _rejection_rate(design: str, n: int, effect: float, alpha: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    if design == "paired":
        x = rng.normal(effect, 1.0, size=(SIMULATIONS, n))
        p = sps.ttest_1samp(x, 0.0, axis=1).pvalue
    else:
        a = rng.normal(effect, 1.0, size=(SIMULATIONS, n // 2))
        b = rng.normal(0.0, 1.0, size=(SIMULATIONS, n // 2))
        p = sps.ttest_ind(a, b, axis=1, equal_var=True).pvalue
    return float((p < alpha).mean())


@pytest.mark.parametrize("design, method, n", [("paired", "paired t-test, holm", 5), ("paired", "paired t-test", 12),
                                               ("welch", "Welch t-test", 10)])
def test_a_design_at_its_minimum_detectable_effect_has_80_percent_power(design, method, n):
    sd, estimate = 2.0, 0.3  # observed: d = 0.15, far below what n seeds can detect
    row = pd.Series({"estimate": estimate, "effect_size": estimate / sd, "n": n, "method": method,
                     "pvalue": 0.4, "p_adj": 0.4, "ci_low": -1.0, "ci_high": 1.6})
    found = detectable(row, alpha=0.05)
    assert found["how"] == "t-test"
    rate = _rejection_rate(design, n, found["mde"] / sd, 0.05)
    assert rate == pytest.approx(0.8, abs=0.025)
    needed = round(found["n_needed"])  # seeds (pairs, or units in both groups) for the observed d
    assert needed > 4 * n
    assert _rejection_rate(design, needed + (needed % 2 if design == "welch" else 0), estimate / sd, 0.05) \
        == pytest.approx(0.8, abs=0.03)


def test_an_adjusted_p_value_lowers_the_level_the_design_must_pass():
    row = pd.Series({"pvalue": 0.01, "p_adj": 0.03})
    assert effective_alpha(row, 0.05) == pytest.approx(0.05 / 3)
    assert effective_alpha(pd.Series({"pvalue": 0.01, "p_adj": 0.01}), 0.05) == 0.05
    strict = detectable(pd.Series({"estimate": 1.0, "effect_size": 0.5, "n": 6, "method": "paired t-test, holm",
                                   "pvalue": 0.01, "p_adj": 0.05}))
    loose = detectable(pd.Series({"estimate": 1.0, "effect_size": 0.5, "n": 6, "method": "paired t-test",
                                  "pvalue": 0.01, "p_adj": 0.01}))
    assert strict["mde"] > loose["mde"] and strict["n_needed"] > loose["n_needed"]


def test_any_other_interval_uses_the_normal_approximation_from_its_half_width():
    se = 0.1
    row = pd.Series({"estimate": 0.55, "ci_low": 0.55 - 1.959964 * se, "ci_high": 0.55 + 1.959964 * se, "n": 8,
                     "method": "bootstrap"})
    found = detectable(row, bar=0.5)
    assert found["how"] == "normal"
    assert found["mde"] == pytest.approx((1.959964 + 0.841621) * se, rel=1e-4)
    assert found["n_needed"] == pytest.approx(8 * (found["mde"] / 0.05) ** 2)
    assert "|Δ − 0.5| ≥ 0.28" in power_note(row, "Δ", bar=0.5)


def test_rows_without_data_get_no_power_note():
    assert detectable(pd.Series({"estimate": np.nan, "n": 5})) is None
    assert detectable(pd.Series({"estimate": 1.0, "n": 1, "ci_low": 0, "ci_high": 2})) is None
    assert power_note(pd.Series({"estimate": 1.0, "n": 4, "ci_low": np.nan, "ci_high": np.nan}), "x") == ""


def test_inconclusive_verdict_rows_carry_power_and_every_row_its_rule():
    base = {"effect_size": 0.4, "n": 5, "method": "paired t-test, holm", "pvalue": 0.2, "p_adj": 0.4}
    unsure = verdict_row("c", "s", pd.Series({**base, "estimate": 0.2, "ci_low": -0.1, "ci_high": 0.5}), "Δ",
                         "positive")
    sure = verdict_row("c", "s", pd.Series({**base, "estimate": 0.9, "ci_low": 0.5, "ci_high": 1.3, "pvalue": 0.001,
                                            "p_adj": 0.004, "effect_size": 2.5}), "Δ", "positive")
    assert unsure["reproduced"] == "inconclusive" and unsure["power"].startswith("80% power at α = 0.025 needs |Δ| ≥")
    assert "about" in unsure["power"] and "seeds (t-test power)" in unsure["power"]
    assert sure["reproduced"] == "yes" and sure["power"] == ""
    assert sure["rule"] == ("yes when the 95% CI lies above 0 and the Holm-adjusted p < 0.05 (paired t-test); "
                            "no when it lies below 0 and the Holm-adjusted p < 0.05; inconclusive otherwise")
    table = verdict_table([unsure, sure, {"claim": "d", "source": "s", "measured": "m", "n": 3, "reproduced": "no"}])
    assert list(table["rule"])[2] == "" and list(table["power"])[2] == ""


def test_an_interval_across_a_band_edge_needs_the_seeds_that_shrink_it_inside():
    from analysis_lib.stats.power import band_note

    note = band_note(1.1, 0.9, 1.3, 4, 0.8, 1.2)  # half-width 0.2, 0.1 from the upper edge: 4 x (0.2/0.1)^2
    assert note.endswith(": about 16 seeds (normal approximation from the interval)")
    assert band_note(1.0, float("nan"), 1.2, 4, 0.8, 1.2) == ""


def test_every_inconclusive_row_says_something_about_power():
    from analysis_lib.stats.verdicts import NO_POWER

    table = verdict_table([{"claim": "c", "source": "", "measured": "m", "n": 3, "reproduced": "inconclusive"}])
    assert table["power"].tolist() == [NO_POWER]
