"""Statistics of hidden states, hidden units, output logits and activation gradients.

Pure functions of tensors, computed in float64 whatever the input's dtype. A *hidden state*
``h`` is a block's output, shape (..., d) (e.g. (B, T, d): batch, tokens, features); the
statistics below pool every entry of it (all tokens and all features) unless said otherwise:

- RMS: sqrt(mean h²); variance: mean (h − mean h)² (population variance of all entries);
- growth ratio between consecutive layers: RMS(h_l) / RMS(h_{l−1});
- massive-activation ratio: max |h| / median |h| (Sun et al., "Massive Activations in Large
  Language Models", 2024, report the largest magnitudes against the median one);
- excess kurtosis: m₄ / m₂² − 3 with central moments m_k = mean (h − mean h)^k (0 for a normal
  distribution; outlier features raise it: Bondarenko et al. 2023; He et al. 2024);
- dead units: a unit is dead on a batch when its pre-activation (or its ReLU/GELU output: both
  are positive exactly where the pre-activation is) is never positive over the batch;
- output log-partition log Z = logsumexp_v z_v per token (Chowdhery et al. 2022 (PaLM) and
  Wortsman et al. 2023 track its drift; z-loss penalises (log Z)²);
- activation-gradient norm ‖∂L/∂h_l‖₂, the Frobenius norm of the loss's gradient with respect to
  a whole hidden state (every token and feature of the batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..validation import fail


def _flat(name: str, h: torch.Tensor) -> torch.Tensor:
    """``h`` as a float64 vector of all its entries; refuses an empty or non-floating tensor."""
    if not torch.is_tensor(h) or not torch.is_floating_point(h) or h.numel() == 0:
        fail(name, getattr(h, "shape", h), "must be a non-empty floating-point tensor")
    return h.detach().reshape(-1).double()


def hidden_rms(h: torch.Tensor) -> float:
    """Root mean square of every entry of a hidden state: sqrt(mean_{tokens, features} h²).

    Args:
        h: hidden state (..., d), any floating dtype.

    Returns:
        The RMS in float64.

    Raises:
        ConfigError: ``h`` is empty or not floating point.
    """
    x = _flat("h", h)
    return float(x.square().mean().sqrt())


def hidden_variance(h: torch.Tensor) -> float:
    """Population variance of every entry of a hidden state: mean (h − mean h)².

    Args:
        h: hidden state (..., d).

    Returns:
        The variance in float64 (divisor n, not n − 1).

    Raises:
        ConfigError: ``h`` is empty or not floating point.
    """
    x = _flat("h", h)
    return float((x - x.mean()).square().mean())


def growth_ratios(rms: list[float]) -> list[float]:
    """RMS(h_l) / RMS(h_{l−1}) for consecutive entries of ``rms`` (one fewer than given).

    Args:
        rms: RMS of the hidden states in forward order (e.g. the first block's input, then
            every block's output).

    Returns:
        ``len(rms) − 1`` ratios; ``inf`` (or NaN for 0/0) where the earlier RMS is 0.

    Raises:
        ConfigError: fewer than two values.
    """
    if len(rms) < 2:
        fail("rms", rms, "must hold at least two RMS values (consecutive layers)")
    out = []
    for before, after in zip(rms[:-1], rms[1:]):
        out.append(after / before if before != 0 else (float("nan") if after == 0 else float("inf")))
    return out


def _median(a: torch.Tensor) -> torch.Tensor:
    """Median of a non-empty vector: the middle value, or the mean of the two middle ones.

    By selection, not a full sort: ``numpy.partition`` for a CPU tensor (ten times faster than
    ``torch.kthvalue`` there), else ``kthvalue``. For an even count n the upper middle value is
    the smallest entry of the upper part; the lower one its largest entry below.
    """
    n = a.numel()
    k = n // 2
    if a.device.type == "cpu":
        part = np.partition(a.numpy(), k)  # part[k] is the (k+1)-th smallest; part[:k] are the k below it
        upper = float(part[k])
        return torch.tensor(upper if n % 2 else (float(part[:k].max()) + upper) / 2, dtype=torch.float64)
    return _median_selected(a)


def _median_selected(a: torch.Tensor) -> torch.Tensor:
    """:func:`_median` by ``torch.kthvalue`` (any device)."""
    n, k = a.numel(), a.numel() // 2
    lower = a.kthvalue((n + 1) // 2).values
    if n % 2:
        return lower.double()
    upper = lower if int((a <= lower).sum()) >= k + 1 else torch.where(a > lower, a, a.max()).min()
    return (lower.double() + upper.double()) / 2


def _massive_ratio(a: torch.Tensor) -> float:
    top = float(a.max())
    if math.isnan(top):
        return math.nan
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()  # numpy has no bfloat16; the conversion is exact
    median = float(_median(a))
    if median == 0:
        return float("nan") if top == 0 else float("inf")
    return top / median


def massive_activation_ratio(h: torch.Tensor) -> float:
    """The ratio max |h| / median |h| over every entry of a hidden state (Sun et al. 2024).

    The median of an even number of values is the mean of the two middle ones. Maximum and
    median are exact in the input's dtype (they select entries); the ratio is taken in float64.

    Args:
        h: hidden state (..., d).

    Returns:
        The ratio in float64; ``inf`` when the median magnitude is 0 and the maximum is not.

    Raises:
        ConfigError: ``h`` is empty or not floating point.
    """
    _flat("h", h[..., :1] if h.dim() else h)  # validation only
    return _massive_ratio(h.detach().reshape(-1).abs())


def excess_kurtosis(h: torch.Tensor) -> float:
    """Excess kurtosis m₄ / m₂² − 3 of every entry of ``h`` (population central moments).

    0 for a normal distribution, 3 for a Laplace, −1.2 for a uniform one.

    Args:
        h: any non-empty floating tensor (all its entries are pooled).

    Returns:
        The excess kurtosis in float64; NaN when every entry is equal (m₂ = 0).

    Raises:
        ConfigError: ``h`` is empty or not floating point.
    """
    x = _flat("h", h)
    c = x - x.mean()
    m2 = c.square().mean()
    if m2 == 0:
        return float("nan")
    return float(c.pow(4).mean() / m2.square() - 3.0)


def dead_unit_fraction(pre: torch.Tensor) -> float:
    """Fraction of units (last dimension) never positive over every other index of ``pre``.

    Args:
        pre: pre-activations, or ReLU/GELU outputs, (..., units): each unit's values over the
            batch and tokens.

    Returns:
        (number of units j with max pre[..., j] ≤ 0) / units.

    Raises:
        ConfigError: ``pre`` is empty, not floating point or 0-dimensional.
    """
    if not torch.is_tensor(pre) or not torch.is_floating_point(pre) or pre.dim() == 0 or pre.numel() == 0:
        fail("pre", getattr(pre, "shape", pre), "must be a non-empty floating tensor (..., units)")
    alive = pre.detach().reshape(-1, pre.shape[-1]).amax(dim=0) > 0
    return float(1.0 - alive.double().mean())


def log_partition(logits: torch.Tensor) -> torch.Tensor:
    """The log-partition log Z = logsumexp_v z_v of each token's output logits, in float64.

    Args:
        logits: (..., V) output logits.

    Returns:
        (...) float64 log-partition per token.

    Raises:
        ConfigError: ``logits`` is empty, 0-dimensional or not floating point.
    """
    if not torch.is_tensor(logits) or not torch.is_floating_point(logits) or logits.dim() == 0 or logits.numel() == 0:
        fail("logits", getattr(logits, "shape", logits), "must be a non-empty floating tensor (..., V)")
    return torch.logsumexp(logits.detach().double(), dim=-1)


def log_partition_stats(logits: torch.Tensor) -> dict[str, float]:
    """Mean and max over tokens of log Z (:func:`log_partition`), and the mean of (log Z)².

    Returns:
        ``{"log_z_mean", "log_z_max", "log_z_sq_mean"}`` (float64); the last is the z-loss
        term's value before its coefficient.
    """
    z = log_partition(logits)
    return {"log_z_mean": float(z.mean()), "log_z_max": float(z.max()), "log_z_sq_mean": float(z.square().mean())}


def gradient_norm(grad: torch.Tensor) -> float:
    """‖g‖₂ over every entry of an activation gradient ∂L/∂h (float64).

    Raises:
        ConfigError: ``grad`` is empty or not floating point.
    """
    return float(_flat("grad", grad).norm())


def hidden_state_stats(h: torch.Tensor) -> dict[str, float]:
    """Every hidden-state statistic of the module docstring for one layer, from one float64 copy.

    Returns:
        ``{"rms", "variance", "massive_ratio", "kurtosis"}`` (float64), equal to
        :func:`hidden_rms`, :func:`hidden_variance`, :func:`massive_activation_ratio` and
        :func:`excess_kurtosis` of ``h``.

    Raises:
        ConfigError: ``h`` is empty or not floating point.
    """
    x = _flat("h", h)
    c = x - x.mean()
    c2 = c.square()
    m2 = c2.mean()
    kurtosis = float(c2.square().mean() / m2.square() - 3.0) if m2 != 0 else float("nan")
    return {"rms": float(x.square().mean().sqrt()), "variance": float(m2),
            "massive_ratio": _massive_ratio(h.detach().reshape(-1).abs()), "kurtosis": kurtosis}
