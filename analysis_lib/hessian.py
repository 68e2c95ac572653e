"""The Hessian (and Gauss–Newton matrix) of the training loss as a linear operator.

:class:`HessianOperator` maps flat float64 vectors ``v`` (one entry per parameter of the chosen
block) to ``H v`` where ``H`` is the Hessian of the mean cross-entropy over a fixed dataset, taken
in chunks. It never touches the user's model: parameters and buffers are detached copies passed
through ``torch.func.functional_call``, so ``.grad`` fields, weights and BatchNorm running
statistics stay as they were, and calling it twice gives the same answer (PyHessian accumulates
into ``.grad`` and silently doubles the Hessian on a second construction).

Hessian-vector products use double backward through a cached gradient graph: the gradient of
each chunk is built once with ``create_graph=True``; every product is then one extra backward
pass (Pearlmutter 1994). BatchNorm layers are evaluated in eval mode unless ``train_mode=True``
(recorded in :attr:`HessianOperator.description`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp


class HessianOperator:
    """H (or the GGN G) of the mean loss over ``(x, y)`` with respect to a block of parameters.

    Args:
        model: any module; it is not modified.
        x, y: inputs (N, ...) and integer targets (N,).
        params: parameter names forming the block (default: all); e.g. ``["fc1.weight", "fc1.bias"]``.
        chunk_size: samples per chunk (default: all at once); the loss is the mean over all N.
        kind: ``"hessian"`` or ``"ggn"`` (Gauss–Newton: JᵀH_LJ, positive semi-definite).
        train_mode: evaluate BatchNorm with batch statistics instead of running statistics.

    Attributes:
        dim: number of parameters in the block.
        n_matvecs: products computed so far (the cost measure of every estimator).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 params: Sequence[str] | None = None, chunk_size: int | None = None,
                 kind: str = "hessian", train_mode: bool = False):
        if kind not in ("hessian", "ggn"):
            raise ValueError(f"invalid argument kind={kind!r}: must be 'hessian' or 'ggn'")
        named = dict(model.named_parameters())
        self.names = list(named) if params is None else list(params)
        unknown = [n for n in self.names if n not in named]
        if unknown or not self.names:
            raise ValueError(f"invalid argument params={params!r}: unknown names {unknown}; "
                             f"the model has {list(named)}")
        self.model, self.kind, self.train_mode = model, kind, train_mode
        self.x, self.y = x, y
        self.chunk = chunk_size or len(y)
        self.block = {n: named[n].detach().clone().requires_grad_(True) for n in self.names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.block}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.shapes = [self.block[n].shape for n in self.names]
        self.sizes = [self.block[n].numel() for n in self.names]
        self.dim = sum(self.sizes)
        self.dtype = next(iter(self.block.values())).dtype
        self.n_matvecs = 0
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None

    @property
    def description(self) -> dict:
        """What this operator is, for storing beside its results."""
        return {"kind": self.kind, "params": self.names, "dim": self.dim, "n_samples": len(self.y),
                "batchnorm_mode": "train" if self.train_mode else "eval"}

    # -- plumbing -------------------------------------------------------------------------
    def _logits(self, block: dict, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.train(self.train_mode)
        try:
            buffers = {n: b.clone() for n, b in self.buffers.items()}  # train-mode BN writes here
            return functional_call(self.model, {**self.fixed, **block, **buffers}, (x,))
        finally:
            self.model.train(was_training)

    def _chunks(self):
        n = len(self.y)
        for start in range(0, n, self.chunk):
            stop = min(start + self.chunk, n)
            yield self.x[start:stop], self.y[start:stop], (stop - start) / n

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors]).to(torch.float64)

    def _unflat(self, v: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(v.to(self.dtype), self.sizes)
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def _gradient_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        """Per chunk, the gradient of its weighted loss with its graph kept for double backward."""
        if self._graphs is None:
            params = [self.block[n] for n in self.names]
            self._graphs = []
            for x, y, weight in self._chunks():
                loss = F.cross_entropy(self._logits(self.block, x), y) * weight
                self._graphs.append(torch.autograd.grad(loss, params, create_graph=True))
        return self._graphs

    # -- public ---------------------------------------------------------------------------
    def loss(self) -> float:
        """Mean cross-entropy over the dataset at the block's current values."""
        with torch.no_grad():
            return sum(F.cross_entropy(self._logits(self.block, x), y).item() * w
                       for x, y, w in self._chunks())

    def gradient(self) -> torch.Tensor:
        """Flat float64 gradient of the mean loss, shape (dim,)."""
        return sum(self._flat([g.detach() for g in grads]) for grads in self._gradient_graphs())

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` (or ``G v``) for a flat vector of shape (dim,), returned in float64."""
        self.n_matvecs += 1
        if self.kind == "ggn":
            return self._ggn_matvec(v)
        params, vs = [self.block[n] for n in self.names], self._unflat(v)
        out = torch.zeros(self.dim, dtype=torch.float64, device=v.device)
        for grads in self._gradient_graphs():
            dot = sum((g * u).sum() for g, u in zip(grads, vs))
            out += self._flat(torch.autograd.grad(dot, params, retain_graph=True))
        return out

    def _ggn_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """G v = Jᵀ H_L J v, with H_L = (diag(p) − p pᵀ)/N the cross-entropy Hessian in logit space."""
        primals, tangents = tuple(self.block[n].detach() for n in self.names), tuple(self._unflat(v))
        out = torch.zeros(self.dim, dtype=torch.float64, device=v.device)
        for x, y, weight in self._chunks():
            f = lambda *ps: self._logits(dict(zip(self.names, ps)), x)  # noqa: E731
            logits, jv = jvp(f, primals, tangents)
            p = torch.softmax(logits, dim=1)
            hjv = (p * jv - p * (p * jv).sum(dim=1, keepdim=True)) * (weight / len(y))
            _, pullback = vjp(f, *primals)
            out += self._flat(pullback(hjv))
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for V of shape (dim, m), column by column."""
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def dense(self) -> torch.Tensor:
        """The full (dim, dim) matrix in float64 by ``dim`` products: exact mode for small blocks."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.x.device)
        H = self.matmat(eye)
        return (H + H.T) / 2  # symmetric up to round-off


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  params: Sequence[str] | None = None) -> torch.Tensor:
    """Reference Hessian by ``torch.func.hessian`` of the flattened loss (tests and tiny nets)."""
    op = HessianOperator(model, x, y, params=params)

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        block = dict(zip(op.names, op._unflat(flat)))
        return F.cross_entropy(op._logits(block, x), y)

    flat = op._flat([op.block[n].detach() for n in op.names]).to(op.dtype)
    return torch.func.hessian(loss_of)(flat).to(torch.float64)


_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.Identity)


def hessian_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Exact diagonal of the Hessian of the mean cross-entropy, per parameter, or None when the
    model is outside the class this holds for (callers then fall back to Hutch++).

    Holds for models whose parameters all sit in ``nn.Linear`` layers joined by piecewise-linear
    activations (ReLU MLPs, with or without residual connections; no normalisation layers). Each
    logit is then piecewise linear in any single weight, so diag(H) = diag(G) with G the
    Gauss-Newton matrix, and diag(G) = Σ_n Σ_c (J_nᵀ s_{n,c})² / N with H_L = S Sᵀ,
    S = diag(√p) − p √pᵀ. For a Linear layer J_nᵀ s is the outer product of the back-propagated
    signal δ_{n,c} and the layer input a_n, so its square sums to (δ²)ᵀ(a²): C backward passes and
    no per-sample gradients (BackPACK's DiagGGN; Dangel, Kunstner & Hennig, ICLR 2020). Forward
    hooks are removed before returning; weights, ``.grad`` and modes are not touched.

    Returns:
        ``{name: tensor shaped like the parameter}`` in the model's dtype.
    """
    leaves = [m for m in model.modules() if not list(m.children())]
    if any(not isinstance(m, (nn.Linear, *_PIECEWISE_LINEAR)) for m in leaves):
        return None
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    inputs, outputs = {}, {}

    def keep(name):
        def hook(module, args, out):
            inputs[name], outputs[name] = args[0].detach(), out
        return hook
    handles = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    p = torch.softmax(logits.detach(), dim=1)  # (N, C)
    sqrt_p, (n, c) = p.sqrt(), p.shape
    diag = {f"{name}.{k}": torch.zeros_like(getattr(m, k)) for name, m in linears.items()
            for k in ("weight", "bias") if getattr(m, k) is not None}
    outs = [outputs[name] for name in linears]
    for cls in range(c):
        s = -p * sqrt_p[:, cls : cls + 1]  # column cls of S for every sample, (N, C)
        s[:, cls] += sqrt_p[:, cls]
        deltas = torch.autograd.grad(logits, outs, grad_outputs=s / math.sqrt(n), retain_graph=True)
        for (name, m), d in zip(linears.items(), deltas):  # d: (N, out)
            diag[f"{name}.weight"] += (d**2).T @ (inputs[name] ** 2)
            if m.bias is not None:
                diag[f"{name}.bias"] += (d**2).sum(0)
    return diag


def layer_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names grouped by layer (``{"fc1": ["fc1.weight", "fc1.bias"], ...}``)."""
    from .models import layer_of

    blocks: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        blocks.setdefault(layer_of(name), []).append(name)
    return blocks


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative residual tolerance the products can support: float32 round-off limits accuracy."""
    return 1e-8 if dtype == torch.float64 else 10 * math.sqrt(torch.finfo(dtype).eps)
