"""Small models with named layers, so layer names reach tables and figure legends.

Parameter names look like ``fc1.weight``, ``norm1.bias``, ``conv2.weight``, ``out.weight``;
:mod:`analysis_lib.layers` maps a parameter name to its layer (``fc1``) and lists the layers in
forward order.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .rng import GLOBAL_RNG_LOCK

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _norm(kind: str, features: int, conv: bool) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm1d(features)
    if kind == "layer":
        # For conv features (N, C, L) GroupNorm with one group normalises over (C, L) per sample.
        return nn.GroupNorm(1, features) if conv else nn.LayerNorm(features)
    return None


class MLP(nn.Module):
    """``depth`` hidden layers ``fc1..fcD`` of ``width`` units, then ``out``.

    With ``residual``, hidden layers 2..D compute ``h + act(norm(fc(h)))``.
    """

    def __init__(self, n_features: int, n_classes: int, config: ModelConfig):
        super().__init__()
        self.depth, self.residual = config.depth, config.residual
        self.act = _ACTIVATIONS[config.activation]()
        for i in range(1, config.depth + 1):
            self.add_module(f"fc{i}", nn.Linear(n_features if i == 1 else config.width, config.width))
            norm = _norm(config.norm, config.width, conv=False)
            if norm is not None:
                self.add_module(f"norm{i}", norm)
        self.out = nn.Linear(config.width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N, C)
        """Logits (N, C) of inputs (N, F)."""
        h = x
        for i in range(1, self.depth + 1):
            z = getattr(self, f"fc{i}")(h)
            if hasattr(self, f"norm{i}"):
                z = getattr(self, f"norm{i}")(z)
            z = self.act(z)
            h = h + z if (self.residual and i > 1) else z
        return self.out(h)


class CNN1D(nn.Module):
    """``depth`` stride-2 convolutions ``conv1..convD`` with ``width`` channels, then ``out``."""

    def __init__(self, n_features: int, n_classes: int, config: ModelConfig):
        super().__init__()
        self.depth = config.depth
        self.act = _ACTIVATIONS[config.activation]()
        length, k = n_features, config.kernel_size
        for i in range(1, config.depth + 1):
            self.add_module(f"conv{i}", nn.Conv1d(1 if i == 1 else config.width, config.width, k,
                                                  stride=2, padding=k // 2))
            norm = _norm(config.norm, config.width, conv=True)
            if norm is not None:
                self.add_module(f"norm{i}", norm)
            length = (length + 2 * (k // 2) - k) // 2 + 1
        self.out = nn.Linear(config.width * length, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N, C)
        """Logits (N, C) of 1-D signals (N, F)."""
        h = x.unsqueeze(1)  # (N, 1, F)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"conv{i}")(h)
            if hasattr(self, f"norm{i}"):
                h = getattr(self, f"norm{i}")(h)
            h = self.act(h)  # (N, W, L_i)
        return self.out(h.flatten(1))


def build_model(config: ModelConfig, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """Construct the model with weights initialised from ``seed`` (global RNG left untouched).

    PyTorch's default initialisation, then every weight and bias of the linear and conv layers
    multiplied by ``config.init_scale`` (normalisation layers keep their unit gain and zero shift);
    at the default 1.0 nothing is multiplied, so the weights are bit-identical to the unscaled
    model's. Small scales are the small-initialisation regime of Min, Mallada & Vidal (2024),
    "Early Neuron Alignment in Two-layer ReLU Networks with Small Initialization".
    """
    cls = {"mlp": MLP, "cnn": CNN1D}[config.kind]
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(n_features, n_classes, config)
    if config.init_scale != 1.0:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv1d)):
                    for param in module.parameters(recurse=False):
                        param.mul_(config.init_scale)
    return model
