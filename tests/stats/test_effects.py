"""Tests of analysis_lib.stats.effects: percentile bootstraps, Cohen's d_z, Hedges' g, Spearman's rho and mean_ci.

Against explicit resamples drawn with the same seeded generator, the t interval, direct formulas and
``scipy.stats.spearmanr``; the degenerate inputs (too few values, no spread) give NaN, bad arguments raise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib.stats import effects
from tests.cases import RTOL, slow_hedges_g


def test_bootstrap_deterministic_and_seeded():
    x = np.random.default_rng(0).normal(size=30)
    a = effects.bootstrap_ci(x, seed=3)
    assert a == effects.bootstrap_ci(x, seed=3)
    assert a != effects.bootstrap_ci(x, seed=4)
    # The per-resample fallback (statistic without `axis`) sees the same resamples.
    assert a == effects.bootstrap_ci(x, lambda s: float(np.mean(s)), seed=3)


def test_bootstrap_matches_explicit_resamples_and_t_interval():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    idx = np.random.default_rng(5).integers(0, x.size, size=(1000, x.size))
    expected = np.quantile(x[idx].mean(axis=1), [0.05, 0.95])
    np.testing.assert_allclose(effects.bootstrap_ci(x, n_boot=1000, ci=0.9, seed=5), expected,
                               rtol=RTOL)
    t_half = sps.t.ppf(0.95, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    low, high = effects.bootstrap_ci(x, ci=0.9, seed=5)
    np.testing.assert_allclose([low, high], [x.mean() - t_half, x.mean() + t_half], atol=0.02)


def test_bootstrap_diff_resamples_each_group_separately():
    rng = np.random.default_rng(2)
    t, b = rng.normal(1.0, 1.0, size=12), rng.normal(0.0, 1.0, size=9)
    gen = np.random.default_rng(7)
    t_means = t[gen.integers(0, t.size, size=(500, t.size))].mean(axis=1)
    b_means = b[gen.integers(0, b.size, size=(500, b.size))].mean(axis=1)
    expected = np.quantile(t_means - b_means, [0.025, 0.975])
    np.testing.assert_allclose(effects.bootstrap_diff_ci(t, b, n_boot=500, seed=7), expected, rtol=RTOL)


@pytest.mark.parametrize("kwargs, name", [(dict(n_boot=0), "n_boot"), (dict(n_boot=True), "n_boot"),
                                          (dict(ci=1.0), "ci"), (dict(ci=0.0), "ci")])
def test_bootstrap_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"invalid argument {name}"):
        effects.bootstrap_ci(np.arange(5.0), **kwargs)
    with pytest.raises(ValueError, match=f"invalid argument {name}"):
        effects.bootstrap_diff_ci(np.arange(5.0), np.arange(4.0), **kwargs)


def test_bootstrap_refuses_empty_input():
    with pytest.raises(ValueError, match="invalid argument x"):
        effects.bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="treatment/baseline"):
        effects.bootstrap_diff_ci(np.array([1.0]), np.array([]))


def test_cohens_dz_is_mean_over_sd_of_differences():
    d = np.array([0.5, 1.5, 1.0, 2.0, -0.5])
    assert effects.cohens_dz(d) == pytest.approx(d.mean() / d.std(ddof=1), rel=RTOL)
    assert np.isnan(effects.cohens_dz([1.0]))  # n < 2
    assert np.isnan(effects.cohens_dz([0.3, 0.3, 0.3]))  # no spread


def test_hedges_g_matches_the_pooled_formula():
    rng = np.random.default_rng(3)
    t, b = rng.normal(1.0, 1.0, size=8), rng.normal(0.0, 2.0, size=11)
    assert effects.hedges_g(t, b) == pytest.approx(slow_hedges_g(t, b), rel=RTOL)
    assert effects.hedges_g(t, b) == pytest.approx(-effects.hedges_g(b, t), rel=RTOL)
    assert np.isnan(effects.hedges_g([1.0], b)) and np.isnan(effects.hedges_g([1.0, 1.0], [2.0, 2.0]))


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_spearman_rho_vectorised_matches_scipy(rng_seed):
    rng = np.random.default_rng(rng_seed)
    xy = rng.integers(0, 6, size=(4, 15, 2)).astype(np.float64)  # ties on purpose
    got = effects.spearman_rho(xy, axis=1)
    want = [sps.spearmanr(m[:, 0], m[:, 1]).statistic for m in xy]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_spearman_rho_constant_column_and_wrong_axis():
    xy = np.stack([np.arange(6.0), np.ones(6)], axis=1)
    assert np.isnan(effects.spearman_rho(xy))
    with pytest.raises(ValueError, match="invalid argument axis"):
        effects.spearman_rho(xy, axis=1)


def test_mean_ci_per_group_over_rows():
    df = pd.DataFrame({"lr": [0.1, 0.1, 0.1, 0.2, 0.2, 0.3], "metric": "loss",
                       "value": [1.0, 2.0, 4.0, 3.0, np.nan, 5.0]})
    out = effects.mean_ci(df, ["lr", "metric"], n_boot=300, seed=1)
    assert list(out.columns) == ["lr", "metric", "mean", "ci_low", "ci_high", "n"]
    assert out["lr"].tolist() == [0.1, 0.2, 0.3] and out["n"].tolist() == [3, 1, 1]  # NaN dropped
    first = out.iloc[0]
    assert first["mean"] == pytest.approx(7 / 3)
    assert (first["ci_low"], first["ci_high"]) == effects.bootstrap_ci([1.0, 2.0, 4.0], n_boot=300, seed=1)
    assert out.iloc[1]["mean"] == 3.0 and np.isnan(out.iloc[1][["ci_low", "ci_high"]].astype(float)).all()
