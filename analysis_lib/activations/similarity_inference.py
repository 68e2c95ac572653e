"""Inference for linear CKA: bootstrap CIs over examples, nulls, and ΔCKA under a shared PCA basis.

Built on :mod:`analysis_lib.activations.similarity` (definitions and references there).

- **Bootstrap over examples** (Efron & Tibshirani 1993, ch. 13, percentile interval): resample the
  n rows with replacement (the same rows of X and Y), recompute CKA, take quantiles. A resample
  repeats examples; the *debiased* estimator is then computed as the U-statistic of the resample
  over tuples of *distinct* original examples (weighted by their counts; see the similarity
  module), because pairing two copies of one example would reintroduce the kernel diagonal
  ‖x_i‖² that the debiased estimator exists to drop, and inflate every replicate towards the
  biased value. The biased estimator is the plug-in of the resample as is. Resamples on which CKA
  is undefined (fewer than 4 distinct examples, a non-positive self-similarity) are counted in
  ``n_undefined`` and left out of the quantiles.
- **Shuffled-rows null**: CKA(X, Y[π]) for random permutations π of Y's rows, i.e. CKA under
  independence of the two representations with both marginals kept (a permutation test; the
  p-value is (1 + #{null ≥ estimate}) / (1 + n_perm), Phipson & Smyth 2010).
- **Two-seed reference**: :func:`seed_null_cka` is CKA between the same layer of two networks
  that differ only in their seed (on the same inputs): the similarity that training noise alone
  leaves, against which a change (e.g. before vs after adaptation) is judged.
- **ΔCKA under a shared PCA basis**: see :func:`delta_cka_shared_pca`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..validation import check_choice, check_fraction, check_int, fail
from .similarity import check_pair, cka_from_sums, linear_cka, row_sums

BASES = ("pooled", "before")


def _check_inference(n_boot: int, ci: float, seed: int, name: str = "n_boot") -> None:
    check_int(name, n_boot, 1)
    check_fraction("ci", ci)
    check_int("seed", seed, 0)


def _summary(values: np.ndarray, ci: float) -> tuple[float, float, int]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), int(values.size)
    low, high = np.quantile(finite, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high), int(values.size - finite.size)


def bootstrap_cka_replicates(X: Any, Y: Any, *, debiased: bool = True, n_boot: int = 1000,
                             seed: int = 0) -> np.ndarray:
    """CKA on ``n_boot`` bootstrap resamples of the rows (NaN where undefined on a resample).

    Args:
        X, Y: (n, p), (n, q) representations of the same examples.
        debiased: the estimator (the debiased one excludes tuples that repeat an example).
        n_boot: number of resamples. seed: of the ``np.random.default_rng`` drawing them.

    Returns:
        Array (n_boot,) of replicates. Cost O(n_boot · n (p² + q² + pq)).

    Raises:
        ConfigError: bad arrays or arguments (see :func:`~.similarity.check_pair`).
    """
    X, Y = check_pair(X, Y, debiased)
    check_int("n_boot", n_boot, 1)
    check_int("seed", seed, 0)
    n = X.shape[0]
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        w = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        out[b] = cka_from_sums(row_sums(X, Y, w), debiased)
    return out


def cka_bootstrap(X: Any, Y: Any, *, debiased: bool = True, n_boot: int = 1000, ci: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """Linear CKA with a percentile-bootstrap CI over examples.

    Args:
        X, Y: (n, p), (n, q) representations of the same examples (tokens flattened to rows).
        debiased: the estimator (see :func:`~.similarity.linear_cka`).
        n_boot: number of resamples. ci: coverage, in (0, 1). seed: of the resampling.

    Returns:
        Dict with ``estimate`` (the full-sample CKA), ``ci_low``, ``ci_high``, ``n``, ``n_boot``,
        ``n_undefined`` (resamples left out) and ``debiased``.

    Raises:
        ConfigError: bad arrays or arguments. ValueError: CKA undefined on the full sample.
    """
    _check_inference(n_boot, ci, seed)
    estimate = linear_cka(X, Y, debiased=debiased)
    reps = bootstrap_cka_replicates(X, Y, debiased=debiased, n_boot=n_boot, seed=seed)
    low, high, undefined = _summary(reps, ci)
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "n": int(np.shape(X)[0]),
            "n_boot": n_boot, "n_undefined": undefined, "debiased": debiased}


def shuffled_null(X: Any, Y: Any, *, debiased: bool = True, n_perm: int = 200, ci: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """CKA under independence: CKA(X, Y[π]) over random permutations π of Y's rows.

    Args:
        X, Y: (n, p), (n, q) representations of the same examples.
        debiased: the estimator. n_perm: number of permutations. ci: the null's central interval
            reported. seed: of the permutations.

    Returns:
        Dict with ``null_mean``, ``null_sd``, ``null_low``, ``null_high`` (the central ``ci``
        interval of the null), ``p_value`` (one-sided, of the observed CKA against the null, with
        the +1 correction) and ``n_perm``.

    Raises:
        ConfigError: bad arrays or arguments. ValueError: CKA undefined on the sample.
    """
    _check_inference(n_perm, ci, seed, "n_perm")
    X, Y = check_pair(X, Y, debiased)
    estimate = linear_cka(X, Y, debiased=debiased)
    rng = np.random.default_rng(seed)
    null = np.array([linear_cka(X, Y[rng.permutation(X.shape[0])], debiased=debiased)
                     for _ in range(n_perm)])
    low, high, _ = _summary(null, ci)
    return {"null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)) if n_perm > 1 else 0.0,
            "null_low": low, "null_high": high,
            "p_value": float((1 + np.sum(null >= estimate)) / (1 + n_perm)), "n_perm": n_perm}


def cka_summary(X: Any, Y: Any, *, debiased: bool = True, n_boot: int = 1000, n_perm: int = 200,
                ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """One tidy row: the CKA, its bootstrap CI over examples and the shuffled-rows null.

    Args:
        X, Y, debiased, n_boot, n_perm, ci, seed: as in :func:`cka_bootstrap` and
            :func:`shuffled_null` (the same seed for both).

    Returns:
        The union of both dicts (``estimate``, ``ci_low``, ``ci_high``, ``n``, ``n_boot``,
        ``n_undefined``, ``debiased``, ``null_mean``, ``null_sd``, ``null_low``, ``null_high``,
        ``p_value``, ``n_perm``).

    Raises:
        ConfigError: bad arrays or arguments. ValueError: CKA undefined on the sample.
    """
    row = cka_bootstrap(X, Y, debiased=debiased, n_boot=n_boot, ci=ci, seed=seed)
    row.update(shuffled_null(X, Y, debiased=debiased, n_perm=n_perm, ci=ci, seed=seed))
    return row


def seed_null_cka(rep_seed_a: Any, rep_seed_b: Any, *, debiased: bool = True, n_boot: int = 1000,
                  n_perm: int = 200, ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """CKA between the same layer of two seeds on the same inputs: the training-noise reference.

    Args:
        rep_seed_a, rep_seed_b: (n, d) outputs of one layer of two runs differing only in their
            seed, on the same n inputs in the same order.
        debiased, n_boot, n_perm, ci, seed: as in :func:`cka_summary`.

    Returns:
        :func:`cka_summary`'s row with ``null = "seeds"`` added.

    Raises:
        ConfigError: bad arrays or arguments. ValueError: CKA undefined on the sample.
    """
    row = cka_summary(rep_seed_a, rep_seed_b, debiased=debiased, n_boot=n_boot, n_perm=n_perm,
                      ci=ci, seed=seed)
    row["null"] = "seeds"
    return row


def shared_pca_basis(before: np.ndarray, after: np.ndarray, n_components: int | None,
                     basis: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, components (d × k), explained fraction) of the PCA fitted on ``basis`` rows."""
    data = np.vstack([before, after]) if basis == "pooled" else before
    mean = data.mean(axis=0)
    _, svals, vt = np.linalg.svd(data - mean, full_matrices=False)
    k = vt.shape[0] if n_components is None else n_components
    total = float(np.sum(svals ** 2))
    explained = float(np.sum(svals[:k] ** 2) / total) if total > 0 else float("nan")
    return mean, vt[:k].T, explained


def delta_cka_shared_pca(before: Any, after: Any, *, n_components: int | None = None,
                         basis: str = "pooled", debiased: bool = True, n_boot: int = 0,
                         ci: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """ΔCKA = 1 − CKA of a layer's outputs before vs after adaptation, in one shared PCA basis.

    Both representations (the same inputs, the same layer) are centred and projected onto the
    top ``n_components`` principal directions of one PCA, then compared by linear CKA; Δ = 0:
    unchanged up to rotation and scale, larger: more change. The basis is fitted on the
    **pooled** rows of before and after by default: it is symmetric (swapping before and after
    leaves Δ unchanged) and keeps directions that appear only after adaptation, which a basis of
    the "before" rows would project away, hiding exactly the change being measured.
    ``basis="before"`` is offered for comparison with work that fixes the pre-adaptation basis.
    With every component kept, the projection is an orthogonal map of the row space and Δ equals
    1 − CKA of the raw outputs; truncation discards low-variance directions (noise) from both.

    Args:
        before, after: (n, d) outputs of the layer on the same n inputs (tokens flattened).
        n_components: principal directions kept, 1..min(rows, d); None keeps all.
        basis: ``"pooled"`` or ``"before"``: the rows the PCA is fitted on.
        debiased: the CKA estimator. n_boot: 0 for no interval, else bootstrap resamples of the
            examples (the basis held fixed). ci, seed: of the bootstrap.

    Returns:
        Dict with ``delta``, ``cka``, ``n_components``, ``explained`` (fraction of the basis rows'
        variance the kept directions carry), ``basis``, ``debiased``, ``n``; with ``n_boot > 0``
        also ``delta_low``, ``delta_high`` (the CI of Δ) and ``n_undefined``.

    Raises:
        ConfigError: bad arrays, different shapes, a bad ``n_components``, ``basis`` or bootstrap
            argument. ValueError: CKA undefined (e.g. a constant representation).

    Reference: Wang (2025), "Attention Saturation and Gradient Suppression at Inflection Layers";
    CKA: Kornblith et al. (2019).
    """
    X, Y = check_pair(before, after, debiased, "before", "after")
    if X.shape[1] != Y.shape[1]:
        fail("after", f"shape {Y.shape}", f"must have the shape of before {X.shape} (the same layer)")
    check_choice("basis", basis, BASES)
    rows = 2 * X.shape[0] if basis == "pooled" else X.shape[0]
    if n_components is not None:
        check_int("n_components", n_components, 1)
        if n_components > min(rows, X.shape[1]):
            fail("n_components", n_components, f"must be at most min(rows, d) = {min(rows, X.shape[1])}")
    check_int("n_boot", n_boot, 0)
    if n_boot > 0:
        _check_inference(n_boot, ci, seed)
    mean, comps, explained = shared_pca_basis(X, Y, n_components, basis)
    zx, zy = (X - mean) @ comps, (Y - mean) @ comps
    value = linear_cka(zx, zy, debiased=debiased)
    row = {"delta": 1.0 - value, "cka": value, "n_components": comps.shape[1],
           "explained": explained, "basis": basis, "debiased": debiased, "n": X.shape[0]}
    if n_boot > 0:
        reps = bootstrap_cka_replicates(zx, zy, debiased=debiased, n_boot=n_boot, seed=seed)
        low, high, undefined = _summary(1.0 - reps, ci)
        row.update({"delta_low": low, "delta_high": high, "n_undefined": undefined})
    return row
