"""Spectral density by stochastic Lanczos quadrature (SLQ), and criteria read off it.

Each probe v (Rademacher, normalised) gives m Lanczos steps; the eigenvalues θ_i of T_m are
quadrature nodes and the squared first components τ_i of its eigenvectors their weights, so
vᵀ f(H) v ≈ Σ τ_i f(θ_i) (Golub & Meurant; Ghorbani, Krishnan & Xiao, ICML 2019). Averaging over
probes estimates the spectral density φ(λ) = (1/n) Σ δ(λ − λ_j); a Gaussian of width σ turns the
nodes into a smooth curve. Nodes and weights are kept, so any statistic can be recomputed.

Criteria read off the nodes and weights (Gabdullin, "Investigating generalization capabilities of
neural networks by means of loss landscapes and Hessian analysis"): re = |λ_min / λ_max| and
Kh_n = |Σ_{λ<0} |λ w|^n / Σ_{λ>0} (λ w)^n|.
"""

from __future__ import annotations

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


def spectrum_criteria(nodes: pd.DataFrame, n: float = 0.5) -> pd.DataFrame:
    """Per probe: λ_min, λ_max, negative weight mass, re = |λ_min/λ_max|, Kh_n."""
    rows = []
    for probe, sub in nodes.groupby("probe"):
        lam, w = sub["node"].to_numpy(), sub["weight"].to_numpy()
        neg, pos = lam < 0, lam > 0
        kh = np.abs((np.abs(lam[neg] * w[neg]) ** n).sum() / ((lam[pos] * w[pos]) ** n).sum())
        rows.append({"probe": probe, "lambda_min": lam.min(), "lambda_max": lam.max(),
                     "negative_mass": w[neg].sum(), "re": abs(lam.min() / lam.max()), f"Kh_{n:g}": kh})
    return pd.DataFrame(rows)
