"""The exact Hessian diagonal of ReLU MLPs under cross-entropy, without Hessian-vector products."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.Identity)


def hessian_diagonal(model: nn.Module, loss_fn, data) -> dict[str, torch.Tensor] | None:
    """Exact diagonal of the Hessian of the mean cross-entropy, per parameter, or None.

    None when the model or loss is outside the class this holds for (callers then fall back to
    Hutch++): ``loss_fn`` must be ``F.cross_entropy`` on (N, C) logits of a tensor input, and
    every parameter must sit in an ``nn.Linear`` layer joined by piecewise-linear activations
    (ReLU MLPs, with or without residual connections; no normalisation layers). Each logit is
    then piecewise linear in any single weight, so diag(H) = diag(G) with G the Gauss-Newton
    matrix, and diag(G) = Σ_n Σ_c (J_nᵀ s_{n,c})² / N with H_L = S Sᵀ, S = diag(√p) − p √pᵀ. For a
    Linear layer J_nᵀ s is the outer product of the back-propagated signal δ_{n,c} and the layer
    input a_n, so its square sums to (δ²)ᵀ(a²): C backward passes and no per-sample gradients
    (BackPACK's DiagGGN; Dangel, Kunstner & Hennig, ICLR 2020). Forward hooks are removed before
    returning; weights, ``.grad`` and modes are not touched.

    Args:
        model: the network. loss_fn: the loss (see above). data: ``(x, y)``, x (N, F), y (N,).

    Returns:
        ``{name: tensor shaped like the parameter}`` in the model's dtype, or None.
    """
    x, y = data
    if loss_fn is not F.cross_entropy or not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        return None
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
    if logits.dim() != 2:
        return None
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
