"""The binned information plane: I(X; T) and I(T; Y) of a layer's activations, by equal-width binning.

Shwartz-Ziv & Tishby (2017), "Opening the Black Box of Deep Neural Networks via Information", and
Saxe et al. (2018), "On the Information Bottleneck Theory of Deep Learning" (ICLR 2018): the
activations T (n samples × units) of a hidden layer on a fixed set of n distinct inputs are
discretised into ``bins`` equal-width bins over their range [min T, max T] (all units and samples
of that layer at that moment), each sample's vector of bin indices is one symbol, and the
mutual informations are the plug-in (empirical) ones in bits, with X uniform over the n samples:

- I(X; T) = H(T), since T is a function of X (each input its own symbol);
- I(T; Y) = H(T) + H(Y) − H(T, Y).

Both are biased (plug-in entropies of at most n symbols: H(T) ≤ log₂ n), and depend on the bin
count; that dependence is what Saxe et al. show, so callers vary it. A layer whose activations
are all equal has one bin (H(T) = 0).
"""

from __future__ import annotations

import math

import numpy as np

from ..validation import check_int


def _codes(values: np.ndarray) -> np.ndarray:
    """One integer code per row (rows of a 2-D array, or scalars of a 1-D one), equal rows equal codes.

    The columns are combined in mixed radix, code · radix + column, and the codes made dense
    again (0 … number of distinct prefixes − 1, by a 1-D ``np.unique``) only before the product
    could overflow int64. Non-negative integer columns (bin indices) are used as they are; any
    other column is first made dense by its own ``np.unique``. That is exact and several times
    faster than ``np.unique(values, axis=0)``, which sorts the rows as byte records; the codes
    are the same (both number the distinct rows in lexicographic order).
    """
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"invalid symbols of shape {v.shape}: need (n,) or (n, d)")
    n, d = v.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    small = np.issubdtype(v.dtype, np.integer) and int(v.min()) >= 0 and int(v.max()) < 2**31
    radices = (v.max(axis=0).astype(np.int64) + 1) if small else None
    codes, size = np.zeros(n, dtype=np.int64), 1  # size: an upper bound on the number of codes
    for j in range(d):
        if small:
            column, radix = v[:, j].astype(np.int64, copy=False), int(radices[j])
        else:
            _, column = np.unique(v[:, j], return_inverse=True)
            column, radix = column.reshape(-1), int(column.max()) + 1
        if size * radix >= 2**62:  # make the codes dense (< n) before the product can overflow
            _, codes = np.unique(codes, return_inverse=True)
            codes, size = codes.reshape(-1), int(codes.max()) + 1
        codes, size = codes * radix + column, size * radix
    _, codes = np.unique(codes, return_inverse=True)
    return codes.reshape(-1).astype(np.int64, copy=False)


def entropy(symbols: np.ndarray) -> float:
    """Plug-in entropy in bits of the empirical distribution of ``symbols`` (rows as symbols)."""
    codes = _codes(symbols)
    if len(codes) == 0:
        return math.nan
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in I(A; B) = H(A) + H(B) − H(A, B) in bits, from paired samples (rows as symbols).

    Raises:
        ValueError: ``a`` and ``b`` have different numbers of samples.
    """
    ca, cb = _codes(a), _codes(b)
    if len(ca) != len(cb):
        raise ValueError(f"a and b differ in their number of samples: {len(ca)} and {len(cb)}")
    joint = np.stack([ca, cb], axis=1)
    return max(entropy(ca) + entropy(cb) - entropy(joint), 0.0)


def bin_activations(activations: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin index (0 … bins − 1) of every activation, over [min, max] of the whole array.

    Args:
        activations: (n, units) one layer's activations. bins: number of bins, ≥ 1.

    Raises:
        ConfigError: ``bins`` < 1. ValueError: non-finite activations.
    """
    check_int("bins", bins, 1)
    t = np.asarray(activations, dtype=np.float64)
    if not np.isfinite(t).all():
        raise ValueError("invalid activations: not all finite")
    low, high = float(t.min()), float(t.max())
    if high == low:
        return np.zeros(t.shape, dtype=np.int64)
    return np.minimum(((t - low) / (high - low) * bins).astype(np.int64), bins - 1)


def information_plane(activations: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, float]:
    """``I_XT`` = I(X; T) = H(T) and ``I_TY`` = I(T; Y) of binned activations (module docstring), in bits.

    Args:
        activations: (n, units) of one layer on n distinct inputs. labels: (n,) their labels.
        bins: equal-width bins over the activations' range.

    Raises:
        ValueError: the numbers of samples differ.
    """
    t = np.asarray(activations)
    if len(t) != len(labels):
        raise ValueError(f"activations and labels differ in their number of samples: {len(t)} and {len(labels)}")
    binned = bin_activations(t.reshape(len(t), -1), bins)
    return {"I_XT": entropy(binned), "I_TY": mutual_information(binned, np.asarray(labels))}
