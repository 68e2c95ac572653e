"""Linear CKA (biased and debiased), its streaming accumulation, bootstrap CIs, nulls and ΔCKA.

References are written here from the definitions: the biased CKA from centred Gram products, the
debiased one from an O(n²) kernel-matrix implementation of Song et al.'s (2012) unbiased HSIC, and
the bootstrap's distinct-tuple U-statistic by brute-force enumeration of index tuples.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from analysis_lib.activations.similarity import CKAAccumulator, linear_cka, row_sums
from analysis_lib.activations.similarity_inference import (
    bootstrap_cka_replicates,
    cka_bootstrap,
    cka_summary,
    delta_cka_shared_pca,
    seed_null_cka,
    shuffled_null,
)
from analysis_lib.validation import ConfigError


def biased_reference(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return np.sum((Yc.T @ Xc) ** 2) / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))


def hsic_u_kernel(K, L):
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))


def debiased_reference(X, Y):
    K, L = X @ X.T, Y @ Y.T  # uncentred: HSIC_u is translation-invariant, so this also tests that
    return hsic_u_kernel(K, L) / np.sqrt(hsic_u_kernel(K, K) * hsic_u_kernel(L, L))


def related(n=40, p=6, q=5, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) + 3.0
    Y = X @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q)) - 2.0
    return X, Y


def orthogonal(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


@pytest.mark.parametrize("debiased", [False, True])
def test_against_direct_formulas(debiased):
    X, Y = related()
    ref = debiased_reference(X, Y) if debiased else biased_reference(X, Y)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(ref, rel=1e-12)
    assert 0.2 < ref < 0.99  # a non-trivial value, so the comparison could fail


def test_torch_input_and_self_similarity():
    X, _ = related()
    assert linear_cka(torch.tensor(X, dtype=torch.float32), X) == pytest.approx(1.0, abs=1e-6)
    for debiased in (False, True):
        assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-13)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances_and_a_non_invariance(debiased):
    X, Y = related(p=5, q=5)
    base = linear_cka(X, Y, debiased=debiased)
    assert linear_cka(X @ orthogonal(5, 1), Y, debiased=debiased) == pytest.approx(base, rel=1e-12)
    assert linear_cka(X, 7.5 * Y @ orthogonal(5, 2), debiased=debiased) == pytest.approx(base, rel=1e-12)
    assert linear_cka(X + 100.0, Y, debiased=debiased) == pytest.approx(base, rel=1e-9)
    stretched = X * np.array([10.0, 1.0, 1.0, 0.1, 1.0])
    assert abs(linear_cka(stretched, Y, debiased=debiased) - base) > 0.01
    assert linear_cka(X, 3.0 * X @ orthogonal(5, 3), debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_debiased_near_zero_where_biased_is_inflated():
    rng = np.random.default_rng(5)
    biased, debiased = [], []
    for _ in range(20):
        X, Y = rng.normal(size=(30, 25)), rng.normal(size=(30, 25))  # independent, p ~ n
        biased.append(linear_cka(X, Y, debiased=False))
        debiased.append(linear_cka(X, Y))
    assert np.mean(biased) > 0.35  # measured 0.455
    assert abs(np.mean(debiased)) < 0.05
    assert np.std(debiased) < 0.1


@pytest.mark.parametrize("sizes", [[1, 3, 7, 29], [40], [4] * 10, [2, 2, 36]])
def test_streaming_equals_full_batch(sizes):
    X, Y = related(n=40, p=7, q=3, seed=sum(sizes))
    # the accumulator sees a large mean (it shifts rows, so no cancellation); the references do
    # not (the uncentred kernel reference would lose digits to it)
    shifted = X + 1e3
    acc = CKAAccumulator()
    start = 0
    for size in sizes:
        acc.update(torch.tensor(shifted[start:start + size]), Y[start:start + size])
        start += size
    assert acc.n == 40
    for debiased, ref in ((False, biased_reference(X, Y)), (True, debiased_reference(X, Y))):
        assert acc.cka(debiased=debiased) == pytest.approx(ref, rel=1e-11)
        assert acc.cka(debiased=debiased) == pytest.approx(linear_cka(X, Y, debiased=debiased), rel=1e-12)


def test_weighted_sums_are_the_distinct_tuple_u_statistic():
    """With bootstrap counts w the HSIC is Song's U-statistic over tuples of distinct examples."""
    X, Y = related(n=8, p=3, q=2, seed=3)
    w = np.array([2.0, 1.0, 0.0, 3.0, 1.0, 1.0, 0.0, 2.0])
    K, L = X @ X.T, Y @ Y.T

    def u_stat(K, L):
        idx = [i for i in range(8) if w[i] > 0]
        terms = []
        for order, kernel in ((2, lambda t: K[t[0], t[1]] * L[t[0], t[1]]),
                              (4, lambda t: K[t[0], t[1]] * L[t[2], t[3]]),
                              (3, lambda t: K[t[0], t[1]] * L[t[0], t[2]])):
            num = den = 0.0
            for t in itertools.permutations(idx, order):
                weight = np.prod(w[list(t)])
                num += weight * kernel(t)
                den += weight
            terms.append(num / den)
        return terms[0] + terms[1] - 2 * terms[2]

    ref = u_stat(K, L) / np.sqrt(u_stat(K, K) * u_stat(L, L))
    from analysis_lib.activations.similarity import cka_from_sums
    assert cka_from_sums(row_sums(X, Y, w), True) == pytest.approx(ref, rel=1e-10)
    # and a bootstrap replicate drawn with those counts is that value; the biased one is the plug-in
    rows = np.repeat(np.arange(8), w.astype(int))
    assert cka_from_sums(row_sums(X, Y, w), False) == pytest.approx(
        biased_reference(X[rows], Y[rows]), rel=1e-12)


def test_bootstrap_replicates_match_resampled_rows():
    X, Y = related(n=25)
    reps = bootstrap_cka_replicates(X, Y, debiased=False, n_boot=5, seed=9)
    rng = np.random.default_rng(9)
    for value in reps:
        idx = rng.integers(0, 25, size=25)
        assert value == pytest.approx(biased_reference(X[idx], Y[idx]), rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_bootstrap_ci_contains_estimate_and_covers(debiased):
    X, Y = related(n=60, noise=2.0)
    row = cka_bootstrap(X, Y, debiased=debiased, n_boot=300, seed=1)
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert row["ci_high"] - row["ci_low"] < 0.5 and row["n_undefined"] == 0
    # coverage of the population CKA (approximated by a huge sample) over repeated samples
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 4))

    def draw(n):
        Z = rng.normal(size=(n, 4))
        return Z, Z @ A + 2.0 * rng.normal(size=(n, 4))

    truth = linear_cka(*draw(200_000), debiased=False)
    covered = 0
    for s in range(30):
        r = cka_bootstrap(*draw(80), debiased=debiased, n_boot=200, ci=0.9, seed=s)
        covered += r["ci_low"] <= truth <= r["ci_high"]
    assert covered >= 20  # nominal 27 of 30; the biased estimator's bias costs some


def test_shuffled_null_and_summary():
    X, Y = related(n=50)
    null = shuffled_null(X, Y, n_perm=100, seed=3)
    assert abs(null["null_mean"]) < 0.05 and null["p_value"] == pytest.approx(1 / 101)
    rng = np.random.default_rng(4)
    indep = shuffled_null(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)), n_perm=100, seed=3)
    assert indep["p_value"] > 0.01
    row = cka_summary(X, Y, n_boot=50, n_perm=20)
    assert row["estimate"] == pytest.approx(debiased_reference(X, Y), rel=1e-12)
    assert {"ci_low", "ci_high", "null_mean", "null_sd", "null_low", "null_high", "p_value"} <= set(row)
    seeds = seed_null_cka(X, X @ orthogonal(6, 0) + 0.1, n_boot=20, n_perm=10)
    assert seeds["null"] == "seeds" and seeds["estimate"] == pytest.approx(1.0, abs=1e-12)


def test_delta_cka_shared_pca():
    rng = np.random.default_rng(6)
    before = rng.normal(size=(60, 8)) @ np.diag([5, 4, 3, 2, 1, 0.5, 0.2, 0.1])
    after = before + 0.5 * rng.normal(size=(60, 8))
    full = delta_cka_shared_pca(before, after)
    assert full["delta"] == pytest.approx(1 - debiased_reference(before, after), rel=1e-9)
    assert full["explained"] == pytest.approx(1.0)
    k = 3
    pooled = np.vstack([before, after])
    _, _, vt = np.linalg.svd(pooled - pooled.mean(0))
    ref = 1 - biased_reference(before @ vt[:k].T, after @ vt[:k].T)
    row = delta_cka_shared_pca(before, after, n_components=k, debiased=False, n_boot=50)
    assert row["delta"] == pytest.approx(ref, rel=1e-9) and row["n_components"] == k
    assert row["delta_low"] <= row["delta"] <= row["delta_high"]
    swapped = delta_cka_shared_pca(after, before, n_components=k, debiased=False)
    assert swapped["delta"] == pytest.approx(row["delta"], rel=1e-9)
    _, _, vb = np.linalg.svd(before - before.mean(0))
    ref_b = 1 - biased_reference(before @ vb[:k].T, after @ vb[:k].T)
    row_b = delta_cka_shared_pca(before, after, n_components=k, basis="before", debiased=False)
    assert row_b["delta"] == pytest.approx(ref_b, rel=1e-9) and abs(ref_b - ref) > 1e-6
    assert delta_cka_shared_pca(before, before)["delta"] == pytest.approx(0.0, abs=1e-12)


def test_refusals():
    X, Y = related(n=10)
    with pytest.raises(ConfigError, match="same number of rows"):
        linear_cka(X, Y[:9])
    with pytest.raises(ConfigError, match="n >= 4"):
        linear_cka(X[:3], Y[:3])
    assert np.isfinite(linear_cka(X[:3], Y[:3], debiased=False))
    with pytest.raises(ConfigError, match="2-D"):
        linear_cka(X[:, 0], Y[:, 0])
    with pytest.raises(ConfigError, match="2-D"):
        linear_cka(X[None], Y[None])
    with pytest.raises(ConfigError, match="non-finite"):
        linear_cka(np.full((10, 2), np.nan), Y)
    with pytest.raises(ConfigError, match="debiased"):
        linear_cka(X, Y, debiased=1)
    with pytest.raises(ValueError, match="undefined"):
        linear_cka(np.ones((10, 3)), Y)
    acc = CKAAccumulator()
    acc.update(X[:3], Y[:3])
    with pytest.raises(ConfigError, match="n >= 4"):
        acc.cka()
    with pytest.raises(ConfigError, match="features"):
        acc.update(X[:3, :2], Y[:3])
    with pytest.raises(ConfigError, match="n_boot"):
        cka_bootstrap(X, Y, n_boot=0)
    with pytest.raises(ConfigError, match="ci"):
        cka_bootstrap(X, Y, ci=1.0)
    with pytest.raises(ConfigError, match="basis"):
        delta_cka_shared_pca(X, X, basis="after")
    with pytest.raises(ConfigError, match="n_components"):
        delta_cka_shared_pca(X, X, n_components=99)
    with pytest.raises(ConfigError, match="shape"):
        delta_cka_shared_pca(X, Y)


def test_debiased_bootstrap_does_not_pair_copies_of_an_example():
    """Naively recomputing the debiased CKA on resampled rows re-inflates it; ours does not."""
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(40, 30)), rng.normal(size=(40, 30))  # independent
    ours = bootstrap_cka_replicates(X, Y, n_boot=100, seed=0)
    draws = np.random.default_rng(0)
    naive = [debiased_reference(X[i], Y[i]) for i in (draws.integers(0, 40, 40) for _ in range(100))]
    assert abs(linear_cka(X, Y)) < 0.05
    assert abs(np.mean(ours)) < 0.05  # measured -0.014
    assert np.mean(naive) > 0.3  # measured 0.42: copies bring the diagonal back
