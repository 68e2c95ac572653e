"""Per-layer sharpness: λ_max of each diagonal Hessian block H_ll, by Lanczos on that block alone.

With θ split into groups of named parameters θ_1, ..., θ_m (a group is one or more parameters),
the diagonal block of group l is H_ll = ∂²L / ∂θ_l ∂θ_l, the Hessian of the mean loss L over the
data with every other parameter held fixed: the principal submatrix of the full Hessian on θ_l's
coordinates. Its largest eigenvalue λ_max(H_ll) is the sharpness of the loss along that layer
alone; the spread of λ_max(H_ll) across layers (reported as max over groups / min over groups)
is what layer-wise learning-rate rules adapt to (Hao et al. 2025, "Noise-Adaptive Layerwise
Learning Rates", arXiv:2510.14009; a block's λ_max bounds the stable step size of that layer,
Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability",
ICLR 2021, for the whole model).

Each block is a :class:`~analysis_lib.curvature.hessian.HessianOperator` restricted to the
group's parameters (so its products are exact H_ll v, not slices of a full product), and its top
eigenpair comes from :func:`~analysis_lib.curvature.lanczos.top_eigenpairs` with the
residual-bound stopping rule: ``converged`` means ‖H_ll y − θ y‖ ≤ tol · |θ| within ``max_steps``
products. A warm start passes each group's previous Ritz vector as the Lanczos start vector.

Default groups (:func:`default_groups`): for the tiny transformer
(:class:`analysis_lib.lm.transformer.TinyTransformer`) its block weight matrices
(:func:`analysis_lib.lm.transformer.matrix_names`: q, k, v, o, up, down of every block), labelled
by their module, e.g. ``blocks.0.attn.q``; for any other model every weight of dimension ≥ 2
(the weight of each Linear and convolution layer; biases and normalisation gains are left out),
labelled by its module, e.g. ``fc1``. The model, its ``.grad`` and the RNG are never touched.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..layers import layer_of
from ..training.problem import LossFn
from ..validation import check_int, check_number, fail
from .hessian import HessianOperator
from .lanczos import top_eigenpairs


@dataclass(frozen=True)
class BlockEigenpair:
    """The top eigenpair of one diagonal block H_ll.

    Attributes:
        label: the group's label (the ``layer`` of its rows).
        params: the parameter names forming the block.
        dim: the block's number of parameters.
        lambda_max: its largest eigenvalue (the top Ritz value).
        residual: the Ritz residual estimate ‖H_ll y − λ y‖ (Lanczos' β_j |s_j|).
        converged: residual ≤ tol · |lambda_max| within the product budget.
        n_matvecs: block Hessian-vector products used.
        vector: the Ritz vector (dim,) float64, for a warm start.
    """

    label: str
    params: tuple[str, ...]
    dim: int
    lambda_max: float
    residual: float
    converged: bool
    n_matvecs: int
    vector: torch.Tensor


@dataclass(frozen=True)
class BlockSharpness:
    """λ_max of every group's diagonal block, in group order.

    Attributes:
        blocks: label -> :class:`BlockEigenpair`.
        ratio: max over groups of λ_max / min over groups of λ_max; NaN when the smallest is
            ≤ 0 (the ratio is then no measure of spread) or there is one group.
    """

    blocks: dict[str, BlockEigenpair]
    ratio: float

    @property
    def n_matvecs(self) -> int:
        """Block products used over all groups."""
        return sum(b.n_matvecs for b in self.blocks.values())

    @property
    def all_converged(self) -> bool:
        """Every block met the tolerance."""
        return all(b.converged for b in self.blocks.values())

    def vectors(self) -> dict[str, torch.Tensor]:
        """Label -> Ritz vector: the ``v0`` of a warm-started next call."""
        return {label: b.vector for label, b in self.blocks.items()}


def default_groups(model: nn.Module) -> dict[str, list[str]]:
    """Label -> parameter names of the default blocks of ``model`` (see the module docstring).

    Raises:
        ConfigError: the model has no weight of dimension ≥ 2.
    """
    from ..lm.transformer import TinyTransformer, matrix_names

    if isinstance(model, TinyTransformer):
        return {layer_of(name): [name] for name, _, _ in matrix_names(model)}
    groups = {layer_of(name): [name] for name, p in model.named_parameters()
              if name.endswith("weight") and p.dim() >= 2}
    if not groups:
        fail("model", type(model).__name__, "has no weight matrix or kernel (a parameter '*weight' of "
             "dimension >= 2); pass groups naming the parameters of each block")
    return groups


def resolve_groups(model: nn.Module, groups: Mapping[str, Sequence[str]] | Sequence[str] | None
                   ) -> dict[str, list[str]]:
    """Validated label -> parameter names; a list of names makes one group per parameter.

    A parameter ``x.weight`` alone is labelled ``x`` (its module), any other by its full name.

    Raises:
        ConfigError: no groups, an empty group, or a name the model does not have (named).
    """
    if groups is None:
        return default_groups(model)
    if isinstance(groups, str):
        fail("groups", groups, "must be a list of parameter names or a mapping label -> names, not a string")
    if isinstance(groups, Mapping):
        out = {str(label): [names] if isinstance(names, str) else list(names) for label, names in groups.items()}
    else:
        out = {(layer_of(n) if str(n).endswith(".weight") else str(n)): [n] for n in groups}
        if len(out) != len(list(groups)):
            fail("groups", list(groups), "names a parameter twice")
    if not out:
        fail("groups", groups, "must name at least one group")
    known = dict(model.named_parameters())
    for label, names in out.items():
        if not names:
            fail("groups", dict(out), f"group {label!r} is empty")
        unknown = [n for n in names if n not in known]
        if unknown:
            fail("groups", dict(out), f"unknown parameter names {unknown} in group {label!r}; "
                 f"the model has {list(known)}")
        if len(set(names)) != len(names):
            fail("groups", dict(out), f"group {label!r} names a parameter twice")
    return out


def block_sharpness(model: nn.Module, loss_fn: LossFn, data: Any, *,
                    groups: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
                    tol: float = 1e-6, max_steps: int | None = None, seed: int = 0,
                    v0: Mapping[str, torch.Tensor] | None = None, chunk_size: int | None = None,
                    train_mode: bool = False) -> BlockSharpness:
    """λ_max(H_ll) of each group's diagonal Hessian block, with its residual and convergence.

    Args:
        model: any module; it is not modified.
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss of a batch (as
            :class:`~analysis_lib.curvature.hessian.HessianOperator` takes it).
        data: ``(inputs, targets)`` or an iterable of them.
        groups: a mapping label -> parameter names, a list of parameter names (one group each),
            or None for :func:`default_groups`.
        tol: relative residual tolerance of each λ_max (> 0).
        max_steps: products allowed per block (≥ 2; default that of ``top_eigenpairs``); a
            block of dimension d never takes more than d (Lanczos is then exact).
        seed: seed of the random start vectors (groups without a warm start).
        v0: label -> start vector (the previous call's :meth:`BlockSharpness.vectors`); labels
            it lacks start cold, labels not among the groups are refused.
        chunk_size: at most this many samples per forward pass.
        train_mode: BatchNorm with batch statistics (default eval mode).

    Returns:
        :class:`BlockSharpness`. Blocks that did not converge say so (``converged``) and one
        RuntimeWarning names them.

    Raises:
        ConfigError: bad ``groups`` (unknown names are listed), ``tol``, ``max_steps`` or ``v0``,
            before any product.
    """
    check_number("tol", tol, positive=True)
    if max_steps is not None:
        check_int("max_steps", max_steps, 2)
    resolved = resolve_groups(model, groups)
    named = dict(model.named_parameters())
    dims = {label: sum(named[n].numel() for n in names) for label, names in resolved.items()}
    v0 = dict(v0 or {})
    extra = [label for label in v0 if label not in resolved]
    if extra:
        fail("v0", extra, f"labels not among the groups {list(resolved)}")
    for label, v in v0.items():
        if v.numel() != dims[label]:
            fail("v0", label, f"start vector of {v.numel()} entries for a block of {dims[label]} parameters")
    blocks = {}
    for label, names in resolved.items():
        op = HessianOperator(model, loss_fn, data, params=names, chunk_size=chunk_size, train_mode=train_mode)
        with warnings.catch_warnings():  # reported once below, naming the blocks
            warnings.simplefilter("ignore", RuntimeWarning)
            top = top_eigenpairs(op.matvec, op.dim, k=1, tol=tol, max_steps=max_steps, seed=seed,
                                 v0=v0.get(label), device=op.device)
        blocks[label] = BlockEigenpair(label, tuple(names), op.dim, top.eigenvalues[0].item(),
                                       top.residuals[0].item(), top.all_converged, top.n_matvecs,
                                       top.eigenvectors[:, 0])
    failed = [label for label, b in blocks.items() if not b.converged]
    if failed:
        warnings.warn(f"block λ_max did not reach tol={tol} within max_steps={max_steps} for {failed}",
                      RuntimeWarning, stacklevel=2)
    return BlockSharpness(blocks, lambda_ratio([b.lambda_max for b in blocks.values()]))


def lambda_ratio(values: Sequence[float]) -> float:
    """The ratio max / min of the blocks' λ_max; NaN for fewer than two values or a minimum ≤ 0."""
    if len(values) < 2 or min(values) <= 0:
        return math.nan
    return max(values) / min(values)
