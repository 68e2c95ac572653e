"""Dense float64 references for losses other than plain classification, built independently of analysis_lib.

Nothing here imports ``analysis_lib`` (central differences come from :mod:`tests.reference`). The
reference concatenates every batch of ``data`` into one dataset itself (:func:`concatenate`),
flattens the chosen parameters itself (:func:`flat_parameters`), evaluates the model through
``torch.func.functional_call`` on a private copy and computes the loss of the concatenated data
with its own plain-torch losses (:func:`token_cross_entropy`, :func:`squared_error`,
:func:`weighted_squared_error`). It then differentiates twice:

- :func:`dense_hessian`: ``torch.autograd.functional.hessian`` of the flat loss, or, with
  ``method="fd"``, central differences of ``torch.autograd.grad`` gradients (for models whose
  double-backward Hessians are not trusted, e.g. LayerNorm on some torch versions);
- :func:`dense_ggn`: G = Jᵀ H_z J with J from ``torch.autograd.functional.jacobian`` of the
  flattened outputs and H_z the loss's Hessian in output space, either written out analytically
  (:func:`softmax_output_hessian`: (diag(p) − ppᵀ) / count per counted token;
  :func:`squared_error_output_hessian`: 2 / M · I) or by autograd (:func:`autograd_output_hessian`).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from tests.reference import central_difference_hessian

# -- data ---------------------------------------------------------------------------------------


def _cat(parts: list) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0)
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts], dim=0) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(torch.cat([p[i] for p in parts], dim=0) for i in range(len(first)))
    raise TypeError(f"cannot concatenate {type(first).__name__}")


def concatenate(data: Any) -> tuple[Any, Any]:
    """One ``(inputs, targets)`` pair of all batches of ``data`` (a pair or a list of pairs)."""
    pairs = [data] if isinstance(data, tuple) else list(data)
    return _cat([p[0] for p in pairs]), _cat([p[1] for p in pairs])


def run_model(model: nn.Module, state: dict, inputs: Any) -> torch.Tensor:
    """``model(inputs)`` with ``state`` (tensor: one argument, tuple: positional, dict: keywords)."""
    if isinstance(inputs, dict):
        return torch.func.functional_call(model, state, (), dict(inputs))
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    return torch.func.functional_call(model, state, args)


# -- losses of the concatenated data --------------------------------------------------------------


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Σ −log softmax(logits)[target] over counted targets / their number; class axis last."""
    counted = targets != ignore_index
    safe = torch.where(counted, targets, torch.zeros_like(targets))
    log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    nll = -torch.gather(log_p, -1, safe.unsqueeze(-1)).squeeze(-1)
    return (nll * counted.to(nll.dtype)).sum() / counted.sum()


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of (outputs − targets)² over every element (shapes must agree exactly)."""
    assert outputs.shape == targets.shape, (outputs.shape, targets.shape)
    return ((outputs - targets) ** 2).sum() / outputs.numel()


def weighted_squared_error(weights: torch.Tensor) -> Callable:
    """``(outputs (N, K), targets (N, K)) -> Σ w_k (o − t)² / (N K)``."""
    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert outputs.shape == targets.shape
        return (weights * (outputs - targets) ** 2).sum() / outputs.numel()
    return loss


# -- parameters -------------------------------------------------------------------------------------


def parameter_names(model: nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """The chosen names, or all parameters in registration order."""
    return [n for n, _ in model.named_parameters()] if names is None else list(names)


def flat_parameters(model: nn.Module, names: Sequence[str] | None = None) -> torch.Tensor:
    """The chosen parameters, flattened and concatenated in order, float64."""
    named = dict(model.named_parameters())
    return torch.cat([named[n].detach().reshape(-1) for n in parameter_names(model, names)]).to(torch.float64)


def parameter_slices(model: nn.Module) -> dict[str, slice]:
    """Each parameter's slice of the flat vector of all parameters."""
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = slice(start, start + p.numel())
        start += p.numel()
    return out


def layer_indices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Layer (the owner module of ``name.weight``) -> indices of its parameters in the flat vector."""
    slices = parameter_slices(model)
    groups: dict[str, list[int]] = {}
    for name, s in slices.items():
        groups.setdefault(name.rsplit(".", 1)[0], []).extend(range(s.start, s.stop))
    return {layer: torch.tensor(idx) for layer, idx in groups.items()}


def outputs_at(model: nn.Module, inputs: Any, names: Sequence[str] | None = None) -> Callable:
    """``flat -> model outputs`` with the chosen parameters replaced by ``flat`` (private eval-mode copy)."""
    clone = copy.deepcopy(model).eval()
    chosen = parameter_names(clone, names)
    named = {n: p.detach() for n, p in clone.named_parameters()}
    buffers = {n: b.detach() for n, b in clone.named_buffers()}
    shapes = [named[n].shape for n in chosen]
    sizes = [named[n].numel() for n in chosen]
    dtype = named[chosen[0]].dtype

    def outputs(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat.to(dtype), sizes)
        replaced = {n: part.reshape(shape) for n, part, shape in zip(chosen, parts, shapes)}
        return run_model(clone, {**named, **buffers, **replaced}, inputs)
    return outputs


def loss_at(model: nn.Module, loss: Callable, data: Any, names: Sequence[str] | None = None) -> Callable:
    """``flat -> loss of the concatenated data`` at the chosen parameters ``flat``."""
    inputs, targets = concatenate(data)
    outputs = outputs_at(model, inputs, names)
    return lambda flat: loss(outputs(flat), targets)


# -- derivatives ------------------------------------------------------------------------------------


def gradient(model: nn.Module, loss: Callable, data: Any, names: Sequence[str] | None = None) -> torch.Tensor:
    """Flat gradient of the loss of the concatenated data, float64."""
    flat = flat_parameters(model, names).requires_grad_(True)
    (g,) = torch.autograd.grad(loss_at(model, loss, data, names)(flat), flat)
    return g.detach()


def dense_hessian(model: nn.Module, loss: Callable, data: Any, names: Sequence[str] | None = None,
                  method: str = "autograd", step: float = 1e-5) -> torch.Tensor:
    """(dim, dim) Hessian of the loss of the concatenated data, by double autograd or central differences."""
    f = loss_at(model, loss, data, names)
    theta = flat_parameters(model, names)
    if method == "autograd":
        return torch.autograd.functional.hessian(f, theta).to(torch.float64)
    assert method == "fd", method
    return central_difference_hessian(f, theta, step)


def softmax_output_hessian(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """H_z of the token cross-entropy: block diagonal, (diag(p) − ppᵀ) / count per counted token, class axis last."""
    v = logits.shape[-1]
    p = torch.softmax(logits.detach().reshape(-1, v), dim=-1)
    counted = (targets.reshape(-1) != ignore_index)
    blocks = [(torch.diag(row) - torch.outer(row, row)) * float(keep) for row, keep in zip(p, counted)]
    return torch.block_diag(*blocks) / counted.sum()


def squared_error_output_hessian(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """H_z of the mean squared error over M elements: 2 / M · I."""
    m = outputs.numel()
    return 2.0 / m * torch.eye(m, dtype=torch.float64)


def autograd_output_hessian(loss: Callable) -> Callable:
    """``(outputs, targets) -> H_z`` of any loss by ``torch.autograd.functional.hessian`` in output space."""
    def hz(outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        shape = outputs.shape
        z = outputs.detach().reshape(-1)
        H = torch.autograd.functional.hessian(lambda flat: loss(flat.reshape(shape), targets), z)
        return H.to(torch.float64)
    return hz


def dense_ggn(model: nn.Module, output_hessian: Callable, data: Any,
              names: Sequence[str] | None = None) -> torch.Tensor:
    """G = Jᵀ H_z J over the concatenated data: J (M, dim) of the flattened outputs, H_z (M, M)."""
    inputs, targets = concatenate(data)
    outputs = outputs_at(model, inputs, names)
    theta = flat_parameters(model, names)
    J = torch.autograd.functional.jacobian(lambda flat: outputs(flat).reshape(-1), theta).to(torch.float64)
    Hz = output_hessian(outputs(theta).detach(), targets)
    G = J.T @ Hz @ J
    return (G + G.T) / 2
