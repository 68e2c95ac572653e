"""Low-rank additive adapters (LoRA) on chosen linear layers, the rest of the model frozen.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021) replaces a frozen
linear map W x by

    W x + (α / r) B A x,        A ∈ R^{r × d_in},  B ∈ R^{d_out × r},

and trains only A and B. B starts at zero, so the adapted model computes exactly what the
original one did until the first update; A starts Gaussian, N(0, 1/d_in), drawn from its own
seeded generator (the global RNG is left alone). The effective weight is W + (α/r) B A
(:meth:`LoRALinear.effective_weight`); :func:`merge_adapters` writes it back into plain
``nn.Linear`` layers, so the model's state dict has its original keys again.

:func:`attach_adapters` works on any ``nn.Module`` whose chosen modules are ``nn.Linear`` s,
named as in ``model.named_modules()``; :func:`transformer_linear_names` names the projections of
chosen blocks of :class:`analysis_lib.lm.transformer.TinyTransformer`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..validation import check_int, check_number, fail
from .transformer import _PATHS, PROJECTIONS


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) · B A x`` with ``base`` frozen; only ``A`` and ``B`` train.

    Args:
        base: the ``nn.Linear`` to adapt (its bias, if any, stays frozen and is kept).
        rank: r >= 1, at most min(d_in, d_out).
        alpha: α > 0, the scale numerator (α = r gives scale 1, the default).
        seed: seed of A's initialisation.

    Raises:
        ConfigError: rank < 1 or above min(d_in, d_out), alpha <= 0, or ``base`` not an ``nn.Linear``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, seed: int = 0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            fail("base", type(base).__name__, "must be an nn.Linear")
        check_int("rank", rank, 1)
        d_out, d_in = base.weight.shape
        if rank > min(d_in, d_out):
            fail("rank", rank, f"must be <= min(d_in, d_out) = {min(d_in, d_out)} for a {d_out}×{d_in} layer")
        alpha = float(rank) if alpha is None else alpha
        check_number("alpha", alpha, positive=True)
        self.base, self.rank, self.alpha, self.scale = base, rank, float(alpha), float(alpha) / rank
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        g = torch.Generator(device="cpu").manual_seed(seed)
        a = torch.randn(rank, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
        self.A = nn.Parameter(a.to(dtype=w.dtype, device=w.device))  # (r, d_in)
        self.B = nn.Parameter(torch.zeros(d_out, rank, dtype=w.dtype, device=w.device))  # (d_out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d_in) -> (..., d_out)
        """W x (+ bias) + (α/r) B A x."""
        return self.base(x) + self.scale * ((x @ self.A.T) @ self.B.T)

    def effective_weight(self) -> torch.Tensor:
        """W + (α/r) B A, shape (d_out, d_in)."""
        return self.base.weight + self.scale * (self.B @ self.A)


def transformer_linear_names(n_layers: int, layers: Sequence[int],
                             projections: Sequence[str] = PROJECTIONS) -> list[str]:
    """Module names of the chosen projections of the chosen blocks of the tiny transformer.

    Args:
        n_layers: the model's number of blocks.
        layers: block indices in [0, n_layers), e.g. ``[1, 2]``.
        projections: a non-empty subset of :data:`~analysis_lib.lm.transformer.PROJECTIONS`.

    Returns:
        E.g. ``["blocks.1.attn.q", ..., "blocks.2.mlp.down"]``, in block then projection order.

    Raises:
        ConfigError: an index out of range or repeated, or an unknown projection.
    """
    check_int("n_layers", n_layers, 1)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        fail("layers", layers, f"must be a non-empty list of block indices in [0, {n_layers})")
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers:
            fail("layers", list(layers), f"{i!r} is not a block index in [0, {n_layers})")
    if len(set(layers)) != len(layers):
        fail("layers", list(layers), "indices must be distinct")
    if isinstance(projections, str) or not projections or any(p not in PROJECTIONS for p in projections):
        fail("projections", projections, f"must be a non-empty list drawn from {list(PROJECTIONS)}")
    return [f"blocks.{i}.{_PATHS[p]}" for i in layers for p in projections]


def attach_adapters(model: nn.Module, names: Sequence[str], rank: int, alpha: float | None = None,
                    seed: int = 0) -> dict[str, LoRALinear]:
    """Freeze every parameter of ``model`` and wrap the named ``nn.Linear`` modules in :class:`LoRALinear`.

    The model is changed in place; its output is unchanged (B = 0) and afterwards only the
    adapters' A and B have ``requires_grad``. Everything is checked before anything changes.

    Args:
        model: any module.
        names: distinct module names from ``model.named_modules()``, each an ``nn.Linear``.
        rank, alpha: of every adapter (see :class:`LoRALinear`).
        seed: adapter k (in the order of ``names``) initialises A from ``seed + k``.

    Returns:
        ``{name: adapter}`` in the order of ``names``.

    Raises:
        ConfigError: an empty or repeated name list, a name that is not a module of ``model`` (the
            message lists the linear ones), a module that is not an ``nn.Linear`` (or is already
            adapted), or a bad rank or alpha.
    """
    modules = dict(model.named_modules())
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear) and not n.endswith(".base")]
    if isinstance(names, str) or not names:
        fail("names", names, f"must be a non-empty list of module names; linear modules: {linear}")
    if len(set(names)) != len(names):
        fail("names", list(names), "names must be distinct")
    for name in names:
        if name not in modules:
            fail("names", name, f"not a module of the model; linear modules: {linear}")
        if not isinstance(modules[name], nn.Linear) or name.endswith(".base"):
            fail("names", name, f"is a {type(modules[name]).__name__}, not an nn.Linear that can be adapted")
    check_int("rank", rank, 1)
    for name in names:  # rank and alpha checked for every layer before any is replaced
        d_out, d_in = modules[name].weight.shape
        if rank > min(d_in, d_out):
            fail("rank", rank, f"must be <= min(d_in, d_out) = {min(d_in, d_out)} for {name} ({d_out}×{d_in})")
    if alpha is not None:
        check_number("alpha", alpha, positive=True)
    for p in model.parameters():
        p.requires_grad_(False)
    out = {}
    for k, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        adapter = LoRALinear(modules[name], rank, alpha, seed + k)
        setattr(parent, child, adapter)
        out[name] = adapter
    return out


@torch.no_grad()
def merge_adapters(model: nn.Module) -> list[str]:
    """Replace every :class:`LoRALinear` in ``model`` by an ``nn.Linear`` holding W + (α/r) B A.

    The merged layers' parameters have ``requires_grad`` True again (the other parameters keep
    theirs), and the state dict has the keys of the model before :func:`attach_adapters`.

    Returns:
        The names of the merged modules.
    """
    merged = []
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            base = module.base
            base.weight.copy_(module.effective_weight())
            for p in base.parameters():
                p.requires_grad_(True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
            merged.append(name)
    return merged
