"""The between-seed variance of accuracy against direct formulas and simulation.

Direct NumPy formulas and direct simulation of per-example Bernoulli outcomes, including the coverage of the
confidence interval, and degenerate or bad inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from analysis_lib.stats.seed_variance import VARIANCE_COLUMNS, accuracy_variance


def _bernoulli(p: np.ndarray, k: int, rng: np.random.Generator, shift: np.ndarray | None = None) -> np.ndarray:
    """(k, n) outcomes, independent over runs and examples; ``shift`` (k,) moves whole runs."""
    prob = np.clip(p[None, :] + (0.0 if shift is None else shift[:, None]), 0.0, 1.0)
    return (rng.random((k, len(p))) < prob).astype(np.float64)


def test_values_match_direct_formulas():
    rng = np.random.default_rng(0)
    c = _bernoulli(rng.beta(0.5, 0.5, size=300), 12, rng)
    row = accuracy_variance(c).iloc[0]
    assert list(accuracy_variance(c).columns) == VARIANCE_COLUMNS
    observed = np.var(c.mean(axis=1), ddof=1)
    p = c.mean(axis=0)
    predicted = (p * (1 - p)).sum() / 300**2 * 12 / 11
    assert row["observed_var"] == pytest.approx(observed, rel=1e-12)
    assert row["predicted_var"] == pytest.approx(predicted, rel=1e-12)
    assert row["predicted_var"] == pytest.approx(np.var(c, axis=0, ddof=1).sum() / 300**2, rel=1e-12)
    assert row["ratio"] == pytest.approx(observed / predicted, rel=1e-12)
    # chi-square interval by hand.
    assert row["ci_low"] == pytest.approx(11 * row["ratio"] / chi2.ppf(0.975, 11), rel=1e-12)
    assert row["ci_high"] == pytest.approx(11 * row["ratio"] / chi2.ppf(0.025, 11), rel=1e-12)


def test_bootstrap_interval_matches_a_loop_over_the_same_resamples():
    rng = np.random.default_rng(1)
    c = _bernoulli(rng.beta(0.5, 0.5, size=200), 10, rng)
    row = accuracy_variance(c, method="bootstrap", n_boot=300, seed=4).iloc[0]
    idx = np.random.default_rng(4).integers(0, 10, size=(300, 10))
    ratios = []
    for resample in idx:
        sub = c[resample]
        ratios.append(np.var(sub.mean(axis=1), ddof=1) / (np.var(sub, axis=0, ddof=1).sum() / 200**2))
    low, high = np.nanquantile(ratios, [0.025, 0.975])
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))


def test_independent_examples_give_a_ratio_near_one_in_simulation():
    rng = np.random.default_rng(2)
    p = rng.beta(0.3, 0.3, size=500)
    c = _bernoulli(p, 3000, rng)
    row = accuracy_variance(c).iloc[0]
    truth = (p * (1 - p)).sum() / 500**2
    assert row["predicted_var"] == pytest.approx(truth, rel=0.02)
    assert row["observed_var"] == pytest.approx(truth, rel=0.08)
    assert row["ci_low"] < 1.0 < row["ci_high"]


def test_whole_run_effects_raise_the_ratio_by_the_simulated_amount():
    # Each run's probabilities move together by ±0.05: Var(acc) gains Var(shift) = 0.0025.
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.8, size=400)
    k = 3000
    shift = rng.choice([-0.05, 0.05], size=k)
    c = _bernoulli(p, k, rng, shift)
    row = accuracy_variance(c).iloc[0]
    simulated = np.var([_bernoulli(p, 1, rng, s[None]).mean() for s in rng.choice([-0.05, 0.05], size=3000)], ddof=1)
    assert row["observed_var"] == pytest.approx(simulated, rel=0.1)
    assert row["ratio"] > 3 and row["ci_low"] > 1


def test_chi_square_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    p = rng.beta(0.5, 0.5, size=300)
    covered = [accuracy_variance(_bernoulli(p, 20, rng)).iloc[0] for _ in range(400)]
    rate = np.mean([r["ci_low"] <= 1.0 <= r["ci_high"] for r in covered])
    assert 0.91 <= rate <= 0.98


def test_degenerate_and_bad_inputs():
    same = np.ones((5, 10))
    row = accuracy_variance(same).iloc[0]
    assert row["predicted_var"] == 0 and np.isnan(row["ratio"]) and np.isnan(row["ci_low"])
    with pytest.raises(ValueError, match="0/1 array"):
        accuracy_variance(np.ones((1, 10)))
    with pytest.raises(ValueError, match="0/1 array"):
        accuracy_variance(np.full((3, 4), 0.5))
    with pytest.raises(ValueError, match="method='exact'"):
        accuracy_variance(same, method="exact")
