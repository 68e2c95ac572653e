"""Spectral density by stochastic Lanczos quadrature (SLQ), and criteria read off it.

Each probe v (Rademacher, normalised) gives m Lanczos steps; the eigenvalues θ_i of T_m are
quadrature nodes and the squared first components τ_i of its eigenvectors their weights, so
vᵀ f(H) v ≈ Σ τ_i f(θ_i) (Golub & Meurant; Ghorbani, Krishnan & Xiao, ICML 2019). Averaging over
probes estimates the spectral density φ(λ) = (1/n) Σ δ(λ − λ_j); a Gaussian of width σ turns the
nodes into a smooth curve. Nodes and weights are kept, so any statistic can be recomputed.

**Mass below a threshold.** The quadrature's own estimate of μ_v(λ < 0), the weight of the
negative nodes, is biased where the spectrum is dense around 0 (the bulk of a Hessian), and does
not converge monotonically in the number of steps. What a Gauss rule does give exactly (in exact
arithmetic) are bounds: by the Chebyshev–Markov–Stieltjes inequalities, with x_k the largest node
below 0 and x_{k+1} the smallest node at or above it, L − w_k ≤ μ_v(λ < 0) ≤ L + w_{k+1}, where L
is the weight below 0 (Golub & Meurant, "Matrices, Moments and Quadrature", ch. 7).
:func:`negative_mass` reports the estimate with its spread over probes and these bounds, and
warns when they are too far apart for the number to mean anything.

Criteria read off the nodes and weights (Gabdullin, "Investigating generalization capabilities of
neural networks by means of loss landscapes and Hessian analysis"): re = |λ_min / λ_max| and
Kh_n = |Σ_{λ<0} |λ w|^n / Σ_{λ>0} (λ w)^n|.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .lanczos import lanczos_tridiagonal, tridiagonal

NODE_COLUMNS = ["probe", "node", "weight"]
DENSITY_COLUMNS = ["probe", "eigenvalue", "density"]


def slq_probes(dim: int, n_probes: int, seed: int = 0) -> torch.Tensor:
    """Seeded Rademacher probe vectors, (n_probes, dim) float64."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n_probes, dim), generator=gen) * 2 - 1).to(torch.float64)


def slq_nodes(matvec: Callable, dim: int, *, n_probes: int = 4, steps: int = 60, seed: int = 0,
              probes: torch.Tensor | None = None, device="cpu") -> pd.DataFrame:
    """Quadrature nodes and weights per probe (columns NODE_COLUMNS); weights sum to 1 per probe.

    Args:
        matvec: v (dim,) -> H v.
        n_probes, seed: how many seeded Rademacher probes (ignored when ``probes`` is given).
        steps: Lanczos steps per probe; moments vᵀHᵖv are exact for p < 2·steps.
        probes: explicit probe vectors (n, dim).
    """
    probes = slq_probes(dim, n_probes, seed) if probes is None else probes.to(torch.float64)
    rows = []
    for probe, v in enumerate(probes.to(device)):
        alpha, beta, _ = lanczos_tridiagonal(matvec, v / v.norm(), min(steps, dim))
        theta, S = torch.linalg.eigh(tridiagonal(alpha, beta))
        rows += [(probe, t, w) for t, w in zip(theta.tolist(), (S[0, :] ** 2).tolist())]
    return pd.DataFrame(rows, columns=NODE_COLUMNS)


def density_curve(nodes: pd.DataFrame, grid: np.ndarray, sigma: float) -> pd.DataFrame:
    """Gaussian-smoothed density per probe on ``grid`` (columns DENSITY_COLUMNS); each integrates to 1."""
    frames = []
    for probe, sub in nodes.groupby("probe"):
        z = (grid[:, None] - sub["node"].to_numpy()[None, :]) / sigma
        dens = (np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))) @ sub["weight"].to_numpy()
        frames.append(pd.DataFrame({"probe": probe, "eigenvalue": grid, "density": dens}))
    return pd.concat(frames, ignore_index=True)


def mass_bounds(nodes: np.ndarray, weights: np.ndarray, threshold: float = 0.0) -> tuple[float, float, float]:
    """(estimate, lower, upper) of one probe's spectral mass below ``threshold`` (module docstring)."""
    order = np.argsort(nodes)
    lam, w = np.asarray(nodes, dtype=np.float64)[order], np.asarray(weights, dtype=np.float64)[order]
    below = lam < threshold
    estimate = float(w[below].sum())
    k = int(below.sum())
    lower = estimate - (w[k - 1] if k > 0 else 0.0)
    upper = estimate + (w[k] if k < len(w) else 0.0)
    return estimate, max(lower, 0.0), min(upper, 1.0)


def negative_mass(nodes: pd.DataFrame, *, threshold: float = 0.0, max_width: float = 0.05,
                  warn: bool = True) -> dict:
    """The spectral mass below ``threshold`` from SLQ nodes, with its spread and quadrature bounds.

    Args:
        nodes: from :func:`slq_nodes` (columns NODE_COLUMNS).
        threshold: the mass of λ < threshold is estimated (0: the negative mass).
        max_width: the bounds may be at most this far apart for the mass to count as resolved.
        warn: emit a ``RuntimeWarning`` when it is not resolved.

    Returns:
        ``{"estimate", "se", "lower", "upper", "resolved", "n_probes"}``: the mean over probes of
        the quadrature estimate, its standard error over probes (NaN for one probe), the means of
        the per-probe bounds, and whether ``upper − lower ≤ max_width``.
    """
    per = np.array([mass_bounds(sub["node"].to_numpy(), sub["weight"].to_numpy(), threshold)
                    for _, sub in nodes.groupby("probe")])  # (probes, 3)
    est, lo, hi = per.mean(axis=0)
    se = per[:, 0].std(ddof=1) / np.sqrt(len(per)) if len(per) > 1 else float("nan")
    resolved = bool(hi - lo <= max_width)
    if warn and not resolved:
        warnings.warn(f"SLQ cannot resolve the spectral mass below {threshold:g}: the quadrature puts it at "
                      f"{est:.3f} (se {se:.3f} over {len(per)} probes) but only bounds it to [{lo:.3f}, {hi:.3f}]; "
                      "raise the Lanczos steps, or use the exact spectrum of a small block", RuntimeWarning,
                      stacklevel=2)
    return {"estimate": float(est), "se": float(se), "lower": float(lo), "upper": float(hi),
            "resolved": resolved, "n_probes": len(per)}


def spectrum_criteria(nodes: pd.DataFrame, n: float = 0.5) -> pd.DataFrame:
    """Per probe: λ_min, λ_max, negative weight mass with its quadrature bounds, re = |λ_min/λ_max|, Kh_n.

    ``negative_mass`` is the quadrature's estimate; ``negative_mass_low`` and
    ``negative_mass_high`` bound the probe's true mass below 0 (see the module docstring).
    """
    rows = []
    for probe, sub in nodes.groupby("probe"):
        lam, w = sub["node"].to_numpy(), sub["weight"].to_numpy()
        neg, pos = lam < 0, lam > 0
        kh = np.abs((np.abs(lam[neg] * w[neg]) ** n).sum() / ((lam[pos] * w[pos]) ** n).sum())
        mass, low, high = mass_bounds(lam, w)
        rows.append({"probe": probe, "lambda_min": lam.min(), "lambda_max": lam.max(),
                     "negative_mass": mass, "negative_mass_low": low, "negative_mass_high": high,
                     "re": abs(lam.min() / lam.max()), f"Kh_{n:g}": kh})
    return pd.DataFrame(rows)
