"""Per-layer gradient noise from per-sample gradient norms, without per-sample gradients.

For a batch of B samples with per-sample gradients g_i of a layer's
parameters (the gradient of sample i's own loss) and batch gradient ḡ = (1/B) Σ g_i:

- ``grad_var_trace``: tr Σ = (1/(B−1)) Σ_i ‖g_i − ḡ‖² = (Σ_i ‖g_i‖² − B‖ḡ‖²) / (B − 1), the
  unbiased trace of the per-sample gradient covariance;
- ``grad_mean_sq_norm``: ‖ḡ‖², the squared norm of the batch gradient;
- ``grad_signal``: ‖ḡ‖² − tr Σ / B, the unbiased estimate of ‖E g‖²;
- ``grad_snr``: ``grad_signal`` / tr Σ, i.e. ‖E g‖² / E‖g − E g‖²;
- ``grad_noise_scale``: tr Σ / ``grad_signal`` (B_simple of McCandlish et al., "An Empirical
  Model of Large-Batch Training", 2018).

Which estimator of ‖E g‖²: E‖ḡ‖² = ‖E g‖² + tr Σ / B, so the plain ‖ḡ‖² overstates the signal by
tr Σ / B, which dominates whenever the noise scale exceeds the batch size (the usual case per
layer), and would cap the noise scale near B. The SNR and noise scale therefore use the
bias-corrected ``grad_signal``, as McCandlish et al. do. It is unbiased but noisy and can be
negative for one batch (then SNR < 0 and the noise scale is negative); ratios of one batch are
noisy either way, so to summarise over steps or seeds average ``grad_var_trace`` and
``grad_signal`` first and divide after. ``grad_mean_sq_norm`` is kept for the plain estimator.

How: every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` gets a forward hook that keeps its input a and puts a
tensor hook on its output that keeps the output gradient δ (a tensor hook rather than a module
backward hook: it pairs each call's input with that call's gradient, and wraps nothing). The
loss must be the MEAN over the batch of per-sample losses, so g_i = B Σ_t δ_{i,t} a_{i,t}ᵀ, with t
over a sample's tokens (a sequence), conv output positions (a_t the unfolded input patch), or a
single position. Its squared norm is ‖a‖²‖δ‖² for one position, otherwise either the Gram form
Σ_{t,s} (a_t·a_s)(δ_t·δ_s) (cost T²(d_in + d_out)) or the explicit per-sample matrix (cost
T d_in d_out), whichever is cheaper: Gram when T < d_in d_out / (d_in + d_out). Bias: ‖Σ_t δ_t‖².
ḡ is read from ``param.grad``, so ``.grad`` must be zero before the backward pass.

Layers are module names (``fc1``, ``conv2``, ``blocks.0.attn.q``), weight and bias together, plus
``layer = "model"`` over all supported layers. Not covered, and left out: parameters of other
modules (normalisation, embeddings, grouped or non-zero-padded convolutions: every module that
owns parameters and is not covered is listed in :attr:`GradientNoiseProbe.skipped`, and the
share of the model's parameters the ``"model"`` row covers is recorded as
``grad_noise_coverage``), and modules never called in the forward pass. With
BatchNorm in training mode the samples interact, and "per-sample gradient" is then the
contribution of each sample's activations, not the gradient of its own loss.
"""

from __future__ import annotations

import math
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

METRICS = ("grad_var_trace", "grad_mean_sq_norm", "grad_signal", "grad_snr", "grad_noise_scale")


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def _tokens(module: nn.Module, a: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample token matrices: a (B, T, d_in), δ (B, T, d_out), so that g_i = Σ_t δ_t a_tᵀ."""
    n = a.shape[0]
    if isinstance(module, nn.Linear):
        return a.reshape(n, -1, a.shape[-1]), delta.reshape(n, -1, delta.shape[-1])
    if isinstance(module, nn.Conv2d):  # im2col patches (B, C_in·kh·kw, L), ordered like weight.view(C_out, -1)
        patches = F.unfold(a, module.kernel_size, dilation=module.dilation, padding=module.padding,
                           stride=module.stride)
        return patches.transpose(1, 2), delta.flatten(2).transpose(1, 2)
    # Conv1d as a Linear on input patches, features ordered (C_in, k) like weight.view(C_out, -1).
    # Tensor.unfold is a strided view; F.unfold (im2col) copies every patch and was much slower here.
    (k,), (dilation,), (pad,), (stride,) = module.kernel_size, module.dilation, module.padding, module.stride
    windows = F.pad(a, (pad, pad)).unfold(2, dilation * (k - 1) + 1, stride)  # (B, C_in, L_out, span)
    patches = windows[..., ::dilation].permute(0, 2, 1, 3)  # (B, L_out, C_in, k)
    return patches.reshape(n, patches.shape[1], -1), delta.transpose(1, 2)


def per_sample_sq_norms(a: torch.Tensor, delta: torch.Tensor, bias: bool) -> torch.Tensor:
    """‖Σ_t δ_t a_tᵀ‖² (+ ‖Σ_t δ_t‖² with ``bias``) per sample.

    Args:
        a: (B, T, d_in) inputs; delta: (B, T, d_out) output gradients.
        bias: add the squared norm of the bias gradient Σ_t δ_t.

    Returns:
        (B,) float64.
    """
    n, t, d_in, d_out = a.shape[0], a.shape[1], a.shape[2], delta.shape[2]
    if t == 1:  # ‖δ aᵀ‖² + ‖δ‖² = (‖a‖² + 1) ‖δ‖²
        return ((_sq_norm(a.reshape(n, -1)) + float(bias)) * _sq_norm(delta.reshape(n, -1))).double()
    if t * (d_in + d_out) < d_in * d_out:  # Gram form is cheaper
        gram_a, gram_d = a @ a.transpose(1, 2), delta @ delta.transpose(1, 2)  # (B, T, T) each
        weight = torch.linalg.vecdot(gram_a.reshape(n, -1), gram_d.reshape(n, -1))
    else:  # the per-sample gradients, transposed when d_in < d_out: BLAS is faster with the long side as columns
        small, large = (a, delta) if d_in < d_out else (delta, a)
        weight = _sq_norm((small.transpose(1, 2) @ large).reshape(n, -1))  # (B, min(d), max(d))
    if bias:
        weight = weight + _sq_norm(delta.sum(dim=1))
    return weight.double()


def _sq_norm(rows: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B,) squared row norms, without a squared copy of ``rows``."""
    return torch.linalg.vector_norm(rows, dim=1).square()


class GradientNoiseProbe:
    """Context manager: hooks every supported layer for one forward/backward pass.

    Usage::

        with GradientNoiseProbe(model) as probe:
            loss = F.cross_entropy(model(x), y)  # the mean over the batch
            loss.backward()
        rows = probe.statistics()  # [(layer, metric, value), ...]

    The hooks only read tensors: gradients, weights and the RNG are untouched.
    """

    def __init__(self, model: nn.Module):
        self.layers = {name: m for name, m in model.named_modules() if _supported(m)}
        self.skipped = [name for name, m in model.named_modules()
                        if name not in self.layers and any(True for _ in m.parameters(recurse=False))]
        self.n_params = sum(p.numel() for p in model.parameters())
        self._calls: dict[str, list[list]] = {name: [] for name in self.layers}
        self._handles: list = []

    def _hook(self, name: str) -> Callable:
        """A forward hook keeping each call's input and, through a tensor hook, its output gradient."""
        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not (torch.is_grad_enabled() and output.requires_grad):
                return
            call = [args[0].detach(), None]
            self._calls[name].append(call)

            def keep(grad: torch.Tensor) -> None:
                call[1] = grad.detach()
            output.register_hook(keep)
        return forward_hook

    def __enter__(self) -> "GradientNoiseProbe":
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _layer_sums(self, name: str) -> tuple[int, torch.Tensor] | None:
        """(B, tensor [Σ_i ‖g_i‖², ‖ḡ‖²]) of one layer, or None when it saw no complete call."""
        module = self.layers[name]
        calls = [(a, d) for a, d in self._calls[name] if d is not None]
        params = [p for p in (module.weight, module.bias) if p is not None]
        if not calls or any(p.grad is None for p in params):
            return None
        pairs = [_tokens(module, a, d) for a, d in calls]
        if len(pairs) == 1:
            a, delta = pairs[0]
        else:  # the calls of a shared module add up, as extra tokens: (B, ΣT, d_in), (B, ΣT, d_out)
            a, delta = torch.cat([x for x, _ in pairs], dim=1), torch.cat([d for _, d in pairs], dim=1)
        n = a.shape[0]
        per_sample = per_sample_sq_norms(a, delta, module.bias is not None).sum() * n**2  # mean loss: g_i = B Σ δ aᵀ
        batch = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in params]), dtype=torch.float64)
        return n, torch.stack([per_sample, batch.square()])

    def statistics(self) -> list[tuple[str, str, float]]:
        """``(layer, metric, value)`` for every layer that took part, then ``"model"``; call after backward."""
        sums = {name: s for name in self.layers if (s := self._layer_sums(name)) is not None}
        if not sums:
            return []
        values = torch.stack([s for _, s in sums.values()]).tolist()  # one transfer: [[Σ‖g_i‖², ‖ḡ‖²], ...]
        layers = [(name, n, *v) for (name, (n, _)), v in zip(sums.items(), values)]
        model = ("model", layers[0][1], sum(v[2] for v in layers), sum(v[3] for v in layers))
        covered = sum(p.numel() for name in sums for p in self.layers[name].parameters(recurse=False))
        return [*((name, metric, value) for name, n, total, mean_sq in [*layers, model]
                  for metric, value in noise_statistics(n, total, mean_sq).items()),
                ("model", "grad_noise_coverage", covered / max(self.n_params, 1))]


def noise_statistics(batch_size: int, sum_sq_norms: float, mean_sq_norm: float) -> dict[str, float]:
    """The :data:`METRICS` from B, Σ_i ‖g_i‖² and ‖ḡ‖² (see the module docstring).

    NaN where undefined (B < 2, or a zero denominator).
    """
    if batch_size < 2:
        return dict.fromkeys(METRICS, math.nan)
    # Σ‖g_i‖² ≥ B‖ḡ‖² exactly; rounding can go below when all g_i are equal.
    var_trace = max(sum_sq_norms - batch_size * mean_sq_norm, 0.0) / (batch_size - 1)
    signal = mean_sq_norm - var_trace / batch_size
    return {"grad_var_trace": var_trace, "grad_mean_sq_norm": mean_sq_norm, "grad_signal": signal,
            "grad_snr": signal / var_trace if var_trace > 0 else math.nan,
            "grad_noise_scale": var_trace / signal if signal != 0 else math.nan}


def noise_profile(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-layer gradient signal-to-noise ratio over training, from the ``grad_noise`` probe's rows.

    One mini-batch's bias-corrected signal ‖ḡ‖² − trΣ/B is noisy and can be negative, so the ratio
    is taken of means over seeds: SNR = mean(grad_signal) / mean(grad_var_trace) per step and
    layer (and its inverse is the noise scale trΣ / signal).

    Args:
        metrics: tidy run metrics (``seed, step, layer, metric, value`` among the columns) of
            runs of one condition; every layer the probe measured is kept, ``"model"`` included.

    Returns:
        ``step, layer, snr, n`` (n seeds), sorted by step and layer; empty when the runs did not
        record the probe.
    """
    sub = metrics[metrics["metric"].isin(["grad_signal", "grad_var_trace"])]
    if sub.empty:
        return pd.DataFrame(columns=["step", "layer", "snr", "n"])
    wide = sub.pivot_table(index=["step", "layer", "seed"], columns="metric", values="value").reset_index()
    out = wide.groupby(["step", "layer"], sort=True).agg(
        signal=("grad_signal", "mean"), noise=("grad_var_trace", "mean"), n=("seed", "nunique")).reset_index()
    return pd.DataFrame({"step": out["step"], "layer": out["layer"], "snr": out["signal"] / out["noise"],
                         "n": out["n"]})
