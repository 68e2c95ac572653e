"""Slow, obvious references for curvature tests, built independently of the code under test.

:func:`dense_hessian` shares nothing with :class:`analysis_lib.curvature.hessian.HessianOperator`:
it flattens the parameters itself, writes them into a private copy of the model, evaluates the
loss the caller passes (tests pass their own, e.g. :func:`tests.cases.cross_entropy`) and
differentiates twice with ``torch.autograd.functional.hessian``. For models with LayerNorm, whose
second derivatives ``torch.func.hessian`` gets wrong on torch 2.13, :func:`fd_hessian` takes
central finite differences of autograd gradients instead (accurate to about 1e-6 in float64).
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def _copy_with(model: nn.Module, names: Sequence[str]):
    """A private eval-mode copy of ``model`` and a function that loads a flat vector into ``names``."""
    clone = copy.deepcopy(model).eval()
    params = dict(clone.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def loader(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: part.reshape(s) for n, part, s in zip(names, torch.split(flat, sizes), shapes)}
    return clone, params, loader


def _names(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    return [n for n, _ in model.named_parameters()] if params is None else list(params)


def flat_params(model: nn.Module, params: Sequence[str] | None = None) -> torch.Tensor:
    """The chosen parameters flattened in the given (default ``named_parameters``) order, float64."""
    named = dict(model.named_parameters())
    return torch.cat([named[n].detach().reshape(-1) for n in _names(model, params)]).double()


def loss_at(model: nn.Module, loss_fn: Callable, inputs, targets, params: Sequence[str] | None = None):
    """``loss(flat) -> scalar``: the loss with the chosen parameters replaced by ``flat`` (eval mode)."""
    names = _names(model, params)
    clone, named, loader = _copy_with(model, names)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        replaced = loader(flat.to(named[names[0]].dtype))
        state = {**{k: v.detach() for k, v in named.items()}, **replaced,
                 **{k: b.detach() for k, b in clone.named_buffers()}}
        outputs = torch.func.functional_call(clone, state, (inputs,))
        return loss_fn(outputs, targets)
    return loss


def dense_hessian(model: nn.Module, loss_fn: Callable, inputs, targets,
                  params: Sequence[str] | None = None) -> torch.Tensor:
    """The (dim, dim) Hessian of ``loss_fn(model(inputs), targets)`` by double autograd, float64."""
    loss = loss_at(model, loss_fn, inputs, targets, params)
    H = torch.autograd.functional.hessian(loss, flat_params(model, params).to(next(model.parameters()).dtype))
    return H.to(torch.float64)


def fd_hessian(model: nn.Module, loss_fn: Callable, inputs, targets, params: Sequence[str] | None = None,
               step: float = 1e-5) -> torch.Tensor:
    """The Hessian by central differences of autograd gradients (for LayerNorm models), float64."""
    loss = loss_at(model, loss_fn, inputs, targets, params)
    return central_difference_hessian(loss, flat_params(model, params), step)


def central_difference_hessian(loss: Callable, theta: torch.Tensor, step: float = 1e-5) -> torch.Tensor:
    """(dim, dim) Hessian of ``loss(flat)`` at ``theta`` by central differences of its autograd gradient."""
    def grad(flat: torch.Tensor) -> torch.Tensor:
        flat = flat.clone().requires_grad_(True)
        return torch.autograd.grad(loss(flat), flat)[0]

    columns = []
    for i in range(len(theta)):
        e = torch.zeros_like(theta)
        e[i] = step
        columns.append((grad(theta + e) - grad(theta - e)) / (2 * step))
    H = torch.stack(columns, dim=1)
    return (H + H.T) / 2


def loss_and_accuracy_at(model: nn.Module, point: torch.Tensor, x, y) -> tuple[float, float]:
    """Loss and accuracy at one flat point: one functional_call in eval mode, no batching."""
    ref = copy.deepcopy(model).eval()
    params = dict(zip([n for n, _ in ref.named_parameters()],
                      torch.split(point, [p.numel() for p in ref.parameters()])))
    params = {n: v.reshape(dict(ref.named_parameters())[n].shape) for n, v in params.items()}
    with torch.no_grad():
        logits = functional_call(ref, {**params, **dict(ref.named_buffers())}, (x,))
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item()
