"""The Hessian (and Gauss–Newton matrix) of a loss over fixed data as a linear operator.

:class:`HessianOperator` maps flat float64 vectors ``v`` (one entry per parameter of the chosen
block) to ``H v``, where ``H`` is the Hessian of the mean loss ``loss_fn(model(inputs), targets)``
over a fixed dataset, taken in chunks of samples. It never touches the user's model: parameters
and buffers are detached copies passed through ``torch.func.functional_call``, so ``.grad``
fields, weights and BatchNorm running statistics stay as they were, and calling it twice gives
the same answer (PyHessian accumulates into ``.grad`` and silently doubles the Hessian on a
second construction).

Hessian-vector products use double backward through a cached gradient graph: the gradient of
each chunk is built once with ``create_graph=True``; every product is then one extra backward
pass (Pearlmutter 1994). BatchNorm layers are evaluated in eval mode unless ``train_mode=True``
(recorded in :attr:`HessianOperator.description`).

Data: ``(inputs, targets)``. ``inputs`` is a tensor, a tuple of tensors (passed as ``*inputs``)
or a dict (passed as ``**inputs``); ``targets`` a tensor or a tuple of tensors (e.g. token
targets and their mask), handed to ``loss_fn`` as they are. Every tensor's first axis is the
sample axis. The loss must be the mean of per-sample losses: a chunk of m of N samples then
weighs m / N, so the chunked operator is the Hessian of the loss of the whole data.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp, vjp

KINDS = ("hessian", "ggn")
LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def slice_samples(data: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a tensor, or of every tensor in a tuple / list / dict."""
    if isinstance(data, torch.Tensor):
        return data[start:stop]
    if isinstance(data, dict):
        return {k: slice_samples(v, start, stop) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(slice_samples(v, start, stop) for v in data)
    raise TypeError(f"data must be tensors, or tuples / dicts of tensors, not {type(data).__name__}")


def n_samples(data: Any) -> int:
    """Length of the sample axis of a tensor, or of the first tensor in a tuple / dict."""
    if isinstance(data, torch.Tensor):
        return len(data)
    values = list(data.values()) if isinstance(data, dict) else list(data)
    if not values:
        raise ValueError("data holds no tensor")
    return n_samples(values[0])


def call_model(model: nn.Module, state: dict, inputs: Any) -> torch.Tensor:
    """``model(inputs)`` with parameters and buffers from ``state`` (tuple: ``*inputs``, dict: ``**inputs``)."""
    if isinstance(inputs, dict):
        return functional_call(model, state, (), inputs)
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return functional_call(model, state, args)


class HessianOperator:
    """H (or the GGN G) of the mean loss over ``data`` with respect to a block of parameters.

    Args:
        model: any module; it is not modified.
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss of a batch, e.g.
            ``F.cross_entropy``.
        data: ``(inputs, targets)``; see the module docstring.
        params: parameter names forming the block (default: all); e.g. ``["fc1.weight", "fc1.bias"]``.
        chunk_size: samples per chunk (default: all at once); the loss is the mean over all N.
        kind: ``"hessian"`` or ``"ggn"`` (Gauss–Newton JᵀH_LJ, positive semi-definite; only for
            ``F.cross_entropy`` over (N, C) logits, whose output Hessian is known).
        train_mode: evaluate BatchNorm with batch statistics instead of running statistics.

    Attributes:
        dim: number of parameters in the block.
        n_matvecs: products computed so far (the cost measure of every estimator).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: tuple[Any, Any], *,
                 params: Sequence[str] | None = None, chunk_size: int | None = None,
                 kind: str = "hessian", train_mode: bool = False):
        if kind not in KINDS:
            raise ValueError(f"invalid argument kind={kind!r}: must be 'hessian' or 'ggn'")
        if kind == "ggn" and loss_fn is not F.cross_entropy:
            raise ValueError(f"invalid argument loss_fn={getattr(loss_fn, '__name__', loss_fn)!r} for "
                             "kind='ggn': the Gauss-Newton matrix needs the loss's Hessian in output space, "
                             "known here for F.cross_entropy only; use kind='hessian'")
        if not callable(loss_fn):
            raise ValueError(f"invalid argument loss_fn={loss_fn!r}: must be callable(outputs, targets)")
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("invalid argument data: must be an (inputs, targets) pair")
        named = dict(model.named_parameters())
        self.names = list(named) if params is None else list(params)
        unknown = [n for n in self.names if n not in named]
        if unknown or not self.names:
            raise ValueError(f"invalid argument params={params!r}: unknown names {unknown}; "
                             f"the model has {list(named)}")
        self.model, self.loss_fn, self.kind, self.train_mode = model, loss_fn, kind, train_mode
        self.inputs, self.targets = data
        self.n = n_samples(self.targets)
        self.chunk = chunk_size or self.n
        self.block = {n: named[n].detach().clone().requires_grad_(True) for n in self.names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.block}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.shapes = [self.block[n].shape for n in self.names]
        self.sizes = [self.block[n].numel() for n in self.names]
        self.dim = sum(self.sizes)
        self.dtype = next(iter(self.block.values())).dtype
        self.device = next(iter(self.block.values())).device
        self.n_matvecs = 0
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None

    @property
    def description(self) -> dict:
        """What this operator is, for storing beside its results."""
        return {"kind": self.kind, "params": self.names, "dim": self.dim, "n_samples": self.n,
                "batchnorm_mode": "train" if self.train_mode else "eval"}

    # -- plumbing -------------------------------------------------------------------------
    def _outputs(self, block: dict, inputs: Any) -> torch.Tensor:
        was_training = self.model.training
        self.model.train(self.train_mode)
        try:
            buffers = {n: b.clone() for n, b in self.buffers.items()}  # train-mode BN writes here
            return call_model(self.model, {**self.fixed, **block, **buffers}, inputs)
        finally:
            self.model.train(was_training)

    def _chunks(self):
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            yield (slice_samples(self.inputs, start, stop), slice_samples(self.targets, start, stop),
                   (stop - start) / self.n)

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors]).to(torch.float64)

    def _unflat(self, v: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(v.to(self.dtype), self.sizes)
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def _gradient_graphs(self) -> list[tuple[torch.Tensor, ...]]:
        """Per chunk, the gradient of its weighted loss with its graph kept for double backward.

        Built into a local list and kept only once complete: an interrupted or failing first
        product leaves no partial cache behind.
        """
        if self._graphs is None:
            params = [self.block[n] for n in self.names]
            graphs = []
            for inputs, targets, weight in self._chunks():
                loss = self.loss_fn(self._outputs(self.block, inputs), targets) * weight
                graphs.append(torch.autograd.grad(loss, params, create_graph=True))
            self._graphs = graphs
        return self._graphs

    # -- public ---------------------------------------------------------------------------
    def loss(self) -> float:
        """Mean loss over the data at the block's current values."""
        with torch.no_grad():
            return sum(self.loss_fn(self._outputs(self.block, inputs), targets).item() * w
                       for inputs, targets, w in self._chunks())

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
        for inputs, targets, weight in self._chunks():
            f = lambda *ps: self._outputs(dict(zip(self.names, ps)), inputs)  # noqa: E731
            logits, jv = jvp(f, primals, tangents)
            if logits.dim() != 2:
                raise ValueError(f"kind='ggn' needs (N, C) logits, got shape {tuple(logits.shape)}")
            p = torch.softmax(logits, dim=1)
            hjv = (p * jv - p * (p * jv).sum(dim=1, keepdim=True)) * (weight / len(targets))
            _, pullback = vjp(f, *primals)
            out += self._flat(pullback(hjv))
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for V of shape (dim, m), column by column."""
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def dense(self) -> torch.Tensor:
        """The full (dim, dim) matrix in float64 by ``dim`` products: exact mode for small blocks."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.device)
        H = self.matmat(eye)
        return (H + H.T) / 2  # symmetric up to round-off


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative residual tolerance the products can support: float32 round-off limits accuracy."""
    return 1e-8 if dtype == torch.float64 else 10 * math.sqrt(torch.finfo(dtype).eps)
