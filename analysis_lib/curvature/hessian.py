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
(recorded in :attr:`HessianOperator.description`). Attention runs on PyTorch's math kernel of
``scaled_dot_product_attention`` (the fused CPU and GPU kernels have no second derivative), and an
operation without one is refused with a ``ValueError`` naming it.

Loss and data: ``loss_fn`` and ``data`` as :mod:`analysis_lib.training.problem` describes them
(any loss returning the mean over a batch; one ``(inputs, targets)`` tuple or an iterable of
them, tensor, tuple or dict inputs). Over several batches (and over chunks of ``chunk_size``
samples) the loss is the mean weighted by each batch's number of targets, so the operator is the
Hessian of the loss of the concatenated data.

``kind="ggn"`` is the Gauss–Newton matrix G = Jᵀ H_z J (J the Jacobian of the outputs, H_z the
loss's Hessian in output space), positive semi-definite for the losses convex in their outputs
whose output Hessian is known (cross-entropy with any class axis and ``ignore_index``, squared
error, or a loss supplying ``output_hessian_vector``); any other loss is refused.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import jvp, vjp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..training.problem import LossFn, as_batches, call_model, loss_spec, n_samples

KINDS = ("hessian", "ggn")


class HessianOperator:
    """H (or the GGN G) of the mean loss over ``data`` with respect to a block of parameters.

    Args:
        model: any module; it is not modified.
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss of a batch, e.g. ``F.mse_loss``.
        data: ``(inputs, targets)`` or an iterable of them; see the module docstring.
        params: parameter names forming the block (default: all); e.g. ``["fc1.weight", "fc1.bias"]``.
        chunk_size: at most this many samples per forward pass (default: each batch as given).
        kind: ``"hessian"`` or ``"ggn"`` (Gauss–Newton JᵀH_zJ; see the module docstring).
        train_mode: evaluate BatchNorm with batch statistics instead of running statistics.
        batch_size_fn: ``targets -> weight`` of a batch, overriding the loss's count of targets.

    Attributes:
        dim: number of parameters in the block.
        n_matvecs: products computed so far (the cost measure of every estimator).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, *,
                 params: Sequence[str] | None = None, chunk_size: int | None = None,
                 kind: str = "hessian", train_mode: bool = False,
                 batch_size_fn: Callable[[Any], int] | None = None):
        if kind not in KINDS:
            raise ValueError(f"invalid argument kind={kind!r}: must be 'hessian' or 'ggn'")
        self.spec = loss_spec(loss_fn)
        if kind == "ggn" and not self.spec.has_output_hessian:
            raise ValueError(f"invalid argument loss_fn={self.spec.name} for kind='ggn': the Gauss-Newton matrix "
                             "needs the loss's Hessian in output space, known here for cross-entropy and squared "
                             "error, or supplied by a loss with a method output_hessian_vector(outputs, targets, "
                             "v); use kind='hessian'")
        named = dict(model.named_parameters())
        self.names = list(named) if params is None else list(params)
        unknown = [n for n in self.names if n not in named]
        if unknown or not self.names:
            raise ValueError(f"invalid argument params={params!r}: unknown names {unknown}; "
                             f"the model has {list(named)}")
        self.batches = as_batches(data, self.spec, chunk_size=chunk_size, batch_size_fn=batch_size_fn)
        self.model, self.kind, self.train_mode = model, kind, train_mode
        self.n = sum(n_samples(b.targets) for b in self.batches)
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
        return {"kind": self.kind, "loss": self.spec.name, "params": self.names, "dim": self.dim,
                "n_samples": self.n, "n_batches": len(self.batches),
                "batchnorm_mode": "train" if self.train_mode else "eval"}

    # -- plumbing -------------------------------------------------------------------------
    def _outputs(self, block: dict, inputs: Any) -> torch.Tensor:
        was_training = self.model.training
        self.model.train(self.train_mode)
        try:
            buffers = {n: b.clone() for n, b in self.buffers.items()}  # train-mode BN writes here
            # Fused attention kernels (flash, memory-efficient) have no second derivative: the math
            # kernel computes the same attention and supports double backward and forward mode.
            with sdpa_kernel(SDPBackend.MATH):
                return call_model(self.model, inputs, {**self.fixed, **block, **buffers})
        finally:
            self.model.train(was_training)

    def _flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors]).to(torch.float64)

    def _unflat(self, v: torch.Tensor) -> list[torch.Tensor]:
        parts = torch.split(v.to(self.dtype), self.sizes)
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def _gradient_graphs(self) -> list[tuple[torch.Tensor | None, ...]]:
        """Per batch, the gradient of its weighted loss with its graph kept for double backward.

        None for a parameter the batch's forward pass does not use (its rows of H are 0). Built
        into a local list and kept only once complete: an interrupted or failing first product
        leaves no partial cache behind.
        """
        if self._graphs is None:
            params = [self.block[n] for n in self.names]
            graphs = []
            for b in self.batches:
                loss = self.spec(self._outputs(self.block, b.inputs), b.targets) * b.weight
                graphs.append(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True))
            self._graphs = graphs
        return self._graphs

    # -- public ---------------------------------------------------------------------------
    def loss(self) -> float:
        """Mean loss over the data at the block's current values."""
        with torch.no_grad():
            return sum(self.spec(self._outputs(self.block, b.inputs), b.targets).item() * b.weight
                       for b in self.batches)

    def gradient(self) -> torch.Tensor:
        """Flat float64 gradient of the mean loss, shape (dim,)."""
        return sum(self._flat([torch.zeros_like(p) if g is None else g.detach()
                               for g, p in zip(grads, self.block.values())]) for grads in self._gradient_graphs())

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` (or ``G v``) for a flat vector of shape (dim,), returned in float64."""
        if tuple(v.shape) != (self.dim,):
            raise ValueError(f"invalid argument v of shape {tuple(v.shape)}: must be ({self.dim},)")
        if self.kind == "ggn":
            out = self._ggn_matvec(v)
        else:
            params, vs = [self.block[n] for n in self.names], self._unflat(v)
            out = torch.zeros(self.dim, dtype=torch.float64, device=v.device)
            for grads in self._gradient_graphs():
                used = [i for i, g in enumerate(grads) if g is not None]
                if not used:  # the batch's loss does not depend on the block
                    continue
                dot = sum((grads[i] * vs[i]).sum() for i in used)
                hv = self._second_backward(dot, [params[i] for i in used], [self.names[i] for i in used])
                parts = [torch.zeros_like(p) for p in params]
                for i, h in zip(used, hv):
                    parts[i] = h
                out += self._flat(parts)
        self.n_matvecs += 1
        return out

    @staticmethod
    def _second_backward(dot: torch.Tensor, params: list, names: list[str]) -> tuple[torch.Tensor, ...]:
        """∂(gᵀv)/∂θ for the parameters the batch uses; a gradient cut off from them is refused.

        A parameter used in the forward pass whose gradient autograd cannot differentiate again
        (an operation marked once-differentiable, a custom backward, a detach) would otherwise
        give rows of zeros that look like a flat direction.
        """
        try:
            return _second_order(lambda: torch.autograd.grad(dot, params, retain_graph=True))
        except RuntimeError as err:
            if "does not require grad" not in str(err) and "not have been used" not in str(err):
                raise
            raise ValueError(f"invalid argument model: the gradient of {names} cannot be differentiated "
                             "again through autograd's graph (an operation without a second derivative, a "
                             "custom backward or a detach in the forward pass), or the loss is linear in "
                             "these parameters; its Hessian would be reported as 0") from err

    def _ggn_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """G v = Σ_b w_b J_bᵀ H_z(b) J_b v, H_z the loss's Hessian in output space."""
        primals, tangents = tuple(self.block[n].detach() for n in self.names), tuple(self._unflat(v))
        out = torch.zeros(self.dim, dtype=torch.float64, device=v.device)
        for b in self.batches:
            f = lambda *ps: self._outputs(dict(zip(self.names, ps)), b.inputs)  # noqa: E731
            outputs, jv = _second_order(lambda: jvp(f, primals, tangents))
            hjv = self.spec.output_hessian_vector(outputs.detach(), b.targets, jv) * b.weight
            _, pullback = vjp(f, *primals)
            out += self._flat(pullback(hjv.to(outputs.dtype)))
        return out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for V of shape (dim, m), column by column."""
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def dense(self) -> torch.Tensor:
        """The full (dim, dim) matrix in float64 by ``dim`` products: exact mode for small blocks."""
        eye = torch.eye(self.dim, dtype=torch.float64, device=self.device)
        H = self.matmat(eye)
        return (H + H.T) / 2  # symmetric up to round-off


def _second_order(compute: Callable):
    """Run a second-order autograd computation; an operation without one is refused by name."""
    try:
        return compute()
    except RuntimeError as err:
        if not any(s in str(err) for s in ("not implemented", "does not support", "differentiate twice")):
            raise
        raise ValueError(f"invalid argument model: an operation in its forward pass has no second derivative "
                         f"in PyTorch, so Hessian-vector products cannot be taken ({err}); use kind='ggn' where "
                         "the loss allows it, or replace the operation") from err


def default_tolerance(dtype: torch.dtype) -> float:
    """Relative residual tolerance the products can support: float32 round-off limits accuracy."""
    return 1e-8 if dtype == torch.float64 else 10 * math.sqrt(torch.finfo(dtype).eps)
