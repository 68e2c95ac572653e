"""Tests of analysis_lib.stats.results: multiple-testing adjustment against statsmodels, and the fixed-column table.

``adjust_pvalues`` must match ``multipletests`` on the finite p-values, keep NaN out of the family and refuse an
unknown method by name; ``result_table`` must give exactly RESULT_COLUMNS with float64 numbers and int64 counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis_lib.stats.results import RESULT_COLUMNS, adjust_pvalues, result_table
from tests.cases import RTOL


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
def test_adjust_matches_multipletests_and_keeps_nan(method):
    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan, 0.2, 0.001])
    got = adjust_pvalues(p, method)
    finite = ~np.isnan(p)
    np.testing.assert_array_equal(np.isnan(got), ~finite)
    np.testing.assert_allclose(got[finite], multipletests(p[finite], method=method)[1],
                               rtol=RTOL)


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
@pytest.mark.parametrize("seed", range(5))
def test_adjust_matches_multipletests_on_random_families_with_ties(method, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, size=int(rng.integers(1, 40))) ** 3  # many small p-values: caps and crossings
    p[rng.integers(0, len(p), size=len(p) // 3)] = p[0]  # ties
    p[::7] = np.minimum(1.0, p[::7] * 50)
    np.testing.assert_allclose(adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12,
                               atol=1e-15)


def test_adjust_none_and_all_nan():
    p = np.array([0.5, np.nan])
    np.testing.assert_array_equal(adjust_pvalues(p, None), p)
    assert np.isnan(adjust_pvalues([np.nan, np.nan])).all()


def test_adjust_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="invalid argument method"):
        adjust_pvalues([0.1], method="sidak-ish")


def test_result_table_has_the_fixed_columns_and_dtypes():
    rows = [dict(metric="loss", layer="fc1", contrast="adam - sgd", estimate=1, ci_low=0, ci_high=2,
                 effect_size=0.5, statistic=3, pvalue=0.01, p_adj=0.02, method="paired t-test", n=10, extra="x"),
            dict(metric="loss", layer="fc2", contrast="adam - sgd", n=3)]  # missing numbers become NaN
    table = result_table(rows)
    assert list(table.columns) == list(RESULT_COLUMNS)  # "extra" dropped, order fixed
    numeric = ["estimate", "ci_low", "ci_high", "effect_size", "statistic", "pvalue", "p_adj"]
    assert (table[numeric].dtypes == np.float64).all() and table["n"].dtype == np.int64
    assert table.loc[0, "estimate"] == 1.0 and table.loc[0, "n"] == 10
    assert table.loc[1, numeric].isna().all()
    assert list(result_table([]).columns) == list(RESULT_COLUMNS) and result_table([]).empty
    pd.testing.assert_frame_equal(result_table(table), table)  # a frame goes through unchanged
