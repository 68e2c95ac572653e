"""Tests of analysis_lib.stats.compare (compare_conditions, equivalence_test) against direct scipy/statsmodels calls.

Synthetic tidy frames with a known effect, float64 throughout: test statistics, p-values, effect sizes, Holm
adjustment, pairing by seed, missing and duplicate units, row order, bad arguments, and the TOST equivalence test.
Cases are written as data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from analysis_lib.stats import compare
from analysis_lib.stats.results import RESULT_COLUMNS
from tests.cases import RTOL, make_frame, slow_hedges_g


def unit_values(df, level, metric, layer, seeds=None) -> np.ndarray:
    """Slow obvious reference: the values of one level, ordered by seed."""
    sub = df[(df.optimizer == level) & (df.metric == metric) & (df.layer == layer)]
    sub = sub.groupby("seed")["value"].mean()
    return sub.loc[seeds].to_numpy() if seeds is not None else sub.to_numpy()


# ------------------------------------------------------------------------------------------
# compare_conditions against scipy

SCIPY_CASES = [  # (paired, test, method name, reference call on (treatment, baseline))
    (True, "t", "paired t-test", lambda t, b: sps.ttest_rel(t, b)),
    (True, "auto", "paired t-test", lambda t, b: sps.ttest_rel(t, b)),
    (True, "rank", "Wilcoxon signed-rank", lambda t, b: sps.wilcoxon(t, b)),
    (False, "t", "Welch t-test", lambda t, b: sps.ttest_ind(t, b, equal_var=False)),
    (False, "rank", "Mann-Whitney U",
     lambda t, b: sps.mannwhitneyu(t, b, alternative="two-sided")),
]


@pytest.mark.parametrize("paired, test, name, reference", SCIPY_CASES)
def test_compare_matches_scipy(paired, test, name, reference):
    df = make_frame({"sgd": 0.0, "adam": 0.05, "adamw": -0.03}, layers=("fc1", "fc2", "model"))
    out = compare.compare_conditions(df, "optimizer", baseline="sgd", paired=paired, test=test,
                                     n_boot=200)
    assert list(out.columns) == list(RESULT_COLUMNS)
    assert len(out) == 6  # 2 levels x 3 layers
    for row in out.itertuples():
        level = row.contrast.split(" - ")[0]
        t = unit_values(df, level, row.metric, row.layer)
        b = unit_values(df, "sgd", row.metric, row.layer)
        ref = reference(t, b)
        np.testing.assert_allclose([row.statistic, row.pvalue], [ref[0], ref[1]], rtol=RTOL)
        assert row.method == f"{name}, holm"
        if paired:
            d = t - b
            assert row.n == 10
            np.testing.assert_allclose(row.estimate, d.mean(), rtol=RTOL)
            np.testing.assert_allclose(row.effect_size, d.mean() / d.std(ddof=1), rtol=RTOL)
        else:
            assert row.n == 20
            np.testing.assert_allclose(row.estimate, t.mean() - b.mean(), rtol=RTOL)
            np.testing.assert_allclose(row.effect_size, slow_hedges_g(t, b), rtol=RTOL)
    np.testing.assert_allclose(out.p_adj, multipletests(out.pvalue, method="holm")[1], rtol=RTOL)


KNOWN_EFFECT_CASES = [  # (paired, seed_sd): unpaired needs little between-seed spread for p<1e-6
    (True, 0.5),
    (False, 0.0),
]


@pytest.mark.parametrize("paired, seed_sd", KNOWN_EFFECT_CASES)
def test_known_effect_detected_and_covered(paired, seed_sd):
    df = make_frame({"sgd": 0.0, "adam": 1.0, "adamw": 0.0}, seed_sd=seed_sd, layers=("fc1",))
    out = compare.compare_conditions(df, "optimizer", baseline="sgd", paired=paired).set_index(
        "contrast")
    adam, adamw = out.loc["adam - sgd"], out.loc["adamw - sgd"]
    assert adam.estimate > 0 and adam.effect_size > 0 and adam.statistic > 0
    assert adam.pvalue < 1e-6
    assert adam.ci_low < 1.0 < adam.ci_high
    assert adamw.ci_low < 0.0 < adamw.ci_high
    assert adamw.pvalue > 0.01


def test_sign_flips_with_baseline():
    df = make_frame()
    default = compare.compare_conditions(df, "optimizer")  # baseline: first sorted level, "adam"
    flipped = compare.compare_conditions(df, "optimizer", baseline="sgd")
    assert set(default.contrast) == {"sgd - adam"}
    assert set(flipped.contrast) == {"adam - sgd"}
    np.testing.assert_allclose(default.estimate, -flipped.estimate, rtol=RTOL)
    np.testing.assert_allclose(default.statistic, -flipped.statistic, rtol=RTOL)
    np.testing.assert_allclose(default.pvalue, flipped.pvalue, rtol=RTOL)


@pytest.mark.parametrize("adjust", ["holm", "fdr_bh", "bonferroni", None])
def test_p_adj_bounds(adjust):
    df = make_frame({"sgd": 0.0, "adam": 0.03, "adamw": 0.05, "lion": -0.02},
                    layers=("a", "b", "c"), metrics=("loss", "grad_norm"))
    out = compare.compare_conditions(df, "optimizer", baseline="sgd", adjust=adjust, n_boot=100)
    assert len(out) == 3 * 3 * 2
    assert (out.p_adj >= out.pvalue).all() and (out.p_adj <= 1.0).all()
    assert out.method.str.endswith(f", {adjust or 'unadjusted'}").all()
    if adjust is None:
        np.testing.assert_array_equal(out.p_adj, out.pvalue)


# ------------------------------------------------------------------------------------------
# Pairing, units, duplicates

def test_missing_unit_is_dropped_and_pairing_is_by_seed():
    df = make_frame(layers=("fc1",))
    df = df[~((df.optimizer == "adam") & (df.seed == 3))]  # seed 3 diverged under adam
    out = compare.compare_conditions(df, "optimizer", baseline="sgd").iloc[0]
    seeds = [s for s in range(10) if s != 3]
    t = unit_values(df, "adam", "loss", "fc1", seeds)
    b = unit_values(df, "sgd", "loss", "fc1", seeds)
    assert out.n == 9
    ref = sps.ttest_rel(t, b)
    np.testing.assert_allclose([out.statistic, out.pvalue], [ref.statistic, ref.pvalue],
                               rtol=RTOL)


def test_nan_value_counts_as_missing():
    df = make_frame(layers=("fc1",))
    df.loc[(df.optimizer == "adam") & (df.seed == 3), "value"] = np.nan
    out = compare.compare_conditions(df, "optimizer", baseline="sgd")
    assert out.n.iloc[0] == 9 and np.isfinite(out.pvalue.iloc[0])


@pytest.mark.parametrize("paired, test", [(True, "t"), (True, "rank"), (False, "t")])
def test_row_order_does_not_matter(paired, test):
    df = make_frame({"sgd": 0.0, "adam": 0.3}, layers=("fc1", "fc2"))
    df = df[~((df.optimizer == "sgd") & (df.seed == 7))]
    shuffled = df.sample(frac=1.0, random_state=np.random.default_rng(1).integers(1 << 31))
    kwargs = dict(baseline="sgd", paired=paired, test=test, n_boot=300)
    # Rows follow the order groups first appear in; their values must not depend on row order.
    by_group = lambda t: t.sort_values(["metric", "layer"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(by_group(compare.compare_conditions(df, "optimizer", **kwargs)),
                                  by_group(compare.compare_conditions(shuffled, "optimizer", **kwargs)))


def test_rows_follow_the_data_order_of_layers():
    df = make_frame({"sgd": 0.0, "adam": 0.3}, layers=("fc2", "fc10", "fc1"))
    out = compare.compare_conditions(df, "optimizer", baseline="sgd", n_boot=100)
    assert out["layer"].tolist() == ["fc2", "fc10", "fc1"]


def test_duplicate_rows_per_unit_are_averaged():
    df = make_frame(layers=("fc1",))
    later = df.assign(step=200, value=df.value + np.linspace(-0.2, 0.2, len(df)))
    both = pd.concat([df, later], ignore_index=True)
    means = both.groupby(["optimizer", "seed", "layer", "metric"], as_index=False)["value"].mean()
    pd.testing.assert_frame_equal(compare.compare_conditions(both, "optimizer", n_boot=200),
                                  compare.compare_conditions(means, "optimizer", n_boot=200))


def test_extra_by_column_goes_into_contrast():
    df = pd.concat([make_frame(rng_seed=0).assign(lr=0.1), make_frame(rng_seed=1).assign(lr=0.01)])
    out = compare.compare_conditions(df, "optimizer", baseline="sgd", by=("metric", "layer", "lr"),
                                     n_boot=100)
    assert len(out) == 4 and out.contrast.str.startswith("adam - sgd [lr=").all()
    assert out.contrast.nunique() == 2


FEW_PAIRS_CASES = [  # (paired, test, adam seeds kept, expected n)
    (True, "t", [0], 1),
    (True, "rank", [0], 1),
    (True, "t", [], 0),
    (False, "t", [0], 11),
    (False, "rank", [0], 11),
]


@pytest.mark.parametrize("paired, test, kept, n", FEW_PAIRS_CASES)
def test_too_few_units_gives_nan_row(paired, test, kept, n):
    df = make_frame(layers=("fc1", "fc2"))
    few = (df.optimizer == "adam") & ~df.seed.isin(kept) & (df.layer == "fc1")
    out = compare.compare_conditions(df[~few], "optimizer", baseline="sgd", paired=paired,
                                     test=test).set_index("layer")
    assert out.loc["fc1", "n"] == n
    assert np.isnan(out.loc["fc1", "pvalue"]) and np.isnan(out.loc["fc1", "p_adj"])
    assert np.isnan(out.loc["fc1", "statistic"]) and np.isnan(out.loc["fc1", "ci_low"])
    # The NaN row is not part of the adjustment family: a family of one is left unadjusted.
    assert out.loc["fc2", "p_adj"] == out.loc["fc2", "pvalue"]


# ------------------------------------------------------------------------------------------
# Bad arguments

COMPARE_BAD_ARGS = [  # (keyword arguments, argument named in the message)
    (dict(condition="nope"), "condition"),
    (dict(baseline="rmsprop"), "baseline"),
    (dict(test="ks"), "test"),
    (dict(adjust="sidak-ish"), "adjust"),
    (dict(value="nope"), "value"),
    (dict(unit="nope"), "unit"),
    (dict(by=("metric", "nope")), "by"),
    (dict(n_boot=0), "n_boot"),
    (dict(ci=1.5), "ci"),
    (dict(by=("layer",)), "by"),  # two metrics would be averaged together
]


@pytest.mark.parametrize("kwargs, name", COMPARE_BAD_ARGS)
def test_compare_bad_arguments(kwargs, name):
    kwargs = dict(dict(condition="optimizer"), **kwargs)
    with pytest.raises(ValueError, match=f"invalid argument {name}"):
        compare.compare_conditions(make_frame(metrics=("loss", "acc")), **kwargs)


def test_single_level_is_rejected():
    df = make_frame({"sgd": 0.0})
    with pytest.raises(ValueError, match="invalid argument condition='optimizer'.*two levels"):
        compare.compare_conditions(df, "optimizer")


EQUIVALENCE_BAD_ARGS = [  # (keyword arguments, argument named in the message)
    (dict(margin=0.0), "margin"),
    (dict(margin=-1.0), "margin"),
    (dict(margin=0.1, adjust="x"), "adjust"),
]


@pytest.mark.parametrize("kwargs, name", EQUIVALENCE_BAD_ARGS)
def test_equivalence_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"invalid argument {name}"):
        compare.equivalence_test(make_frame(), condition="optimizer", **kwargs)


def test_compare_ci_changes_with_seed_only():
    df = make_frame()
    a = compare.compare_conditions(df, "optimizer", seed=1, n_boot=300)
    b = compare.compare_conditions(df, "optimizer", seed=2, n_boot=300)
    pd.testing.assert_frame_equal(a, compare.compare_conditions(df, "optimizer", seed=1, n_boot=300))
    assert not np.allclose(a.ci_low, b.ci_low)
    pd.testing.assert_series_equal(a.pvalue, b.pvalue)


# ------------------------------------------------------------------------------------------
# equivalence_test

TOST_CASES = [  # (paired, reference)
    (True, lambda t, b, m: ttost_paired(t, b, -m, m)),
    (False, lambda t, b, m: ttost_ind(t, b, -m, m, usevar="unequal")),
]


@pytest.mark.parametrize("paired, reference", TOST_CASES)
def test_tost_matches_statsmodels(paired, reference):
    df = make_frame({"sgd": 0.0, "adam": 1.0, "adamw": 0.0}, seed_sd=0.0 if not paired else 0.5,
                    layers=("fc1",))
    out = compare.equivalence_test(df, "optimizer", baseline="sgd", margin=0.2, paired=paired,
                                   n_boot=500).set_index("contrast")
    for level in ("adam", "adamw"):
        t, b = unit_values(df, level, "loss", "fc1"), unit_values(df, "sgd", "loss", "fc1")
        p, lower, upper = reference(t, b, 0.2)
        row = out.loc[f"{level} - sgd"]
        np.testing.assert_allclose(row.pvalue, p, rtol=RTOL)
        binding = lower if lower[1] >= upper[1] else upper
        np.testing.assert_allclose(row.statistic, binding[0], rtol=RTOL)
        assert "margin=0.2" in row.method and "90% CI" in row.method
    assert out.loc["adamw - sgd", "p_adj"] < 0.01  # equivalent within 0.2
    assert out.loc["adam - sgd", "pvalue"] > 0.99  # a difference of 1.0 is not
    # The 90% CI sits strictly inside the 95% CI of compare_conditions (same resamples).
    wide = compare.compare_conditions(df, "optimizer", baseline="sgd", paired=paired, n_boot=500)
    assert (wide.ci_low.to_numpy() < out.ci_low.to_numpy()).all()
    assert (wide.ci_high.to_numpy() > out.ci_high.to_numpy()).all()
