"""Tests of study 01's rules (analysis_lib.studies.layer_dynamics) on hand-made result tables.

The rotation claims read a Spearman correlation's CI (pooled and within each optimiser) against a positive
prediction, LARS's premise the Adam − SGD spread difference against a negative one, each needing p < 0.05 as well;
check_parameters refuses bad parameters by name.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib.stats.results import result_table
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import layer_dynamics as study
from analysis_lib.validation import ConfigError


def _row(metric, contrast, low, high, p=0.01, n=12):
    return dict(metric=metric, layer="model", contrast=contrast, estimate=(low + high) / 2, ci_low=low, ci_high=high,
                effect_size=np.nan, statistic=np.nan, pvalue=p, p_adj=p, method="Spearman", n=n)


def test_verdict_rows_read_each_interval_with_the_predicted_sign():
    rho = result_table([_row("test_acc", "test_acc ~ rotation", 0.2, 0.7)])
    within = result_table([_row("sgd", "test_acc ~ rotation", 0.1, 0.6),  # positive: yes
                           _row("adam", "test_acc ~ rotation", -0.7, -0.2),  # negative: contradicts
                           _row("adamw", "test_acc ~ rotation", 0.1, 0.6, p=0.2)])  # p too large
    spread = result_table([_row("update_ratio spread", "adam - sgd [model=mlp]", -0.8, -0.3),  # more even: yes
                           _row("update_ratio spread", "adam - sgd [model=cnn]", -0.2, 0.3)])  # straddles
    table = verdict_table(study.verdict_rows(rho, within, spread))
    assert len(table) == 1 + 3 + 2
    assert table["reproduced"].tolist() == ["yes", "yes", "no", "inconclusive", "yes", "inconclusive"]
    assert (table["source"].iloc[:4] == study.ROTATION).all() and (table["source"].iloc[4:] == study.LARS).all()
    assert "sgd" in table["claim"].iloc[1] and "[model=cnn]" in table["claim"].iloc[5]
    assert table["measured"].iloc[0].startswith("Spearman rho = 0.45 [0.2, 0.7]") and (table["n"] == 12).all()


def test_a_negative_pooled_correlation_contradicts_the_claim():
    rho = result_table([_row("test_acc", "test_acc ~ rotation", -0.6, -0.1)])
    rows = study.verdict_rows(rho, result_table([]), result_table([]))
    assert len(rows) == 1 and rows[0]["reproduced"] == "no"


ARMS = {"main": {}, "sweep": {}}
GOOD = dict(main_arms=["main"], sweep_arms=["sweep"], alpha=0.05, n_boot=100)


def test_check_parameters_accepts_a_good_design():
    study.check_parameters(ARMS, **GOOD)


@pytest.mark.parametrize("change, name", [
    ({"main_arms": ["nope"]}, "main_arms"),
    ({"main_arms": []}, "main_arms"),
    ({"sweep_arms": "sweep"}, "sweep_arms"),
    ({"alpha": 1.0}, "alpha"),
    ({"alpha": 0}, "alpha"),
    ({"n_boot": 0}, "n_boot"),
])
def test_check_parameters_refuses_by_name(change, name):
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        study.check_parameters(ARMS, **{**GOOD, **change})
