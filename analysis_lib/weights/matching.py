"""Weight matching: permute the hidden units of one MLP so its weights line up with another's.

Hidden units of an MLP can be permuted without changing the function: reorder the rows of a
layer's weight and bias (and its norm's parameters and running statistics) and the columns of the
next layer's weight the same way. Two independently trained networks are usually far apart partly
for that reason alone. *Weight matching* (Ainsworth, Hayase & Srinivasa, "Git Re-Basin: Merging
Models modulo Permutation Symmetries", ICLR 2023, Algorithm 1) picks, for every hidden layer l, the
permutation P_l maximising Σ_l ⟨W_l^A, P_l W_l^B P_{l−1}ᵀ⟩ (plus the biases and norm parameters),
by coordinate descent: one layer at a time, in a seeded random order, each step an exact linear
assignment problem (``scipy.optimize.linear_sum_assignment``), until no permutation changes.

A model is described by a *permutation spec*: for every state-dict key, which permutation acts on
each of its axes (None: that axis is not permuted). Supported: the MLP of
:mod:`analysis_lib.training.models`, plain (one permutation per hidden layer) or residual (one permutation
shared by every hidden layer: the residual stream ties them), with or without batch / layer norm.
Only parameters enter the objective; buffers (BatchNorm running statistics) are permuted with
their units. Other models (the 1-D CNN) raise a ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..training.models import MLP

State = Mapping[str, torch.Tensor]
Spec = dict[str, tuple[str | None, ...]]  # state-dict key -> permutation name per axis


@dataclass
class MatchResult:
    """B permuted into A's basis.

    Attributes:
        state: B's state dict with hidden units permuted (same function as B).
        perms: permutation name -> (n,) int64 array; unit i of A is matched to unit perms[i] of B.
        iterations: coordinate-descent sweeps until no permutation changed.
        objective: Σ ⟨θ_A, θ_B permuted⟩ over the parameters in the spec, before and after.
    """

    state: dict[str, torch.Tensor]
    perms: dict[str, np.ndarray]
    iterations: int
    objective: tuple[float, float]


def mlp_permutation_spec(model: nn.Module) -> Spec:
    """The permutation spec of an :class:`analysis_lib.training.models.MLP` (keys of its state dict).

    Hidden layer i's permutation ``P_i`` acts on the rows of ``fc{i}`` and on ``norm{i}``; the
    next layer's weight (``fc{i+1}`` or ``out``) has ``P_i`` on its columns. A residual MLP uses
    one permutation ``P_1`` for every hidden layer.

    Raises:
        ValueError: ``model`` is not an analysis_lib MLP.
    """
    if not isinstance(model, MLP):
        raise ValueError(f"weight matching supports analysis_lib.training.models.MLP (plain or residual, with "
                         f"or without batch/layer norm), not {type(model).__name__}")
    perm = (lambda i: "P_1") if model.residual else (lambda i: f"P_{i}")
    spec: Spec = {}
    for key, value in model.state_dict().items():
        layer, _, _ = key.rpartition(".")
        index = int(layer[2:] if layer.startswith("fc") else layer[4:]) if layer != "out" else None
        if layer == "out":
            spec[key] = (None, perm(model.depth)) if value.dim() == 2 else (None,)
        elif layer.startswith("fc") and value.dim() == 2:
            spec[key] = (perm(index), None if index == 1 else perm(index - 1))
        else:  # fc bias, norm weight / bias / running statistics; num_batches_tracked is 0-d
            spec[key] = (perm(index),) if value.dim() == 1 else ()
    return spec


def permute_state(state: State, spec: Spec, perms: Mapping[str, np.ndarray],
                  skip: tuple[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Apply ``perms`` to every axis the spec names: new[..., i, ...] = old[..., perms[i], ...].

    Args:
        state: state dict; keys absent from the spec are copied unchanged.
        spec: from :func:`mlp_permutation_spec`.
        perms: permutation name -> (n,) index array.
        skip: (key, axis) left unpermuted (the axis being solved for in weight matching).
    """
    out = {}
    for key, value in state.items():
        for axis, name in enumerate(spec.get(key, ())):
            if name is not None and (key, axis) != skip:
                value = value.index_select(axis, torch.as_tensor(perms[name], device=value.device))
        out[key] = value
    return out


def _perm_sizes(state: State, spec: Spec) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for key, names in spec.items():
        for axis, name in enumerate(names):
            if name is not None:
                sizes.setdefault(name, state[key].shape[axis])
    return sizes


def _objective(a: State, b: State, keys: list[str]) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in keys))


def _similarity(a: State, b: State, spec: Spec, perms: dict, name: str, n: int,
                keys: list[str]) -> np.ndarray:
    """(n, n) matrix S_ij = Σ ⟨unit i of A, unit j of B⟩ over every axis ``name`` acts on.

    B's other axes are already permuted.
    """
    sim = torch.zeros(n, n, dtype=torch.float64)
    for key in keys:
        for axis, perm_name in enumerate(spec[key]):
            if perm_name != name:
                continue
            wb = permute_state({key: b[key]}, spec, perms, skip=(key, axis))[key]
            wa_rows = a[key].double().movedim(axis, 0).reshape(n, -1)  # (n, rest)
            wb_rows = wb.double().movedim(axis, 0).reshape(n, -1)
            sim += (wa_rows @ wb_rows.T).cpu()
    return sim.numpy()


def weight_matching(model: nn.Module, state_a: State, state_b: State, *, max_iter: int = 100,
                    seed: int = 0) -> MatchResult:
    """Permute B's hidden units to maximise its weights' inner product with A's.

    Args:
        model: defines the architecture (its own weights are not used or changed).
        state_a, state_b: state dicts of two models of that architecture.
        max_iter: coordinate-descent sweeps at most.
        seed: seeds the ``np.random.Generator`` that orders the layers in each sweep.

    Returns:
        MatchResult with B's permuted state; the function it computes equals B's.

    Raises:
        ValueError: the model is not a supported MLP, or a state dict does not fit it.

    Reference: Ainsworth, Hayase & Srinivasa (ICLR 2023), Algorithm 1 ("weight matching").
    """
    spec = mlp_permutation_spec(model)
    for label, state in (("state_a", state_a), ("state_b", state_b)):
        if set(state) != set(spec):
            raise ValueError(f"invalid argument {label}: keys {sorted(state)} do not match the "
                             f"model's {sorted(spec)}")
    param_keys = [k for k, _ in model.named_parameters()]
    a = {k: v.detach() for k, v in state_a.items()}
    b = {k: v.detach() for k, v in state_b.items()}
    sizes = _perm_sizes(a, spec)
    perms = {name: np.arange(n) for name, n in sizes.items()}
    rng = np.random.default_rng(seed)
    before = _objective(a, b, param_keys)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        changed = False
        for name in rng.permutation(sorted(sizes)):
            sim = _similarity(a, b, spec, perms, name, sizes[name], param_keys)
            _, cols = linear_sum_assignment(sim, maximize=True)
            rows = np.arange(sizes[name])
            # Accept only a strict gain: ties between equal assignments must not loop forever.
            if sim[rows, cols].sum() > sim[rows, perms[name]].sum() + 1e-12 * abs(sim).sum():
                perms[name], changed = cols, True
        if not changed:
            break
    permuted = permute_state(b, spec, perms)
    return MatchResult(permuted, perms, iterations, (before, _objective(a, permuted, param_keys)))
