"""Per-example gradient spectra of every weight matrix.

For each example (one sequence) the loss is the masked cross-entropy over its response tokens,
averaged (``reduction="mean"``) or summed (``"sum"``) over those tokens
(:func:`analysis_lib.training.losses.sequence_losses`), and G is the gradient of that loss with
respect to a weight matrix W (d_out, d_in) of an ``nn.Linear``. The spread of these statistics
across layers is in :mod:`analysis_lib.gradients.spread`.

Per-example gradients come from one forward and one backward pass per chunk of examples: a
forward hook keeps each Linear's input a_t and output, ``torch.autograd.grad`` of the summed
per-example losses gives the output gradients δ_t (sequences do not interact, so the rows of δ
belonging to example i are ∂loss_i/∂output), and G_i = Σ_t δ_t a_tᵀ is one einsum. It is faster
than ``torch.func`` ``vmap(grad)`` and than one backward pass per example (measured in
``benchmarks/gradient_stats.py``); ``tests/gradients/test_spectra.py`` checks it against both.

Statistics of G with singular values σ_1 ≥ σ_2 ≥ ... (:data:`STATISTICS`): nuclear norm Σσ_i,
spectral norm σ_1, Frobenius norm ‖G‖_F, effective rank exp(−Σ p_i log p_i) with
p_i = σ_i / Σ_j σ_j (Roy & Vetterli 2007), stable rank ‖G‖_F² / σ_1². A zero gradient has NaN
effective and stable rank.

Names: a module ``blocks.{i}.<...>.{p}`` becomes ``layer = "blocks.{i}"``, ``projection = p``
(``q, k, v, o, up, down`` in the tiny transformer); any other module keeps its name as the layer
with ``projection = "weight"`` (:func:`analysis_lib.layers.layer_and_projection`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..layers import layer_and_projection
from ..training.losses import sequence_losses
from ..validation import ConfigError

STATISTICS = ("nuclear_norm", "spectral_norm", "frobenius_norm", "effective_rank", "stable_rank")
REDUCTIONS = ("mean", "sum")
SPECTRA_COLUMNS = ["example", "layer", "projection", "statistic", "value"]


def _linear_modules(model: nn.Module, modules: Sequence[str] | None) -> dict[str, nn.Linear]:
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if modules is None:
        return linears
    for name in modules:
        if name not in linears:
            raise ConfigError(f"invalid parameter modules={list(modules)!r}: {name!r} is not an nn.Linear "
                              f"of the model; allowed: {list(linears)}")
    return {name: linears[name] for name in modules}


def _check(reduction: str, chunk_size: int, mask: torch.Tensor | None) -> None:
    """Reject bad parameters (ConfigError) and a mean over no response tokens (ValueError)."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"invalid parameter reduction={reduction!r}: must be one of {list(REDUCTIONS)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"invalid parameter chunk_size={chunk_size!r}: must be an integer >= 1")
    if mask is not None and reduction == "mean" and not bool(mask.reshape(mask.shape[0], -1).any(dim=1).all()):
        raise ValueError("a sequence has no response tokens (an all-False mask row): its mean loss is undefined")


def per_example_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                          mask: torch.Tensor | None = None, *, reduction: str = "mean",
                          modules: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Gradient of each example's loss (:func:`sequence_losses`) for each ``nn.Linear`` weight.

    One forward and one backward pass over the whole batch; the model's ``.grad`` fields, weights
    and train/eval mode are left as they were (it runs in eval mode: no dropout, and BatchNorm
    would otherwise couple the examples). A Linear called several times in one forward pass gets
    the sum over its calls; one never called (``nn.MultiheadAttention.out_proj``, which attention
    uses functionally) is left out.

    Args:
        model: maps ``inputs`` to logits (B, T, V) or (B, V); examples must not interact.
        inputs: (B, ...) model input, e.g. tokens (B, T).
        targets, mask: as in :func:`sequence_losses`.
        reduction: ``"mean"`` or ``"sum"`` over each sequence's response tokens.
        modules: names of the Linear modules to use; None = every ``nn.Linear``.

    Returns:
        module name -> (B, d_out, d_in) per-example weight gradients.
    """
    _check(reduction, 1, mask)
    chosen = _linear_modules(model, modules)
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in chosen}

    def keeper(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            calls[name].append((args[0].detach(), output))  # input (B, ..., d_in), output (B, ..., d_out)
        return hook

    handles = [m.register_forward_hook(keeper(name)) for name, m in chosen.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            total = sequence_losses(model(inputs), targets, mask, reduction).sum()
            outputs = [out for pairs in calls.values() for _, out in pairs]
            deltas = iter(torch.autograd.grad(total, outputs, allow_unused=True, materialize_grads=True))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    grads, n = {}, inputs.shape[0]
    for name, pairs in calls.items():
        if not pairs:  # never called, e.g. nn.MultiheadAttention.out_proj (used functionally)
            continue
        a = torch.cat([x.reshape(n, -1, x.shape[-1]) for x, _ in pairs], dim=1)  # (B, N, d_in)
        d = torch.cat([next(deltas).reshape(n, -1, out.shape[-1]) for _, out in pairs], dim=1)  # (B, N, d_out)
        grads[name] = torch.einsum("bno,bni->boi", d, a)
    return grads


def spectral_statistics(grads: torch.Tensor) -> dict[str, torch.Tensor]:
    """The :data:`STATISTICS` of each matrix of a batch.

    Args:
        grads: (..., m, n) matrices.

    Returns:
        statistic name -> (...) values, in the dtype of ``grads``.
    """
    return singular_value_statistics(torch.linalg.svdvals(grads), torch.linalg.matrix_norm(grads))


def singular_value_statistics(s: torch.Tensor, frobenius: torch.Tensor) -> dict[str, torch.Tensor]:
    """The :data:`STATISTICS` from singular values already computed (one SVD shared by callers).

    Args:
        s: (..., k) singular values, descending.
        frobenius: (...) Frobenius norms of the same matrices.

    Returns:
        statistic name -> (...) values, in the dtype of ``s``.
    """
    nuclear, spectral = s.sum(dim=-1), s[..., 0]
    p = s / nuclear.unsqueeze(-1)
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)  # 0 log 0 = 0
    return {"nuclear_norm": nuclear, "spectral_norm": spectral, "frobenius_norm": frobenius,
            "effective_rank": torch.exp(entropy), "stable_rank": frobenius.square() / spectral.square()}


def gradient_spectra(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     mask: torch.Tensor | None = None, *, reduction: str = "mean",
                     modules: Sequence[str] | None = None, chunk_size: int = 50,
                     dtype: torch.dtype | None = None) -> pd.DataFrame:
    """Spectral statistics of every example's gradient of every chosen weight matrix.

    Args:
        model, inputs, targets, mask, reduction, modules: as in :func:`per_example_gradients`.
        chunk_size: examples per forward/backward pass (bounds memory: chunk × Σ d_out d_in).
        dtype: dtype of the SVD (None = the gradients' own; float64 for reference checks).

    Returns:
        Tidy table ``example, layer, projection, statistic, value``; ``example`` is the row of
        ``inputs`` (0-based).
    """
    _check(reduction, chunk_size, mask)
    frames = []
    for start in range(0, inputs.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        grads = per_example_gradients(model, inputs[part], targets[part],
                                      None if mask is None else mask[part],
                                      reduction=reduction, modules=modules)
        for name, g in grads.items():
            layer, projection = layer_and_projection(name)
            for statistic, values in spectral_statistics(g if dtype is None else g.to(dtype)).items():
                frames.append(pd.DataFrame({"example": np.arange(start, start + len(values)),
                                            "layer": layer, "projection": projection,
                                            "statistic": statistic,
                                            "value": values.detach().double().cpu().numpy()}))
    return pd.concat(frames, ignore_index=True)[SPECTRA_COLUMNS]
