"""The general verdict rules of analysis_lib.stats.verdicts, on hand-made cases.

A verdict read off a confidence interval, downgraded without p < alpha; the fixed-column verdict
table; share_verdict and verdict_within.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis_lib.stats.verdicts import share_verdict, verdict_from_interval, verdict_row, verdict_table, verdict_within


@pytest.mark.parametrize("low, high, expected, outcome", [
    (0.1, 0.5, "positive", "yes"),
    (-0.5, -0.1, "positive", "no"),
    (-0.1, 0.5, "positive", "inconclusive"),
    (-0.5, -0.1, "negative", "yes"),
    (0.1, 0.5, "negative", "no"),
    (float("nan"), 0.5, "positive", "not tested"),
])
def test_verdict_from_interval(low, high, expected, outcome):
    assert verdict_from_interval(low, high, expected) == outcome


def test_verdict_rows_and_table():
    result = pd.Series({"estimate": 0.4, "ci_low": 0.1, "ci_high": 0.7, "pvalue": 0.01, "p_adj": 0.02, "n": 12})
    row = verdict_row("claim", "paper", result, "rho", "positive")
    assert row["reproduced"] == "yes" and row["n"] == 12 and "rho = 0.4 [0.1, 0.7]" in row["measured"]
    assert list(verdict_table([row]).columns) == ["claim", "source", "measured", "n", "reproduced", "rule", "power",
                                                 "robustness"]
    weak = verdict_row("claim", "paper", result.replace({0.02: 0.2}), "rho", "positive")
    assert weak["reproduced"] == "inconclusive"  # CI above 0 but p_adj >= alpha
    assert weak["power"].startswith("80% power") and row["power"] == ""  # inconclusive rows only
    with pytest.raises(ValueError, match="reproduced"):
        verdict_table([{**row, "reproduced": "maybe"}])


@pytest.mark.parametrize("flags, expected", [
    ([True, True], "yes"), ([True, False], "partly"), ([False, False], "no"), ([], "not tested")])
def test_share_verdict(flags, expected):
    assert share_verdict(pd.Series(flags, dtype=bool)) == expected


@pytest.mark.parametrize("low, high, expected", [
    (0.9, 1.1, "yes"), (1.3, 1.5, "no"), (0.5, 0.7, "no"), (0.7, 0.9, "inconclusive"), (math.nan, 1.0, "not tested")])
def test_verdict_within_an_equivalence_band(low, high, expected):
    assert verdict_within(low, high, 0.8, 1.2) == expected


def test_a_verdict_without_data_is_not_tested():
    rows = [{"claim": "a", "source": "s", "measured": "d = 0.4 [0.1, 0.7]", "n": 5, "reproduced": "yes"},
            {"claim": "b", "source": "s", "measured": "no run qualified", "n": 0, "reproduced": "no"}]
    table = verdict_table(rows, runs={"finished": 5, "diverged": 1, "failed": 0})
    assert table["reproduced"].tolist() == ["yes", "not tested"]  # n = 0 never reads as yes or no
    none_finished = verdict_table(rows, runs={"finished": 0, "diverged": 4, "failed": 2})
    assert set(none_finished["reproduced"]) == {"not tested"}
    assert none_finished["measured"].iloc[0].startswith("not tested: none of 6 runs finished (4 diverged, 2 failed)")
