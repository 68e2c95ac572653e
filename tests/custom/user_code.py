"""A researcher's own code, as they would write it: model and data factories, nothing from analysis_lib."""

from __future__ import annotations

import torch
from torch import nn


def mlp(width: int = 16, n_in: int = 4, n_out: int = 1, activation: str = "tanh") -> nn.Module:
    act = {"tanh": nn.Tanh(), "relu": nn.ReLU()}[activation]
    return nn.Sequential(nn.Linear(n_in, width), act, nn.Linear(width, n_out))


def teacher(n_train: int = 48, n_test: int = 16, n_in: int = 4, n_out: int = 1, seed: int = 0) -> dict:
    """Targets of a fixed random tanh teacher plus noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, n_in, generator=gen)
    w = torch.randn(n_in, n_out, generator=gen)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n_train + n_test, n_out, generator=gen)
    return {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}


class TinyLM(nn.Module):
    """Embedding, LayerNorm, a linear read-out; ``forward(tokens, mask)`` zeroes padded positions."""

    def __init__(self, vocab: int = 6, dim: int = 8):
        super().__init__()
        self.embed, self.norm, self.head = nn.Embedding(vocab, dim), nn.LayerNorm(dim), nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.head(self.norm(self.embed(tokens)) * mask[..., None])


def tiny_lm(vocab: int = 6, dim: int = 8) -> nn.Module:
    return TinyLM(vocab, dim)


def copy_task(n: int = 40, length: int = 6, vocab: int = 6, seed: int = 0) -> dict:
    """Predict the previous token; the first position and padding are ignored (-100)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, length), generator=gen)
    lengths = torch.randint(2, length + 1, (n,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    targets = torch.full_like(tokens, -100)
    targets[:, 1:] = tokens[:, :-1]
    targets[mask == 0] = -100
    split = n * 3 // 4
    inputs = {"tokens": tokens, "mask": mask}
    part = lambda s: ({k: v[s] for k, v in inputs.items()}, targets[s])  # noqa: E731
    return {"train": part(slice(0, split)), "test": part(slice(split, n))}


def not_a_module(width: int = 3):
    return [width]
