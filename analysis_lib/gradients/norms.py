"""Per-layer gradient norms: ‖g_l‖₂ of the mini-batch gradient of one update."""

from __future__ import annotations

from typing import Mapping

import torch

from ..layers import per_layer


def layer_gradient_norms(grads: Mapping[str, torch.Tensor]) -> list[tuple[str, str, float]]:
    """‖g‖₂ per model / layer / tensor (:func:`analysis_lib.layers.per_layer`), in float64."""
    return per_layer(lambda v: torch.linalg.vector_norm(v.double()), grads)


def gradients_of(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each parameter's ``.grad``, zeros where a parameter got none (unused in the forward pass)."""
    return {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in params.items()}
