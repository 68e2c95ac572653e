"""Your own model, data and loss: the code study 00 registers, kept out of the notebook.

Nothing here imports analysis_lib. A factory takes keyword arguments with plain default values
(they become the run config's parameters and part of each run's id) and returns an
``nn.Module`` (models) or a dict of ``(inputs, targets)`` splits (datasets). Replace these with
your own and register them under new names and versions (see the notebook and the README).
"""

from __future__ import annotations

import torch
from torch import nn


class Student(nn.Module):
    """An MLP ``fc1 .. fc<depth>`` of ``width`` units with a smooth activation, then ``out``."""

    def __init__(self, n_in: int, width: int, depth: int, n_out: int, activation: str):
        super().__init__()
        self.act = {"tanh": nn.Tanh(), "gelu": nn.GELU(), "relu": nn.ReLU()}[activation]
        self.layers = nn.ModuleList()
        for i in range(depth):
            self.add_module(f"fc{i + 1}", nn.Linear(n_in if i == 0 else width, width))
        self.depth = depth
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, n_in) -> (N, n_out)
        for i in range(self.depth):
            x = self.act(getattr(self, f"fc{i + 1}")(x))
        return self.out(x)


def student(n_in: int = 10, width: int = 64, depth: int = 2, n_out: int = 1, activation: str = "tanh") -> nn.Module:
    """The regression network trained in study 00."""
    return Student(n_in, width, depth, n_out, activation)


def teacher_student(n_train: int = 256, n_test: int = 512, n_in: int = 10, n_out: int = 1, teacher_width: int = 32,
                    noise: float = 0.1, seed: int = 0) -> dict:
    """Gaussian inputs, targets from a fixed random tanh teacher plus noise, standardised by the training split."""
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    x = torch.randn(n, n_in, generator=gen)
    w1 = torch.randn(n_in, teacher_width, generator=gen) / n_in**0.5
    w2 = torch.randn(teacher_width, n_out, generator=gen) / teacher_width**0.5
    y = torch.tanh(x @ w1) @ w2
    y = y + noise * y.std() * torch.randn(n, n_out, generator=gen)
    y = (y - y[:n_train].mean(0)) / y[:n_train].std(0)
    return {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], y[n_train:])}


class TinyLM(nn.Module):
    """Token and position embeddings, one causal self-attention layer, a LayerNorm and a read-out.

    ``forward(tokens, mask)``: tokens (B, T) int64, mask (B, T) float (1 on real tokens, 0 on
    padding, which attention ignores) -> logits (B, T, vocab).
    """

    def __init__(self, vocab: int, dim: int, length: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(length, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        h = self.embed(tokens) + self.position(torch.arange(t, device=tokens.device))
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), diagonal=1)
        a, _ = self.attn(h, h, h, attn_mask=causal, key_padding_mask=mask == 0, need_weights=False)
        return self.head(self.norm(h + a))


def tiny_lm(vocab: int = 8, dim: int = 16, length: int = 8, heads: int = 2) -> nn.Module:
    """The token-level language model of study 00."""
    return TinyLM(vocab, dim, length, heads)


def previous_token(n_train: int = 256, n_test: int = 256, length: int = 8, vocab: int = 8, seed: int = 0) -> dict:
    """Sequences of random tokens of random length; predict the previous token.

    Inputs are ``{"tokens", "mask"}`` (the model is called as ``model(**inputs)``); the target of
    the first position and of padding is -100, which the token-level cross-entropy ignores.
    """
    gen = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    tokens = torch.randint(0, vocab, (n, length), generator=gen)
    lengths = torch.randint(2, length + 1, (n,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    targets = torch.full_like(tokens, -100)
    targets[:, 1:] = tokens[:, :-1]
    targets[mask == 0] = -100
    tokens = torch.where(mask == 1, tokens, torch.zeros_like(tokens))

    def part(rows: slice) -> tuple[dict, torch.Tensor]:
        return {"tokens": tokens[rows], "mask": mask[rows]}, targets[rows]
    return {"train": part(slice(0, n_train)), "test": part(slice(n_train, n))}
