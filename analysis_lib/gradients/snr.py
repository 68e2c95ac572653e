"""Per-layer signal-to-noise ratio of mini-batch gradients at fixed weights, and where it switches phase.

For K mini-batches b = 1..K of B training samples each, drawn at the same weights θ, with
gradients g_{l,b} of layer l's parameters (weight and bias together) and mean ḡ_l = (1/K) Σ_b g_{l,b}:

- ``snr_var``: s_l² = (1/(K−1)) Σ_b ‖g_{l,b} − ḡ_l‖², the unbiased E_b‖g_{l,b} − E g_l‖²: the
  per-layer gradient noise Var_l of noise-adaptive layer-wise learning rates (Hao et al. 2025,
  arXiv:2510.14009, in the Euclidean norm), beside each layer's λ_max of
  :mod:`analysis_lib.curvature.blocks` (same ``layer`` labels for the transformer's matrices);
- ``snr_signal``: ‖ḡ_l‖² − s_l²/K, the unbiased ‖E g_l‖² (E‖ḡ‖² = ‖E g‖² + E‖g_b − E g‖²/K);
- ``grad_snr_mb``: (max(``snr_signal``, 0))^½ / s_l, the mini-batch SNR
  ‖E_b g_{l,b}‖ / (E_b‖g_{l,b} − E_b g_{l,b}‖²)^½ of Shwartz-Ziv & Tishby (2017), "Opening the
  Black Box of Deep Neural Networks via Information", with the bias-corrected signal (0 when the
  estimate is ≤ 0, NaN when s_l = 0);
- ``snr_plain``: ‖ḡ_l‖ / ((1/K) Σ_b ‖g_{l,b} − ḡ_l‖²)^½, the plug-in ratio of the two sample
  moments; it overstates the SNR (its square has expectation near (SNR² + 1/K)·K/(K − 1), so it
  rarely falls much below 1/√(K − 1)); kept for comparison.

Relation to the per-sample SNR of :mod:`analysis_lib.gradients.noise` (``grad_snr`` = ‖E g‖² /
tr Σ, Σ the per-sample gradient covariance): a mini-batch of B samples drawn without replacement
from N has E‖g_b − E g‖² = (tr Σ / B)·(N − B)/(N − 1), Σ the population covariance over the N
samples, so SNR_mb² = B · (N − 1)/(N − B) · ‖E g‖²/tr Σ, i.e. B times the per-sample SNR² up to
the finite-population factor (:func:`minibatch_snr_from_per_sample`; tested both ways). We report
the mini-batch SNR (the square root of a ratio, like the claim's threshold of 1), measured
directly: K backward passes of B samples each through :func:`torch.autograd.grad`, which leaves
``.grad`` untouched.

The phase switch of one SNR curve (:func:`phase_switch`): the first probed step from which the
SNR, smoothed by a centred running median over ``window`` probes, stays below ``threshold`` at
every later probe; none when it ends at or above it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..layers import MODEL, layer_blocks
from ..training.problem import call_model, index_samples, n_samples
from ..validation import check_int, check_number, fail

SNR_METRICS = ("grad_snr_mb", "snr_plain", "snr_signal", "snr_var")


def batch_statistics(grads: torch.Tensor) -> dict[str, float]:
    """:data:`SNR_METRICS` of K mini-batch gradients of one layer (see the module docstring).

    Args:
        grads: (K, P) the K mini-batch gradients, flattened; K ≥ 2.

    Returns:
        ``{metric: value}`` in float64.

    Raises:
        ValueError: fewer than two gradients.
    """
    if grads.dim() != 2 or grads.shape[0] < 2:
        raise ValueError(f"invalid grads of shape {tuple(grads.shape)}: need (K, P) with K >= 2 mini-batches")
    g = grads.double()
    k = g.shape[0]
    mean = g.mean(dim=0)
    sum_sq = float(torch.linalg.vector_norm(g - mean, dim=1).square().sum())
    mean_sq = float(mean.square().sum())
    var = sum_sq / (k - 1)
    signal = mean_sq - var / k
    return {"grad_snr_mb": math.sqrt(max(signal, 0.0) / var) if var > 0 else math.nan,
            "snr_plain": math.sqrt(mean_sq / (sum_sq / k)) if sum_sq > 0 else math.nan,
            "snr_signal": signal, "snr_var": var}


def minibatch_snr_from_per_sample(per_sample_snr: float, batch_size: int, n_samples: int | None = None) -> float:
    """The mini-batch SNR implied by a per-sample SNR ‖E g‖²/tr Σ (claim-4 form, squared).

    SNR_mb = (B · ‖E g‖²/tr Σ)^½ for independent samples; with ``n_samples`` = N, mini-batches
    drawn without replacement from N samples and Σ their population covariance, times
    ((N − 1)/(N − B))^½.

    Args:
        per_sample_snr: ‖E g‖²/tr Σ (``grad_snr`` of :mod:`analysis_lib.gradients.noise`, whose
            tr Σ is the unbiased N/(N − 1)·population trace: pass that with ``n_samples`` None
            only when N ≫ B).
        batch_size: B ≥ 1. n_samples: N > B, or None for sampling with replacement.

    Raises:
        ConfigError: B < 1 or N ≤ B.
    """
    check_int("batch_size", batch_size, 1)
    factor = 1.0
    if n_samples is not None:
        check_int("n_samples", n_samples, batch_size + 1)
        factor = (n_samples - 1) / (n_samples - batch_size)
    return math.sqrt(max(per_sample_snr, 0.0) * batch_size * factor)


def minibatch_gradients(model: nn.Module, loss_fn: Callable, x, y,
                        batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer -> (K, P_l) gradients of the mean loss of each mini-batch of indices, at the current θ.

    ``x`` and ``y`` are tensors, or tuples / dicts of tensors sharing the sample axis (e.g. the
    tiny transformer's targets ``(tokens, mask)``); a mini-batch takes the same rows of each.
    Uses :func:`torch.autograd.grad`: ``.grad`` and the weights are untouched. ``"model"`` holds
    all parameters together (in ``named_parameters`` order); a parameter the loss does not reach
    contributes zeros.
    """
    blocks = layer_blocks(model)
    names = [n for names in blocks.values() for n in names]
    params = dict(model.named_parameters())
    rows = []
    for idx in batches:
        loss = loss_fn(call_model(model, index_samples(x, idx)), index_samples(y, idx))
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(params[n])).detach().reshape(-1).double()
                               for n, g in zip(names, grads)]))
    flat = torch.stack(rows)
    out, start = {}, 0
    for layer, members in blocks.items():
        size = sum(params[n].numel() for n in members)
        out[layer] = flat[:, start:start + size]
        start += size
    out[MODEL] = flat
    return out


def draw_batches(n_samples: int, n_batches: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """``n_batches`` index tensors of ``batch_size`` distinct samples each, from a generator seeded ``seed``.

    Each mini-batch is drawn without replacement, independently of the others (as a training
    epoch's batches are, up to overlaps between batches).

    Raises:
        ConfigError: a size below its minimum, or ``batch_size`` > ``n_samples``.
    """
    check_int("probes.snr_batches", n_batches, 2)
    check_int("probes.snr_batch_size", batch_size, 1)
    if batch_size > n_samples:
        fail("probes.snr_batch_size", batch_size, f"must be <= the training samples (= {n_samples})")
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randperm(n_samples, generator=gen)[:batch_size].to(device) for _ in range(n_batches)]


def gradient_snr(model: nn.Module, loss_fn: Callable, x, y, *, n_batches: int,
                 batch_size: int, seed: int) -> list[tuple[str, str, float]]:
    """``(layer, metric, value)`` of :data:`SNR_METRICS` for every layer, then ``"model"``, at the current θ.

    Args:
        model: evaluated in its current mode (use ``eval()`` for dropout or BatchNorm).
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss of a batch.
        x, y: the training samples the mini-batches are drawn from (tensors, or tuples / dicts of
            tensors with the samples along their first axis).
        n_batches: K ≥ 2. batch_size: B. seed: of the mini-batch generator.
    """
    batches = draw_batches(n_samples(y), n_batches, batch_size, seed, next(model.parameters()).device)
    return [(layer, metric, value) for layer, g in minibatch_gradients(model, loss_fn, x, y, batches).items()
            for metric, value in batch_statistics(g).items()]


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over ``window`` points (odd), shrinking at the ends."""
    check_int("window", window, 1)
    if window % 2 == 0:
        fail("window", window, "must be odd (a centred median)")
    half = window // 2
    return np.array([np.median(values[max(0, i - half): i + half + 1]) for i in range(len(values))])


def phase_switch(steps: Sequence[float], snr: Sequence[float], *, threshold: float = 1.0,
                 window: int = 1) -> dict[str, float]:
    """Where one SNR curve switches from drift (SNR ≥ ``threshold``) to diffusion (below it, for good).

    Args:
        steps: probed steps, increasing. snr: the SNR at each (NaN probes are dropped).
        threshold: the SNR the switch is read at (1 in Shwartz-Ziv & Tishby 2017).
        window: odd number of probes of the centred running median applied first (1: none).

    Returns:
        ``switch_step`` (the first probe from which the smoothed SNR stays below ``threshold``;
        NaN when it ends at or above it, or there are no probes), ``high_early`` (1.0 when the
        smoothed SNR at the first probe is ≥ ``threshold``), ``low_late`` (1.0 when it is below at
        the last probe) and ``switched`` (``high_early`` and a switch exists).

    Raises:
        ConfigError: ``threshold`` ≤ 0, or ``window`` not a positive odd integer.
    """
    check_number("threshold", threshold, positive=True)
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(snr, dtype=np.float64)
    if s.shape != v.shape:
        raise ValueError(f"steps and snr differ in length: {s.shape} and {v.shape}")
    keep = ~np.isnan(v)
    s, v = s[keep], running_median(v[keep], window) if keep.any() else v[keep]
    if len(v) == 0:
        return {"switch_step": math.nan, "high_early": math.nan, "low_late": math.nan, "switched": math.nan}
    above = np.flatnonzero(v >= threshold)
    low_late = float(v[-1] < threshold)
    switch = math.nan if not low_late else float(s[0] if len(above) == 0 else s[above[-1] + 1])
    high_early = float(v[0] >= threshold)
    return {"switch_step": switch, "high_early": high_early, "low_late": low_late,
            "switched": float(high_early == 1.0 and not math.isnan(switch))}
