"""Hessian trace: exact for small blocks, Hutchinson and Hutch++ with a standard error otherwise.

- Hutchinson (1989): tr(H) ≈ mean of zᵀHz over Rademacher z; unbiased, variance 2‖H‖_F² minus the
  diagonal's share, so its error falls as 1/√m.
- Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021): spend a third of the products on a sketch
  Q = orth(H S) that captures the top of the spectrum exactly, tr(QᵀHQ), and Hutchinson on the
  deflated rest (I − QQᵀ)H(I − QQᵀ); error falls as 1/m when the spectrum has outliers. The
  standard error reported is that of the Hutchinson part (the sketch part has no sampling error
  given Q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TraceEstimate:
    """``estimate`` ± ``se`` (standard error; 0 for exact), from ``n_matvecs`` products."""

    estimate: float
    se: float
    n_matvecs: int
    method: str


def _rademacher(dim: int, m: int, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.randint(0, 2, (dim, m), generator=gen, dtype=torch.int8).to(device) * 2 - 1).to(torch.float64)


def _matmat(matvec: MatVec, V: torch.Tensor) -> torch.Tensor:
    return torch.stack([matvec(V[:, j]).to(torch.float64) for j in range(V.shape[1])], dim=1)


def hutchinson(matvec: MatVec, dim: int, n_matvecs: int, *, seed: int = 0,
               device="cpu") -> TraceEstimate:
    """Hutchinson's estimator with ``n_matvecs`` Rademacher probes (≥ 2 for a standard error)."""
    if n_matvecs < 2:
        raise ValueError(f"invalid argument n_matvecs={n_matvecs}: needs at least 2 for an error bar")
    gen = torch.Generator().manual_seed(seed)
    Z = _rademacher(dim, n_matvecs, gen, device)
    samples = (Z * _matmat(matvec, Z)).sum(dim=0)  # zᵀHz per probe, (m,)
    return TraceEstimate(samples.mean().item(), samples.std().item() / math.sqrt(n_matvecs),
                         n_matvecs, "Hutchinson")


def hutchpp(matvec: MatVec, dim: int, n_matvecs: int, *, seed: int = 0, device="cpu") -> TraceEstimate:
    """Hutch++ with ``n_matvecs`` products in total; needs at least 6.

    A third of the products sketch, a third apply H to the sketch basis, a third run Hutchinson
    on the deflated remainder.
    """
    if n_matvecs < 6:
        raise ValueError(f"invalid argument n_matvecs={n_matvecs}: Hutch++ needs at least 6")
    k = n_matvecs // 3
    gen = torch.Generator().manual_seed(seed)
    S, G = _rademacher(dim, k, gen, device), _rademacher(dim, n_matvecs - 2 * k, gen, device)
    Q, _ = torch.linalg.qr(_matmat(matvec, S))  # (dim, k)
    top = torch.trace(Q.T @ _matmat(matvec, Q)).item()
    G = G - Q @ (Q.T @ G)  # project the probes off the sketched subspace
    samples = (G * _matmat(matvec, G)).sum(dim=0)
    m = G.shape[1]
    se = samples.std().item() / math.sqrt(m) if m > 1 else float("nan")
    return TraceEstimate(top + samples.mean().item(), se, n_matvecs, "Hutch++")


def exact_trace(matvec: MatVec, dim: int, device="cpu") -> TraceEstimate:
    """Σ e_iᵀ H e_i with ``dim`` products: the reference for small blocks."""
    total = sum(matvec(torch.nn.functional.one_hot(torch.tensor(i), dim).to(device, torch.float64))[i].item()
                for i in range(dim))
    return TraceEstimate(total, 0.0, dim, "exact")


def layer_traces(model, loss_fn, data, *, n_matvecs: int = 60, exact_max_dim: int = 500, seed: int = 0,
                 **operator_kwargs):
    """Hessian trace of every layer's block (and the whole model) as a tidy table.

    Exact from the backpropagated Hessian diagonal where the model's traced structure and the loss
    make it provably exact (piecewise-linear ``nn.Linear`` networks under cross-entropy or squared
    error, see :mod:`analysis_lib.curvature.diagonal`: no products at all, method ``"exact
    diagonal"``); otherwise exact (``dim`` products, method ``"exact"``) for blocks of at most
    ``exact_max_dim`` parameters, and Hutch++ with ``n_matvecs`` products and a standard error
    (method ``"Hutch++"``) beyond.

    Args:
        model: the network (not modified). loss_fn, data: as for
            :class:`~analysis_lib.curvature.hessian.HessianOperator`.
        n_matvecs, exact_max_dim, seed: of the stochastic estimates.
        operator_kwargs: passed to every ``HessianOperator`` (``chunk_size``, ``batch_size_fn``,
            ``train_mode``).

    Returns:
        DataFrame with columns ``layer, estimate, se, n_matvecs, method``; ``layer = "model"``
        for the whole network.
    """
    import pandas as pd

    from ..layers import layer_blocks
    from .diagonal import hessian_diagonal
    from .hessian import HessianOperator

    plain = set(operator_kwargs) <= {"chunk_size"}  # the diagonal has no BatchNorm mode or custom weights
    diag = hessian_diagonal(model, loss_fn, data) if plain else None
    if diag is not None:
        per_layer = {layer: sum(diag[n].sum().item() for n in names) for layer, names in layer_blocks(model).items()}
        return pd.DataFrame([{"layer": layer, "estimate": value, "se": 0.0, "n_matvecs": 0,
                              "method": "exact diagonal"}
                             for layer, value in [("model", sum(per_layer.values())), *per_layer.items()]])
    rows = []
    for layer, names in [("model", None), *layer_blocks(model).items()]:
        op = HessianOperator(model, loss_fn, data, params=names, **operator_kwargs)
        est = (exact_trace(op.matvec, op.dim, device=op.device) if op.dim <= exact_max_dim
               else hutchpp(op.matvec, op.dim, n_matvecs, seed=seed, device=op.device))
        rows.append({"layer": layer, "estimate": est.estimate, "se": est.se,
                     "n_matvecs": est.n_matvecs, "method": est.method})
    return pd.DataFrame(rows)
