"""Directions in parameter space for loss landscapes: random (normalised), Hessian, trajectory PCA.

Every direction is a flat vector (P,) in ``named_parameters`` order, the layout
:func:`analysis_lib.landscape.evaluate.evaluate_params` takes, in the model's dtype.

**Random directions** are Gaussian, d ~ N(0, I), drawn from their own ``torch.Generator`` seeded
with ``seed`` (in float64, then cast, so a seed gives the same direction in float32 and float64),
then rescaled by a *normalisation* so that a step α d means the same relative change at every
scale of the weights (Li et al. 2018, §4):

- ``"filter"``: each filter is rescaled to the norm of the same filter of θ,
  d_f ← d_f ‖θ_f‖ / ‖d_f‖. A filter is one row of a Linear weight (out, in) or one output
  channel of a Conv weight (out, in, k): index 0 of any tensor with two or more dimensions.
- ``"layer"``: each layer's tensors together (:func:`analysis_lib.layers.layer_of`: ``fc1.weight`` and
  ``fc1.bias`` form ``fc1``), d_l ← d_l ‖θ_l‖ / ‖d_l‖.
- ``"model"``: the whole vector, d ← d ‖θ‖ / ‖d‖.
- ``"none"``: the raw Gaussian.

**Biases and normalisation parameters** (every tensor with fewer than two dimensions) follow
``bias``: ``"zero"`` (default, Li et al.'s ``ignore='biasbn'``) sets their entries to 0 under
every normalisation, so the surface moves weights only; ``"include"`` keeps them, and under
``"filter"`` normalises each such tensor as one filter, d_b ← d_b ‖θ_b‖ / ‖d_b‖ (the rule of
loss-landscapes; Li et al.'s code instead copies θ_b itself).

Filter normalisation makes a direction invariant to rescaling: for a ReLU network whose layer l
is multiplied by c > 0 and layer l+1 by 1/c (the same function), the filter-normalised surface
is the same, while an unnormalised one is stretched (Dinh et al. 2017; tests check it).

References: Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018; Dinh, Pascanu, Bengio & Bengio, "Sharp Minima Can Generalize For Deep Nets", 2017.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..curvature.hessian import HessianOperator
from ..curvature.lanczos import top_eigenpairs
from ..layers import layer_of
from ..trajectories.pca import principal_directions

NORMALIZATIONS = ("filter", "layer", "model", "none")
BIAS_RULES = ("zero", "include")


def _check(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"invalid argument {name}={value!r}: must be one of {allowed}")


def _rescaled(d: torch.Tensor, theta: torch.Tensor, dims: tuple[int, ...] | None) -> torch.Tensor:
    """``d`` scaled so its norm over ``dims`` (all when None) equals θ's; 0 where d is 0."""
    d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
    t_norm = torch.linalg.vector_norm(theta, dim=dims, keepdim=True)
    return d * torch.where(d_norm > 0, t_norm / d_norm, torch.zeros_like(d_norm))


def normalize_direction(direction: dict[str, torch.Tensor], params: dict[str, torch.Tensor], *,
                        normalization: str = "filter", bias: str = "zero") -> dict[str, torch.Tensor]:
    """Rescale a direction given per tensor, as the module docstring describes.

    Args:
        direction: ``{name: tensor}`` shaped like ``params``.
        params: θ, e.g. ``dict(model.named_parameters())``.
        normalization: one of :data:`NORMALIZATIONS`. bias: one of :data:`BIAS_RULES`.

    Returns:
        A new dict of float64 tensors (inputs are not modified).
    """
    _check("normalization", normalization, NORMALIZATIONS)
    _check("bias", bias, BIAS_RULES)
    d = {n: v.detach().to(torch.float64).clone() for n, v in direction.items()}
    theta = {n: params[n].detach().to(torch.float64) for n in d}
    if bias == "zero":
        for n in d:
            if d[n].dim() < 2:
                d[n].zero_()
    if normalization == "filter":
        for n in d:
            rows = tuple(range(1, d[n].dim())) if d[n].dim() >= 2 else None  # filter = index 0
            d[n] = _rescaled(d[n], theta[n], rows)
    elif normalization in ("layer", "model"):
        groups: dict[str, list[str]] = {}
        for n in d:
            groups.setdefault(layer_of(n) if normalization == "layer" else "model", []).append(n)
        for names in groups.values():
            flat_d = torch.cat([d[n].reshape(-1) for n in names])
            scale = _rescaled(flat_d, torch.cat([theta[n].reshape(-1) for n in names]), None)
            for n, part in zip(names, torch.split(scale, [d[n].numel() for n in names])):
                d[n] = part.reshape(d[n].shape)
    return d


def random_directions(model: nn.Module, seed: int, k: int = 1, *, normalization: str = "filter",
                      bias: str = "zero") -> torch.Tensor:
    """K seeded Gaussian directions, each normalised relative to the model's weights.

    The k directions are drawn one after another from one generator, so the first direction of
    a seed is the same for k = 1 and k = 2: the α axis of a 2-D surface is the 1-D slice of the
    same seed.

    Args:
        model: θ is its current parameters (not modified).
        seed: seed of the directions' own ``torch.Generator`` (global RNG untouched).
        k: number of directions.
        normalization, bias: see :func:`normalize_direction`.

    Returns:
        (k, P) directions in the model's dtype and device.
    """
    _check("normalization", normalization, NORMALIZATIONS)
    _check("bias", bias, BIAS_RULES)
    params = {n: p.detach().cpu() for n, p in model.named_parameters()}
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    out = []
    for _ in range(k):
        raw = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
        d = normalize_direction(raw, params, normalization=normalization, bias=bias)
        out.append(torch.cat([v.reshape(-1) for v in d.values()]))
    ref = next(model.parameters())
    return torch.stack(out).to(ref.device, ref.dtype)


def hessian_directions(model: nn.Module, loss_fn, data, k: int = 2, *,
                       tol: float = 1e-4, seed: int = 0,
                       max_steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k eigenvectors of the loss Hessian at the model's weights.

    Lanczos (:func:`analysis_lib.curvature.lanczos.top_eigenpairs`) on :class:`HessianOperator`
    (BatchNorm in eval mode). Each eigenvector has unit norm; its sign is fixed so that its
    largest-magnitude entry is positive, so the same model gives the same directions.

    Args:
        model: the model (not modified). loss_fn, data: the loss and its ``(inputs, targets)``,
            as :class:`HessianOperator` takes them.
        k: number of directions. tol, seed, max_steps: passed to ``top_eigenpairs``.

    Returns:
        ``(directions (k, P) in the model's dtype, eigenvalues (k,) float64)``; a warning names
        eigenpairs that did not converge.
    """
    op = HessianOperator(model, loss_fn, data)
    result = top_eigenpairs(op.matvec, op.dim, k=k, tol=tol, seed=seed, max_steps=max_steps,
                            device=op.device)
    V = result.eigenvectors.T  # (k, P) float64
    signs = torch.sign(V.gather(1, V.abs().argmax(dim=1, keepdim=True)))
    ref = next(model.parameters())
    return (V * signs).to(ref.device, ref.dtype), result.eigenvalues


def trajectory_directions(weights: torch.Tensor, k: int = 2) -> torch.Tensor:
    """The top-k principal directions (unit rows, (k, P) float64) of a stored weight trajectory.

    Args:
        weights: (S, P) flattened weights over training, e.g. the ``trajectory`` checkpoint's
            ``weights``; see :func:`analysis_lib.trajectories.pca.principal_directions`.
        k: number of directions.
    """
    return principal_directions(weights, k)


def equivalent_rescaling(model: nn.Module, factor: float, layer: int = 1) -> nn.Module:
    """A copy of a ReLU MLP computing the same function with ``fc{layer}`` scaled by ``factor``.

    ReLU is positively homogeneous, relu(c z) = c relu(z) for c > 0, so multiplying the weight and
    bias of hidden layer ``layer`` by c and the next layer's weight by 1/c leaves every output
    unchanged while moving θ far away (Dinh et al. 2017). Unnormalised sharpness changes under
    this map; filter-normalised sharpness does not.

    Args:
        model: an :class:`analysis_lib.training.models.MLP` with ReLU, no normalisation layers and no
            residual connections (not modified).
        factor: c > 0. layer: which hidden layer to scale (1..depth).

    Returns:
        The rescaled copy.
    """
    hidden = [n for n, _ in model.named_children() if n.startswith("fc")]
    plain = (getattr(model, "residual", True) is False and isinstance(getattr(model, "act", None), nn.ReLU)
             and not any(n.startswith("norm") for n, _ in model.named_children()))
    if not plain or not 1 <= layer <= len(hidden) or not factor > 0:
        raise ValueError(f"invalid arguments layer={layer}, factor={factor}: need a ReLU MLP without "
                         f"norm layers or residual connections, 1 <= layer <= {len(hidden)}, factor > 0")
    out = copy.deepcopy(model)
    following = getattr(out, f"fc{layer + 1}") if layer < len(hidden) else out.out
    with torch.no_grad():
        getattr(out, f"fc{layer}").weight.mul_(factor)
        getattr(out, f"fc{layer}").bias.mul_(factor)
        following.weight.div_(factor)
    return out
