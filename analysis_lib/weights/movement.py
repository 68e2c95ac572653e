"""How each layer's weights move: norms, update-to-weight ratios, rotation and distance from init.

Every quantity is a pure function of named tensors (``dict(model.named_parameters())``-shaped
dicts) and is reported three ways (:func:`analysis_lib.layers.per_layer`): per layer (all of a
layer's tensors together, e.g. ``fc1`` weight and bias as one vector), per tensor (metric
suffixed ``.weight`` / ``.bias``), and for the whole model (``layer = "model"``).

Quantities (``θ_l`` the layer's parameters, ``t`` the step):

- ``weight_norm``: ‖θ_l(t)‖₂.
- ``update_ratio``: ‖θ_l(t) − θ_l(t−1)‖ / ‖θ_l(t−1)‖ (You, Gitman & Ginsburg, LARS, 2017).
- ``rotation``: 1 − cos(θ_l(t), θ_l(0)) (Carbonnelle & De Vleeschouwer, "Layer rotation", 2019).
- ``dist_init``: ‖θ_l(t) − θ_l(0)‖₂.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..layers import per_layer

Tensors = Mapping[str, torch.Tensor]


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.double())


def _ratio(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    return _norm(after - before) / _norm(before)


def _rotation(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    cos = torch.dot(current.double(), initial.double()) / (_norm(current) * _norm(initial))
    return 1.0 - cos


def _distance(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    return _norm(current - initial)


def layer_weight_norms(params: Tensors) -> list[tuple[str, str, float]]:
    """‖θ‖₂ per model / layer / tensor."""
    return per_layer(_norm, params)


def layer_update_ratios(after: Tensors, before: Tensors) -> list[tuple[str, str, float]]:
    """‖θ(t) − θ(t−1)‖ / ‖θ(t−1)‖ per model / layer / tensor (NaN where θ(t−1) = 0)."""
    return per_layer(_ratio, after, before)


def layer_rotations(current: Tensors, initial: Tensors) -> list[tuple[str, str, float]]:
    """1 − cos(θ(t), θ(0)) per model / layer / tensor; 0 = same direction, 2 = opposite."""
    return per_layer(_rotation, current, initial)


def layer_distances(current: Tensors, initial: Tensors) -> list[tuple[str, str, float]]:
    """‖θ(t) − θ(0)‖₂ per model / layer / tensor."""
    return per_layer(_distance, current, initial)
