"""Spectra of weight matrices: singular-value statistics, the Marchenko–Pastur edge, the ESD, a null.

Every weight tensor with two or more dimensions is read as a matrix W (:func:`weight_matrix`):
a Linear weight as it is (out × in), a convolution kernel (out, in, k…) as out × (in·k…), the
matrix that multiplies the unfolded input patches. Biases and norm scales (1-D) have no spectrum
and are refused. All statistics are in float64, from one SVD of W, with singular values
σ_1 ≥ … ≥ σ_k, k = min(N, M), N × M the matrix's shape with N ≥ M after a transpose if needed
(:func:`spectrum_stats`):

- ``sigma_max`` σ_1; ``stable_rank`` ‖W‖_F² / σ_1²; ``effective_rank`` exp(−Σ p_i log p_i),
  p_i = σ_i / Σ_j σ_j (Roy & Vetterli 2007), the definitions of
  :func:`analysis_lib.gradients.spectra.spectral_statistics` (same code);
- ``condition_number`` σ_1 / σ_k, inf when σ_k is numerically 0 (σ_k ≤ σ_1 · N · ε_float64,
  numpy's ``matrix_rank`` tolerance), NaN for W = 0;
- ``mp_edge`` σ̂ (√N + √M) and ``n_above_mp``, the number of σ_i strictly above it. For a
  random N × M matrix of i.i.d. entries with variance σ², the eigenvalues of WᵀW / N fill the
  Marchenko–Pastur bulk [σ²(1 − √q)², σ²(1 + √q)²], q = M / N (Marchenko & Pastur 1967), so the
  largest singular value of the bulk tends to σ(√N + √M) (Geman 1980; Bai & Yin 1993).
  σ̂ is the standard deviation of W's entries about their mean (ddof 0): a common mean μ is a
  rank-one part μ·11ᵀ with singular value |μ|√(NM), counted as a spike, not as bulk width. On a
  trained matrix σ̂ also contains the spikes' own energy, which widens the edge slightly: the
  count is conservative (Martin & Mahoney 2021 fit σ̂ instead; we do not, to keep it a closed
  form of W).

The empirical spectral density (:func:`empirical_spectral_density`) is the histogram of the k
eigenvalues λ_i = σ_i² / N of WᵀW / N (the normalisation under which the bulk above is
[σ²(1 − √q)², σ²(1 + √q)²], independent of the size), with the Marchenko–Pastur density for σ̂
beside it. The null (:func:`shuffled_null`) permutes W's entries: same entry distribution, same
σ̂ and MP edge, no structure; trained structure is what its spectrum lacks.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..gradients.spectra import singular_value_statistics
from ..layers import layer_of
from ..validation import ConfigError, check_bool, check_int, fail
from .powerlaw_fit import TAIL_KEYS, ks_fit, powerlaw_tail

STATS = ("sigma_max", "stable_rank", "effective_rank", "condition_number", "mp_edge", "n_above_mp")
ESD_COLUMNS = ["bin_left", "bin_right", "count", "density", "mp_density"]
TABLE_KEYS = ["layer", "tensor", "matrix", "rows", "cols", "shape"]
PROBE_METRICS = ("sigma_max", "stable_rank", "effective_rank", "condition_number", "n_above_mp")
PROBE_MIN_TAIL = 50  # the weight_spectra probe records alpha only for a KS tail of at least this many


def weight_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """A weight tensor as a matrix: (out, in) as it is, (out, in, k…) as out × (in·k…).

    Args:
        tensor: a parameter with at least two dimensions.

    Returns:
        The (out, in·k…) view, detached.

    Raises:
        ConfigError: a tensor with fewer than two dimensions (a bias or norm scale) or no entries.
    """
    if not isinstance(tensor, torch.Tensor):
        fail("tensor", type(tensor).__name__, "must be a torch.Tensor")
    if tensor.ndim < 2 or tensor.numel() == 0:
        fail("tensor", f"<tensor of shape {tuple(tensor.shape)}>",
             "must have at least two dimensions and entries (biases and norm scales have no spectrum)")
    return tensor.detach().reshape(tensor.shape[0], -1)


def _matrix64(W: torch.Tensor) -> torch.Tensor:
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.numel() == 0:
        fail("W", f"<{type(W).__name__} of shape {tuple(getattr(W, 'shape', ()))}>",
             "must be a non-empty 2-D torch.Tensor (use weight_matrix for conv kernels)")
    W = W.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(W).all()):
        fail("W", f"<matrix of shape {tuple(W.shape)}>", "must have finite entries (no NaN or inf)")
    return W


def mp_edge(W: torch.Tensor) -> float:
    """σ̂(√N + √M): the Marchenko–Pastur upper edge of W's singular values (module docstring)."""
    W = _matrix64(W)
    n, m = W.shape
    return float(W.std(correction=0)) * (math.sqrt(n) + math.sqrt(m))


def _stats_from(W: torch.Tensor, s: torch.Tensor) -> dict[str, float]:
    """The :data:`STATS` of float64 W from its singular values ``s`` (descending)."""
    base = {k: float(v) for k, v in singular_value_statistics(s, torch.linalg.matrix_norm(W)).items()}
    top, bottom = float(s[0]), float(s[-1])
    if top == 0.0:
        condition = math.nan
    elif bottom <= top * max(W.shape) * float(np.finfo(np.float64).eps):
        condition = math.inf
    else:
        condition = top / bottom
    edge = mp_edge(W)
    return {"sigma_max": top, "stable_rank": base["stable_rank"], "effective_rank": base["effective_rank"],
            "condition_number": condition, "mp_edge": edge, "n_above_mp": float(int((s > edge).sum()))}


def spectrum_stats(W: torch.Tensor) -> dict[str, float]:
    """Singular-value statistics of one weight matrix, in float64 (definitions in the module docstring).

    Args:
        W: (N, M) matrix (any dtype; computed in float64). Conv kernels: pass
            ``weight_matrix(kernel)``.

    Returns:
        dict with exactly the keys :data:`STATS`: ``sigma_max``, ``stable_rank``,
        ``effective_rank``, ``condition_number``, ``mp_edge``, ``n_above_mp`` (a count, as float).

    Raises:
        ConfigError: W not a non-empty 2-D tensor of finite numbers.
    """
    W = _matrix64(W)
    return _stats_from(W, torch.linalg.svdvals(W))


def eigenvalues(W: torch.Tensor) -> np.ndarray:
    """The k = min(N, M) eigenvalues σ_i² / N of WᵀW / N (N = the larger side), ascending, float64."""
    W = _matrix64(W)
    s = torch.linalg.svdvals(W).numpy()
    return np.sort(s**2 / max(W.shape))


def mp_density(lam: np.ndarray, variance: float, q: float) -> np.ndarray:
    """Marchenko–Pastur density of the eigenvalues of WᵀW / N, q = M / N ≤ 1, entry variance σ².

    ρ(λ) = √((λ₊ − λ)(λ − λ₋)) / (2π σ² q λ) on [λ₋, λ₊], λ± = σ²(1 ± √q)², 0 elsewhere.
    """
    lo, hi = variance * (1 - math.sqrt(q)) ** 2, variance * (1 + math.sqrt(q)) ** 2
    lam = np.asarray(lam, dtype=np.float64)
    inside = (lam > lo) & (lam < hi) & (lam > 0)
    out = np.zeros_like(lam)
    out[inside] = np.sqrt((hi - lam[inside]) * (lam[inside] - lo)) / (2 * math.pi * variance * q * lam[inside])
    return out


def empirical_spectral_density(W: torch.Tensor, bins: int | Sequence[float] = 50) -> pd.DataFrame:
    """Histogram of the eigenvalues λ_i = σ_i² / N of WᵀW / N, with the MP density beside it.

    Args:
        W: (N, M) matrix; N is taken as the larger side (WWᵀ for a wide W: same non-zero λ).
        bins: number of equal-width bins over [min λ, max λ] (as ``numpy.histogram``), or the
            increasing bin edges.

    Returns:
        Tidy table ``bin_left, bin_right, count, density, mp_density``: ``density`` is
        count / (k · width) (integrates to 1 over the bins), ``mp_density`` the
        Marchenko–Pastur density (:func:`mp_density`) for the entries' variance σ̂² at the bin
        centre.

    Raises:
        ConfigError: a bad W or ``bins``.
    """
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        check_int("bins", int(bins), 1)
        edges_in: int | np.ndarray = int(bins)
    else:
        edges_in = np.asarray(bins, dtype=np.float64) if isinstance(bins, (list, tuple, np.ndarray)) else None
        if (edges_in is None or edges_in.ndim != 1 or len(edges_in) < 2 or not np.all(np.isfinite(edges_in))
                or not np.all(np.diff(edges_in) > 0)):
            fail("bins", bins, "must be an integer >= 1 or a strictly increasing list of at least two edges")
    W = _matrix64(W)
    lam = eigenvalues(W)
    count, edges = np.histogram(lam, bins=edges_in)
    width = np.diff(edges)
    n, m = max(W.shape), min(W.shape)
    variance = float(W.var(correction=0))
    centre = (edges[:-1] + edges[1:]) / 2
    return pd.DataFrame({"bin_left": edges[:-1], "bin_right": edges[1:], "count": count.astype(np.int64),
                         "density": count / (len(lam) * width),
                         "mp_density": mp_density(centre, variance, m / n) if variance > 0 else np.nan})


def shuffled_null(W: torch.Tensor, seed: int) -> torch.Tensor:
    """W with its entries randomly permuted (same shape, dtype and multiset of entries).

    Args:
        W: a tensor of any shape (a conv kernel is shuffled across all its entries).
        seed: seed of the permutation (a ``torch.Generator`` of its own; global RNG untouched).

    Returns:
        A new tensor.
    """
    if not isinstance(W, torch.Tensor) or W.numel() == 0:
        fail("W", type(W).__name__, "must be a non-empty torch.Tensor")
    check_int("seed", seed, 0)
    flat = W.detach().reshape(-1)
    perm = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))
    return flat[perm.to(flat.device)].reshape(W.shape).clone()


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> parameter for every parameter with two or more dimensions, in order.

    Raises:
        ConfigError: the model has no such parameter.
    """
    if not isinstance(model, nn.Module):
        fail("model", type(model).__name__, "must be a torch.nn.Module")
    found = {name: p for name, p in model.named_parameters() if p.ndim >= 2 and p.numel() > 0}
    if not found:
        raise ConfigError(f"invalid parameter model={type(model).__name__}: it has no weight matrix "
                          "(no parameter with two or more dimensions)")
    return found


def matrix_label(param_name: str) -> tuple[str, str]:
    """``"fc1.weight"`` -> ``("fc1", "weight")``: the layer (as :func:`analysis_lib.layers.layer_of`) and tensor."""
    return layer_of(param_name), param_name.rsplit(".", 1)[-1]


def layer_weight_spectra(model: nn.Module, *, fit_tail: bool = True, null: bool = False, min_tail: int = 50,
                         n_boot: int = 200, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per weight matrix of any model: :data:`STATS` and the power-law tail fit.

    Args:
        model: any ``nn.Module``; every parameter with ≥ 2 dimensions is a matrix
            (:func:`weight_matrix`), 1-D parameters are skipped.
        fit_tail: fit α to the eigenvalues of WᵀW / N (:func:`powerlaw_tail`); False leaves
            the tail columns NaN with status ``"not fitted"``.
        null: also a row per matrix for its :func:`shuffled_null` (``matrix = "shuffled"``).
        min_tail, n_boot, ci: as in :func:`powerlaw_tail`.
        seed: seed of the bootstraps and the shuffles.

    Returns:
        Table ``layer, tensor, matrix ("weight" | "shuffled"), rows, cols, shape`` (the
        parameter's own shape, e.g. ``"8x3x5"``), the :data:`STATS`, then ``alpha, alpha_lo,
        alpha_hi, xmin, n_tail, ks_distance, R_exponential, p_exponential, R_lognormal,
        p_lognormal, status``. ``layer`` is the owning module as in
        :mod:`analysis_lib.weights.movement`.

    Raises:
        ConfigError: a model with no weight matrix, a non-finite weight, or a bad parameter.
    """
    check_bool("fit_tail", fit_tail)
    check_bool("null", null)
    if fit_tail:  # validate before any work
        powerlaw_tail(np.ones(1), min_tail=min_tail, n_boot=n_boot, ci=ci, seed=seed)
    check_int("seed", seed, 0)
    rows = []
    for index, (name, param) in enumerate(weight_matrices(model).items()):
        layer, tensor = matrix_label(name)
        original = weight_matrix(param)
        versions = [("weight", original)]
        if null:
            versions.append(("shuffled", shuffled_null(original, seed + index)))
        for kind, W in versions:
            W = _matrix64(W)
            row = {"layer": layer, "tensor": tensor, "matrix": kind, "rows": W.shape[0], "cols": W.shape[1],
                   "shape": "x".join(map(str, param.shape))}
            s = torch.linalg.svdvals(W)
            row.update(_stats_from(W, s))
            if fit_tail:
                lam = np.sort(s.numpy() ** 2 / max(W.shape))
                row.update(powerlaw_tail(lam, min_tail=min_tail, n_boot=n_boot, ci=ci, seed=seed))
            else:
                row.update({k: math.nan for k in TAIL_KEYS}, status="not fitted")
            rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_KEYS + list(STATS) + list(TAIL_KEYS))


def probe_spectra(params: dict[str, torch.Tensor], min_tail: int = PROBE_MIN_TAIL) -> list[tuple[str, str, float]]:
    """``(layer, metric, value)`` rows of the ``weight_spectra`` probe: :data:`PROBE_METRICS` and α.

    Args:
        params: ``dict(model.named_parameters())``; parameters with < 2 dimensions are skipped.
        min_tail: ``alpha`` (the :func:`ks_fit` point estimate on the eigenvalues of WᵀW / N) is
            recorded only where the KS-chosen tail holds at least this many eigenvalues.

    Returns:
        Rows in parameter order; the metric is suffixed ``.<tensor>`` unless the tensor is
        ``weight``. A matrix with non-finite entries gives NaN for every metric but ``alpha``.
    """
    rows = []
    for name, param in params.items():
        if param.ndim < 2 or param.numel() == 0:
            continue
        layer, tensor = matrix_label(name)
        suffix = "" if tensor == "weight" else "." + tensor
        W = weight_matrix(param).to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(W).all()):
            rows.extend((layer, metric + suffix, math.nan) for metric in PROBE_METRICS)
            continue
        s = torch.linalg.svdvals(W)
        stats = _stats_from(W, s)
        rows.extend((layer, metric + suffix, stats[metric]) for metric in PROBE_METRICS)
        lam = s.numpy() ** 2 / max(W.shape)
        lam = lam[lam > 0]
        if len(lam) >= min_tail and len(np.unique(lam)) >= 2:
            alpha, _, n_tail, _ = ks_fit(lam)
            if n_tail >= min_tail:
                rows.append((layer, "alpha" + suffix, alpha))
    return rows
