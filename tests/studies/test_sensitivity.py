"""Robustness of a verdict on a synthetic claim whose truth depends on one protocol choice."""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies.sensitivity import robustness, sensitivity_table, settings, with_robustness

# Measured: a mean of 0.75 over seeds, with a fixed half-width; the claim is "above the bar".
MEAN, HALF = 0.75, 0.02
CHOICES = {"bar": [0.8, 0.7, 0.9], "estimator": ["mean", "trimmed mean"], "runs": ["as run", "longer"]}
PROTOCOL = {"bar": 0.8, "estimator": "mean", "runs": "as run"}


def evaluate(setting: dict) -> list[dict]:
    """Two claims: 'above the bar' (true only at bar 0.7) and 'below 1' (true everywhere); no runs for 'longer'."""
    if setting["runs"] == "longer":
        return [{"claim": "above the bar", "measured": "", "reproduced": "not tested"},
                {"claim": "below one", "measured": "", "reproduced": "not tested"}]
    shift = 0.04 if setting["estimator"] == "trimmed mean" else 0.0
    low, high = MEAN + shift - HALF, MEAN + shift + HALF
    bar = setting["bar"]
    above = "yes" if low > bar else "no" if high < bar else "inconclusive"
    return [{"claim": "above the bar", "measured": f"[{low:.2f}, {high:.2f}] vs {bar}", "reproduced": above},
            {"claim": "below one", "measured": "", "reproduced": "yes" if high < 1 else "no"}]


def test_one_choice_varies_at_a_time_from_the_protocol():
    grid = settings(CHOICES, PROTOCOL)
    assert grid[0] == ("protocol", "as run", PROTOCOL)
    assert [(c, v) for c, v, _ in grid[1:]] == [("bar", 0.7), ("bar", 0.9), ("estimator", "trimmed mean"),
                                                ("runs", "longer")]
    assert all(sum(s[k] != PROTOCOL[k] for k in PROTOCOL) == 1 for _, _, s in grid[1:])
    with pytest.raises(ValueError, match="choice 'bar' needs its protocol value 0.5"):
        settings(CHOICES, {**PROTOCOL, "bar": 0.5})


def test_a_no_that_hangs_on_one_choice_is_conditional_and_names_it():
    table = sensitivity_table(evaluate, CHOICES, PROTOCOL)
    assert table[table["protocol"]].set_index("claim")["reproduced"].to_dict() == {"above the bar": "no",
                                                                                   "below one": "yes"}
    found = robustness(table)
    assert found == {"above the bar": "conditional: yes when bar = 0.7 (not tried: runs = longer)"}
    rows = with_robustness(evaluate(PROTOCOL), table)
    assert rows[0]["robustness"].startswith("conditional: yes when bar = 0.7") and rows[1]["robustness"] == ""
    assert list(verdict_table([{**r, "source": "", "n": 3} for r in rows])["robustness"])[1] == ""


def test_a_no_under_every_choice_is_robust_and_a_move_to_inconclusive_is_fragile():
    robust = sensitivity_table(evaluate, {"bar": [0.8, 0.9], "estimator": ["mean"]}, PROTOCOL | {"runs": "as run"})
    assert robustness(robust) == {"above the bar": "robust: no under every choice tried (1 alternative)"}
    fragile = sensitivity_table(evaluate, {"estimator": ["mean", "trimmed mean"]}, PROTOCOL)
    assert robustness(fragile) == {"above the bar": "fragile: inconclusive when estimator = trimmed mean; never yes"}
    untested = sensitivity_table(evaluate, {"runs": ["as run", "longer"]}, PROTOCOL)
    assert robustness(untested)["above the bar"].startswith("not checked: no alternative choice could be tested")
    assert np.isclose(MEAN + 0.04 + HALF, 0.81)  # the trimmed-mean interval straddles the 0.8 bar


def test_a_claim_no_choice_enters_says_so_and_a_stamped_choice_counts_as_tried():
    from analysis_lib.studies.sensitivity import decide, stamped

    def unmoved(setting):
        return [{"claim": "c", "measured": "m", "reproduced": "no", "rule": "r"}]

    rows, _ = decide(unmoved, {"bar": [0.8, 0.9]}, {"bar": 0.8})
    assert rows[0]["robustness"] == "not checked: none of the study's declared choices enters this claim"
    rows, _ = decide(lambda s: stamped(unmoved(s), f"bar {s['bar']}"), {"bar": [0.8, 0.9]}, {"bar": 0.8})
    assert rows[0]["robustness"] == "robust: no under every choice tried (1 alternative)"
    assert rows[0]["rule"] == "r; bar 0.8"
