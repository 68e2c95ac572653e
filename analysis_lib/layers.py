"""Layer naming: how parameter and module names become the ``layer`` column of every table.

A *layer* is the module that owns a parameter: ``fc1.weight`` and ``fc1.bias`` form layer
``fc1``; ``blocks.0.attn.q.weight`` belongs to ``blocks.0.attn.q``. Layers are listed in
registration order, which is forward order for the models of this package. Whole-model rows use
``layer = "model"``.

Per-layer statistics are reported three ways (:func:`per_layer`): for the whole model, for each
layer (all its tensors as one vector), and for each tensor (the metric suffixed ``.weight`` /
``.bias``). Transformer matrices are also split into a block and a projection
(:func:`layer_and_projection`: ``blocks.2.attn.q`` -> ``("blocks.2", "q")``).
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

MODEL = "model"  # the layer label of whole-model rows
_BLOCK = re.compile(r"^(blocks\.\d+)\.(?:.*\.)?([^.]+)$")


def layer_of(param_name: str) -> str:
    """``"fc1.weight"`` -> ``"fc1"``; the layer a parameter belongs to."""
    return param_name.rsplit(".", 1)[0]


def layer_names(model: nn.Module) -> list[str]:
    """Layers that own parameters, in registration (= forward) order."""
    return list(layer_blocks(model))


def layer_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names grouped by layer (``{"fc1": ["fc1.weight", "fc1.bias"], ...}``)."""
    blocks: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        blocks.setdefault(layer_of(name), []).append(name)
    return blocks


def layer_sizes(model: nn.Module) -> dict[str, int]:
    """Layer -> its number of parameters, in ``named_parameters`` order (for slicing flat vectors)."""
    sizes: dict[str, int] = {}
    for name, p in model.named_parameters():
        sizes[layer_of(name)] = sizes.get(layer_of(name), 0) + p.numel()
    return sizes


def layer_and_projection(module_name: str) -> tuple[str, str]:
    """``"blocks.2.attn.q"`` -> ``("blocks.2", "q")``; any other module -> ``(name, "weight")``."""
    match = _BLOCK.match(module_name)
    return (match[1], match[2]) if match else (module_name, "weight")


def layer_groups(names: list[str]) -> Iterator[tuple[str, str, list[str]]]:
    """Yield ``(layer, metric suffix, parameter names)``: the model, each layer, each tensor."""
    yield MODEL, "", names
    by_layer: dict[str, list[str]] = {}
    for name in names:
        by_layer.setdefault(layer_of(name), []).append(name)
    for layer, members in by_layer.items():
        yield layer, "", members
        for name in members:
            yield layer, "." + name.rsplit(".", 1)[1], [name]


def per_layer(fn: Callable[..., torch.Tensor],
              *tensor_dicts: Mapping[str, torch.Tensor]) -> list[tuple[str, str, float]]:
    """Apply ``fn`` to the flattened, concatenated tensors of each group of :func:`layer_groups`.

    Args:
        fn: maps one flat vector per input dict (same length each) to a scalar tensor.
        tensor_dicts: dicts with the same parameter names, e.g. gradients and weights.

    Returns:
        ``(layer, suffix, value)`` triples; suffix is ``""`` for a layer or the model.
    """
    names = list(tensor_dicts[0])
    out = []
    for layer, suffix, members in layer_groups(names):
        flats = [torch.cat([d[n].detach().reshape(-1) for n in members]) for d in tensor_dicts]
        out.append((layer, suffix, float(fn(*flats))))
    return out
