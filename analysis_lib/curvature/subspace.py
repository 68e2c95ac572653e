"""How much of a vector or a subspace lies in the span of top Hessian eigenvectors.

The overlap ‖V_kᵀ g‖² / ‖g‖² of a gradient g with the top-k eigenvectors V_k is the measure of
Gur-Ari, Roberts & Dyer (2018), "Gradient descent happens in a tiny subspace"; a random k-dimensional
subspace of a dim-dimensional space gives k / dim on average.
"""

from __future__ import annotations

import torch


def gradient_overlap(g: torch.Tensor, V: torch.Tensor) -> float:
    """‖Vᵀg‖² / ‖g‖² for orthonormal columns V (dim, k) and a vector g (dim,); in [0, 1]."""
    g = g.to(torch.float64)
    return float((V.T.to(torch.float64) @ g).pow(2).sum() / g.pow(2).sum())


def subspace_overlap(V: torch.Tensor, W: torch.Tensor) -> float:
    """‖VᵀW‖_F² / k for two orthonormal (dim, k) bases: 1 for the same subspace, ≈ k/dim at random."""
    k = V.shape[1]
    if W.shape[1] != k:
        raise ValueError(f"bases have {k} and {W.shape[1]} columns; compare subspaces of equal dimension")
    return float((V.T.to(torch.float64) @ W.to(torch.float64)).pow(2).sum() / k)
