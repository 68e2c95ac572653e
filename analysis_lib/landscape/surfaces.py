"""Loss and accuracy surfaces around a centre, in the tidy landscape schema.

A point of a surface is θ = θ₀ + α d₁ + β d₂: ``alpha`` is always the coefficient of direction 1
and ``beta`` that of direction 2 (β = 0 for a 1-D slice), and every row of the tidy table carries
its own (α, β), so a grid cannot be shifted or transposed on its way to a figure (the 2-D grid of
loss-landscapes 3.0.6 shifts alternate columns by one step; ``benchmarks/landscape.py`` shows it).
Schema :data:`SURFACE_COLUMNS`: ``run_id, direction_seed, alpha, beta, split, metric, value``
with metric ``loss`` (the mean of the loss given, cross-entropy by default), ``acc`` (for a
cross-entropy) or any other metric asked for.

Values come from :func:`analysis_lib.landscape.evaluate.evaluate_params` (BatchNorm in eval mode with the
centre model's running statistics, the caller's model never modified).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..training.problem import final_models, no_final_models
from .directions import random_directions
from .evaluate import evaluate_params, flat_parameters

SURFACE_COLUMNS = ["run_id", "direction_seed", "alpha", "beta", "split", "metric", "value"]


def grid_coefficients(alphas: torch.Tensor, betas: torch.Tensor | None = None) -> torch.Tensor:
    """(A·B, 2) pairs (α, β), α the slow index: row i·B + j is (alphas[i], betas[j]).

    Without ``betas`` the pairs are (α, 0), a 1-D slice.
    """
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)  # a list of floats stays exact
    betas = torch.zeros(1, dtype=torch.float64) if betas is None else betas
    betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
    a, b = torch.meshgrid(alphas, betas, indexing="ij")  # (A, B) each
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)


def loss_surface(model: nn.Module, directions: torch.Tensor, data, alphas, betas=None, *,
                 loss_fn=F.cross_entropy, centre: torch.Tensor | None = None, chunk: int | None = None,
                 **evaluate_kwargs) -> pd.DataFrame:
    """Loss and accuracy at θ₀ + α d₁ (+ β d₂) on the grid ``alphas`` × ``betas``.

    Args:
        model: its parameters are θ₀ unless ``centre`` is given; BatchNorm uses its running
            statistics (see the module docstring). Not modified.
        directions: (1, P) or (P,) for a 1-D slice, (2, P) for a 2-D surface.
        data: ``(inputs, targets)`` or an iterable of them, the data the loss is averaged over
            (:mod:`analysis_lib.training.problem`).
        alphas: (A,) coefficients of d₁. betas: (B,) coefficients of d₂ (2-D only).
        centre: θ₀ (P,); default the model's parameters.
        chunk: grid points per call of :func:`evaluate_params` (default: as many as fit in
            64 MB, which bounds the (chunk, P) buffer of points).
        loss_fn: ``loss_fn(outputs, targets)`` -> mean loss of a batch (default cross-entropy).
        evaluate_kwargs: passed to :func:`evaluate_params` (``metrics``, ``metric_fns``, ...).

    Returns:
        Tidy frame ``alpha, beta, metric, value`` (metric ``loss``, and ``acc`` for a
        cross-entropy, or what
        ``metrics`` in ``evaluate_kwargs`` asks for; β = 0 in 1-D), α-major (every β of the first
        α first).
    """
    directions = directions.reshape(-1, directions.shape[-1]) if directions.dim() == 1 else directions
    if len(directions) not in (1, 2) or (len(directions) == 2) != (betas is not None):
        raise ValueError(f"invalid arguments: {len(directions)} direction(s) with betas "
                         f"{'given' if betas is not None else 'missing'}: give 1 direction without "
                         "betas (1-D) or 2 directions with betas (2-D)")
    coeffs = grid_coefficients(alphas, betas)  # (G, 2)
    theta = flat_parameters(model) if centre is None else centre
    D = directions.to(theta.device, theta.dtype)
    chunk = chunk or max(1, 64 * 2**20 // (theta.numel() * theta.element_size()))
    results = []
    for lo in range(0, len(coeffs), chunk):
        c = coeffs[lo:lo + chunk, :len(D)].to(theta.device, theta.dtype)  # (c, k), on θ's device
        results.append(evaluate_params(model, theta + c @ D, data, loss_fn, **evaluate_kwargs))
    alpha, beta = coeffs[:, 0].numpy(), coeffs[:, 1].numpy()
    frames = [pd.DataFrame({"alpha": alpha, "beta": beta, "metric": m,
                            "value": torch.cat([r[m] for r in results]).cpu().numpy()})
              for m in results[0]]
    return pd.concat(frames, ignore_index=True)


def surface_table(model: nn.Module, splits: Mapping[str, object], *, loss_fn=F.cross_entropy,
                  seeds, dims: int = 1, radius: float = 1.0, steps: int = 21,
                  normalization: str = "filter", bias: str = "zero", run_id: str = "",
                  **evaluate_kwargs) -> pd.DataFrame:
    """Surfaces around the model along seeded random directions, in the schema :data:`SURFACE_COLUMNS`.

    Args:
        model: the centre θ₀ (not modified).
        splits: ``{"train": data, "test": data}``, the data of each surface (each an
            ``(inputs, targets)`` pair or an iterable of them).
        loss_fn: the loss (default cross-entropy; see :func:`loss_surface`).
        seeds: direction seeds; each gives d₁ (and d₂) by :func:`directions.random_directions`.
        dims: 1 (slices along d₁) or 2 (planes spanned by d₁, d₂).
        radius, steps: coefficients ``linspace(-radius, radius, steps)`` on each axis.
        normalization, bias: of the directions (see :mod:`analysis_lib.landscape.directions`).
        run_id: label of the model.

    Returns:
        Tidy frame ``run_id, direction_seed, alpha, beta, split, metric, value``.
    """
    if dims not in (1, 2):
        raise ValueError(f"invalid argument dims={dims!r}: must be 1 or 2")
    grid = torch.linspace(-radius, radius, steps, dtype=torch.float64)
    frames = []
    for seed in seeds:
        D = random_directions(model, seed, dims, normalization=normalization, bias=bias)
        for split, data in splits.items():
            surface = loss_surface(model, D, data, grid, grid if dims == 2 else None, loss_fn=loss_fn,
                                   **evaluate_kwargs)
            frames.append(surface.assign(run_id=run_id, direction_seed=int(seed), split=split))
    return pd.concat(frames, ignore_index=True)[SURFACE_COLUMNS]


def run_surfaces(result, run_ids=None, *, seeds, normalizations=("filter",),
                 radius: float | Mapping[str, float] = 1.0, dims: int = 1, steps: int = 21,
                 splits=("train",), bias: str = "zero",
                 **evaluate_kwargs) -> pd.DataFrame:
    """Surfaces around the final weights of every finished run of a grid, labelled like its metrics.

    Args:
        result: what :func:`analysis_lib.runs.execute.run_grid` returned, for runs with the
            ``weights`` probe on (so that each stored its ``final`` checkpoint).
        run_ids: the runs to use (default: every run of the grid), e.g. from
            :func:`analysis_lib.runs.grid.select`.
        seeds: direction seeds, the same for every run (seed s gives the same raw Gaussian draw
            for every run of an architecture; normalisation then adapts it to each run's weights).
        normalizations: one surface family per entry (see :mod:`analysis_lib.landscape.directions`).
        radius: largest |α| (and |β|), one number or one per normalisation (an unnormalised
            Gaussian direction has norm about √P, so it needs a much smaller radius).
        dims, steps, bias: as in :func:`surface_table`.
        splits: ``"train"`` and/or ``"test"``: the data each surface averages over.

    Returns:
        Tidy frame ``run_id, <conditions>, seed, normalization, direction_seed, alpha, beta,
        split, metric, value``; runs without a final checkpoint (failed, or no ``weights``
        probe) are left out.
    """
    if not set(splits) <= {"train", "test"}:
        raise ValueError(f"invalid argument splits={splits!r}: a subset of ['train', 'test']")
    frames = []
    for rid, config, model, problem in final_models(result, run_ids):
        data_splits = {s: problem.splits[s] for s in splits}
        labels = {**dict(config.conditions), "seed": config.seed}
        for norm in normalizations:
            r = radius[norm] if isinstance(radius, Mapping) else radius
            table = surface_table(model, data_splits, loss_fn=problem.loss_fn, seeds=seeds, dims=dims, radius=r,
                                  steps=steps, metric_fns=problem.metrics,
                                  normalization=norm, bias=bias, run_id=rid, **evaluate_kwargs)
            frames.append(table.assign(**labels, normalization=norm))
    if not frames:
        labels = no_final_models(result, "run_surfaces")
        return pd.DataFrame(columns=[*labels, "normalization", *SURFACE_COLUMNS[1:]])
    out = pd.concat(frames, ignore_index=True)
    front = ["run_id", *[c for c in out.columns if c not in SURFACE_COLUMNS and c != "normalization"], "normalization"]
    return out[front + SURFACE_COLUMNS[1:]]
