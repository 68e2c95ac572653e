"""Representation similarity: linear CKA, exact over mini-batches, with bootstrap CIs and nulls.

Two representations of the same n examples are matrices X (n × p) and Y (n × q), one row per
example (a hidden state (B, T, d) is flattened to (B·T, d): every token is an example; the two
representations must be flattened the same way so that row i is the same token in both).
With linear kernels K = X Xᵀ and L = Y Yᵀ, *centred kernel alignment* (Kornblith, Norouzi, Lee &
Hinton 2019, "Similarity of Neural Network Representations Revisited", ICML) is

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)).

- *Biased* (plug-in) estimator: HSIC_b = tr(K H L H) / (n − 1)², H = I − 11ᵀ/n, which for linear
  kernels gives CKA = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) with X, Y column-centred. It is inflated
  for independent data when p, q are comparable to n (for p, q ≫ n it tends to 1 whatever the data).
- *Debiased* estimator (the default): Song, Smola, Gretton, Bedo & Borgwardt (2012), "Feature
  Selection via Dependence Maximization" (JMLR 13), unbiased HSIC with K̃, L̃ the kernels with zero
  diagonal:  HSIC_u = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)),
  as used for debiased CKA by Nguyen, Raghu & Kornblith (2021), "Do Wide and Deep Networks Learn
  the Same Things?" (ICLR). It needs n ≥ 4; its CKA is near 0 for independent data and can be
  slightly negative.

Both are invariant to an orthogonal transform and an isotropic scaling of either representation
and to a translation of its rows. HSIC_u is the U-statistic T₁ + T₂ − 2T₃ with T₁ the mean of
k_ij l_ij over pairs, T₂ of k_ij l_qr over 4-tuples and T₃ of k_ij l_iq over triples of distinct
examples. For linear kernels every sum in it is a function of the Gram products XᵀX, YᵀY, XᵀY
(and their example-weighted versions), the column sums, the squared row norms ‖x_i‖², ‖y_i‖² and
a few of their products with rows, so it is computed in feature space (O(n p q), no n × n
matrix) and accumulated exactly over mini-batches by :class:`CKAAccumulator`.

The same sums taken with integer example weights w_i (the counts of a bootstrap resample) give the
U-statistic of the resample *over tuples of distinct original examples*: a bootstrap resample
repeats examples, and pairing copies of one example would put the kernel's diagonal ‖x_i‖² back
in off the diagonal (the very bias the debiased estimator removes), so :func:`cka_bootstrap`
excludes tuples that repeat an example and normalises by the number of the others (with w = 1
this is exactly HSIC_u). The biased estimator is resampled as is (the plug-in of the resample).

Inference (:mod:`analysis_lib.activations.similarity_inference`): bootstrap CIs over examples,
the shuffled-rows null and the two-seed reference, and ΔCKA under a shared PCA basis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..validation import ConfigError, check_bool

_PAIRS = ("xy", "xx", "yy")


def as_rows(name: str, value: Any) -> np.ndarray:
    """``value`` (a NumPy array or torch tensor of shape (n, p)) as a float64 array.

    Raises:
        ConfigError: not 2-D, empty, or with a non-finite entry.
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid parameter {name}: must be a 2-D numeric array (n, p)") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"invalid parameter {name} of shape {arr.shape}: must be 2-D (n examples, "
                          "p features) with n, p >= 1; flatten tokens to rows first")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"invalid parameter {name}: has a non-finite entry")
    return arr


def check_pair(X: Any, Y: Any, debiased: bool, x_name: str = "X", y_name: str = "Y"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Both representations as float64 (n, ·) arrays with the same n, enough for the estimator.

    Raises:
        ConfigError: a bad array, different numbers of rows, ``debiased`` not a bool, or n < 4
            (debiased) / n < 2 (biased).
    """
    check_bool("debiased", debiased)
    X, Y = as_rows(x_name, X), as_rows(y_name, Y)
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(f"invalid parameters {x_name}, {y_name} of shapes {X.shape}, {Y.shape}: "
                          "must have the same number of rows (the same examples)")
    minimum = 4 if debiased else 2
    if X.shape[0] < minimum:
        raise ConfigError(f"invalid parameter {x_name} with n={X.shape[0]} rows: the "
                          f"{'debiased' if debiased else 'biased'} estimator needs n >= {minimum}")
    return X, Y


def row_sums(X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """The additive sums over rows (weighted by ``w``) from which both CKA estimators follow.

    For each pair (A, B) in (X, Y), (X, X), (Y, Y) with squared row norms k^A, k^B:
    G1 = Aᵀ diag(w) B, G2 = Aᵀ diag(w²) B, c_m = Σ w^m k^A k^B (m = 2, 3, 4) and the vectors
    Σ w^m k^B a_i, Σ w^m k^A b_i (m = 2, 3); and Σ w^m (m = 1..4), Xᵀw, Yᵀw, Σ w² k^X, Σ w² k^Y.
    Every entry is a sum over rows, so the sums of batches add up to those of the whole.
    """
    w1, w2 = w, w * w
    w3, w4 = w2 * w, w2 * w2
    sq = {"x": np.einsum("ij,ij->i", X, X), "y": np.einsum("ij,ij->i", Y, Y)}
    mats = {"x": X, "y": Y}
    out: dict[str, Any] = {"W": np.array([w1.sum(), w2.sum(), w3.sum(), w4.sum()]),
                           "a_x": X.T @ w1, "a_y": Y.T @ w1,
                           "k2_x": np.dot(w2, sq["x"]), "k2_y": np.dot(w2, sq["y"])}
    for pair in _PAIRS:
        A, B, ka, kb = mats[pair[0]], mats[pair[1]], sq[pair[0]], sq[pair[1]]
        kk = ka * kb
        out[pair] = {"G1": A.T @ (w1[:, None] * B), "G2": A.T @ (w2[:, None] * B),
                     "c": np.array([0.0, 0.0, np.dot(w2, kk), np.dot(w3, kk), np.dot(w4, kk)]),
                     "vA2": A.T @ (w2 * kb), "vA3": A.T @ (w3 * kb),
                     "vB2": B.T @ (w2 * ka), "vB3": B.T @ (w3 * ka)}
    return out


def add_sums(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Add the row sums ``part`` into ``total`` in place."""
    for key, value in part.items():
        if isinstance(value, dict):
            for sub in value:
                total[key][sub] = total[key][sub] + value[sub]
        else:
            total[key] = total[key] + value


def _hsic_u(s: dict[str, Any], pair: str) -> float:
    """Unbiased HSIC (Song et al. 2012) over tuples of distinct examples, from the row sums."""
    p = s[pair]
    a, b = s["a_" + pair[0]], s["a_" + pair[1]]
    W1, W2, W3, W4 = s["W"]
    G1, G2, c = p["G1"], p["G2"], p["c"]
    r11 = np.sum(G1 * G1) - c[2]  # Σ_{i≠j} w_i w_j k_ij l_ij
    r12 = np.sum(G1 * G2) - c[3]  # Σ_{i≠j} w_i w_j² k_ij l_ij
    r22 = np.sum(G2 * G2) - c[4]  # Σ_{i≠j} w_i² w_j² k_ij l_ij
    q1 = a @ G1 @ b - a @ p["vA2"] - b @ p["vB2"] + c[3]  # Σ_i w_i (K̃w)_i (L̃w)_i
    q2 = a @ G2 @ b - a @ p["vA3"] - b @ p["vB3"] + c[4]  # Σ_i w_i² (K̃w)_i (L̃w)_i
    kw = a @ a - s["k2_" + pair[0]]  # wᵀK̃w
    lw = b @ b - s["k2_" + pair[1]]
    s1 = r11
    s3 = q1 - r12
    s2 = kw * lw - 4.0 * q2 + 2.0 * r22
    n2 = W1 ** 2 - W2
    n3 = W1 ** 3 - 3 * W1 * W2 + 2 * W3
    n4 = W1 ** 4 - 6 * W1 ** 2 * W2 + 3 * W2 ** 2 + 8 * W1 * W3 - 6 * W4
    return float(s1 / n2 + s2 / n4 - 2.0 * s3 / n3)


def cka_from_sums(s: dict[str, Any], debiased: bool) -> float:
    """CKA from the row sums; NaN where it is undefined (a zero or negative self-similarity).

    The debiased value needs at least 4 distinct examples of positive weight (NaN otherwise).
    """
    if debiased:
        if np.count_nonzero(s["W"]) == 0 or _distinct_short(s):
            return float("nan")
        kl, kk, ll = (_hsic_u(s, pair) for pair in _PAIRS)
    else:
        W1 = s["W"][0]
        cen = {pair: s[pair]["G1"] - np.outer(s["a_" + pair[0]], s["a_" + pair[1]]) / W1
               for pair in _PAIRS}
        kl = float(np.sum(cen["xy"] ** 2))
        kk, ll = float(np.sum(cen["xx"] ** 2)), float(np.sum(cen["yy"] ** 2))
    # A self-similarity at rounding level of the rows' own scale (Σ w² ‖x_i‖², per example for
    # the normalised HSIC_u) means a constant representation: undefined, not a number.
    norm = s["W"][1] if debiased else 1.0
    if kk <= 1e-20 * (s["k2_x"] / norm) ** 2 or ll <= 1e-20 * (s["k2_y"] / norm) ** 2:
        return float("nan")
    return kl / float(np.sqrt(kk * ll))


def _distinct_short(s: dict[str, Any]) -> bool:
    W1, W2, W3, W4 = s["W"]
    return W1 ** 4 - 6 * W1 ** 2 * W2 + 3 * W2 ** 2 + 8 * W1 * W3 - 6 * W4 <= 0


def _refuse_undefined(value: float, debiased: bool) -> float:
    if np.isnan(value):
        which = "debiased HSIC_u(K, K) or HSIC_u(L, L)" if debiased else "‖XᵀX‖_F or ‖YᵀY‖_F"
        raise ValueError(f"CKA is undefined here: {which} is not positive (a constant "
                         "representation, or too few examples for the debiased estimator)")
    return value


def linear_cka(X: Any, Y: Any, *, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same examples (Kornblith et al. 2019).

    Args:
        X: (n, p) array or tensor, one row per example (flatten tokens to rows).
        Y: (n, q), the same examples in the same order.
        debiased: use Song et al.'s (2012) unbiased HSIC (needs n >= 4; Nguyen, Raghu &
            Kornblith 2021), else the biased plug-in ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) of the
            column-centred X, Y.

    Returns:
        The CKA, computed in float64: 1 when Y is an orthogonal transform and isotropic scaling of
        X (both estimators); in [0, 1] for the biased estimator; the debiased one can be slightly
        negative.

    Raises:
        ConfigError: not 2-D, different numbers of rows, or too few rows (see :func:`check_pair`).
        ValueError: a representation without variance (or, debiased, a non-positive HSIC_u(K, K)).
    """
    X, Y = check_pair(X, Y, debiased)
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)  # exact: both estimators are translation-invariant
    value = cka_from_sums(row_sums(X, Y, np.ones(X.shape[0])), debiased)
    return _refuse_undefined(value, debiased)


class CKAAccumulator:
    """Exact linear CKA accumulated over mini-batches of rows (X_b, Y_b).

    Keeps the row sums of :func:`row_sums` (Gram products p × p, q × q, p × q, column sums,
    squared row norms and their products with rows): memory O(p² + q² + pq), independent of n.
    Rows are shifted by the first batch's column means before summing (exact, since CKA is
    translation-invariant; it avoids cancellation in the raw sums). After any sequence of
    :meth:`update` calls, :meth:`cka` equals :func:`linear_cka` of the stacked batches, biased
    and debiased, to float64 rounding.

    Example::

        acc = CKAAccumulator()
        for xb, yb in batches:
            acc.update(xb.reshape(-1, xb.shape[-1]), yb.reshape(-1, yb.shape[-1]))
        value = acc.cka()  # debiased
    """

    def __init__(self) -> None:
        self.n = 0
        self._sums: dict[str, Any] | None = None
        self._shift: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, X_b: Any, Y_b: Any) -> None:
        """Add a batch of rows (n_b × p, n_b × q; the same examples).

        Raises:
            ConfigError: a bad array, different row counts, or a feature count that changes.
        """
        X_b, Y_b = as_rows("X_b", X_b), as_rows("Y_b", Y_b)
        if X_b.shape[0] != Y_b.shape[0]:
            raise ConfigError(f"invalid parameters X_b, Y_b of shapes {X_b.shape}, {Y_b.shape}: "
                              "must have the same number of rows")
        if self._shift is None:
            self._shift = (X_b.mean(axis=0), Y_b.mean(axis=0))
        elif (X_b.shape[1], Y_b.shape[1]) != (self._shift[0].size, self._shift[1].size):
            raise ConfigError(f"invalid parameters X_b, Y_b of shapes {X_b.shape}, {Y_b.shape}: "
                              f"must have {self._shift[0].size} and {self._shift[1].size} "
                              "features, like the first batch")
        part = row_sums(X_b - self._shift[0], Y_b - self._shift[1], np.ones(X_b.shape[0]))
        if self._sums is None:
            self._sums = part
        else:
            add_sums(self._sums, part)
        self.n += X_b.shape[0]

    def cka(self, *, debiased: bool = True) -> float:
        """The CKA of all rows added so far (see :func:`linear_cka`).

        Raises:
            ConfigError: too few rows so far (n < 4 debiased, n < 2 biased) or ``debiased`` not bool.
            ValueError: a representation without variance.
        """
        check_bool("debiased", debiased)
        minimum = 4 if debiased else 2
        if self.n < minimum or self._sums is None:
            raise ConfigError(f"invalid accumulator state n={self.n} rows: the "
                              f"{'debiased' if debiased else 'biased'} estimator needs n >= {minimum}")
        return _refuse_undefined(cka_from_sums(self._sums, debiased), debiased)
