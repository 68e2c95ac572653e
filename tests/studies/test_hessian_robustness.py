"""Study 03's alternative outlier rules on hand-made spectra whose outliers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.studies.hessian_robustness import OUTLIER_RULES, counts_by_rule


def _spectra() -> pd.DataFrame:
    """One run, C = 3: a bulk of 200 eigenvalues in [-0.01, 0.01], at init one outlier of 1.0, at the end 3 of 5-20."""
    rng = np.random.default_rng(0)
    bulk = rng.uniform(-0.01, 0.01, 200)
    init, final = np.r_[bulk, 1.0], np.r_[bulk, 0.5, 5.0, 10.0, 20.0]  # 0.5: below the initial λ_max
    rows = [{"run_id": "r", "dataset": "gaussian_mixture", "n_classes": 3, "width": 8, "seed": 0, "step": step,
             "method": "exact", "probe": 0, "eigenvalue": lam, "weight": 1.0}
            for step, values in ((0, init), (100, final)) for lam in values]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rule, expected", [
    (OUTLIER_RULES[0], 4),  # the largest log gap among the top 2C + 2 = 8: between 0.5 and the bulk
    (OUTLIER_RULES[1], 4),
    (OUTLIER_RULES[2], 3),  # above the initial λ_max of 1.0
    (OUTLIER_RULES[3], 4),  # Tukey's far-out fence sits just above the bulk
])
def test_each_rule_counts_the_outliers_it_defines(rule, expected):
    counts = counts_by_rule(_spectra(), {"r": 3}, rule)
    assert counts["value"].tolist() == [expected] and counts["n_classes"].tolist() == [3]


def test_an_unknown_rule_is_refused_and_slq_spectra_are_left_out():
    with pytest.raises(ValueError, match="rule='bulk'"):
        counts_by_rule(_spectra(), {"r": 3}, "bulk")
    assert counts_by_rule(_spectra().assign(method="slq"), {"r": 3}, OUTLIER_RULES[0]).empty
