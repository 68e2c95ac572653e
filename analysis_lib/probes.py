"""Per-layer quantities measured during training, and the schedule on which they run.

Every quantity is a pure function of named tensors (``dict(model.named_parameters())``-shaped
dicts) and is reported three ways: per layer (all of a layer's tensors together, e.g. ``fc1``
weight and bias as one vector), per tensor (metric suffixed ``.weight`` / ``.bias``), and for the
whole model (``layer = "model"``).

Quantities (``θ_l`` the layer's parameters, ``t`` the step):

- ``grad_norm``: ‖g_l‖₂ of the mini-batch gradient of the update that produced θ(t).
- ``weight_norm``: ‖θ_l(t)‖₂.
- ``update_ratio``: ‖θ_l(t) − θ_l(t−1)‖ / ‖θ_l(t−1)‖ (You et al., LARS, 2017).
- ``rotation``: 1 − cos(θ_l(t), θ_l(0)) (Carbonnelle & De Vleeschouwer, "Layer rotation", 2019).
- ``dist_init``: ‖θ_l(t) − θ_l(0)‖₂.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

import numpy as np
import torch

from .config import ProbeConfig
from .models import layer_of

Tensors = Mapping[str, torch.Tensor]


def probe_steps(config: ProbeConfig, steps: int) -> list[int]:
    """Steps (0..steps) at which probes run; always includes 0 and ``steps``."""
    if config.schedule == "every":
        chosen = set(range(0, steps + 1, config.every))
    else:
        chosen = set(np.unique(np.round(np.geomspace(1, steps, config.points - 1))).astype(int))
        chosen.add(0)
    chosen.add(steps)
    return sorted(int(s) for s in chosen)


def _groups(names: list[str]) -> Iterator[tuple[str, str, list[str]]]:
    """Yield (layer, metric suffix, parameter names): the model, each layer, each tensor."""
    yield "model", "", names
    by_layer: dict[str, list[str]] = {}
    for name in names:
        by_layer.setdefault(layer_of(name), []).append(name)
    for layer, members in by_layer.items():
        yield layer, "", members
        for name in members:
            yield layer, "." + name.rsplit(".", 1)[1], [name]


def per_layer(fn: Callable[..., torch.Tensor], *tensor_dicts: Tensors) -> list[tuple[str, str, float]]:
    """Apply ``fn`` to flattened, concatenated tensors of each group.

    Args:
        fn: maps one flat vector per input dict (same length each) to a scalar tensor.
        tensor_dicts: dicts with the same parameter names, e.g. gradients and weights.

    Returns:
        ``(layer, suffix, value)`` triples; suffix is ``""`` for a layer or the model.
    """
    names = list(tensor_dicts[0])
    out = []
    for layer, suffix, members in _groups(names):
        flats = [torch.cat([d[n].detach().reshape(-1) for n in members]) for d in tensor_dicts]
        out.append((layer, suffix, float(fn(*flats))))
    return out


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.double())


def _ratio(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    return _norm(after - before) / _norm(before)


def _rotation(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    cos = torch.dot(current.double(), initial.double()) / (_norm(current) * _norm(initial))
    return 1.0 - cos


def _distance(current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    return _norm(current - initial)


def layer_gradient_norms(grads: Tensors) -> list[tuple[str, str, float]]:
    """‖g‖₂ per model / layer / tensor."""
    return per_layer(_norm, grads)


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
