"""Statistics of attention patterns and attention logits, per head, in float64.

Shapes: attention probabilities ``probs`` and logits ``scores`` are (B, H, T_q, T_k), with a
masked key's logit −inf and its probability 0 (as
:class:`analysis_lib.lm.transformer.Attention` computes them).

- Attention entropy of query i: H_i = −Σ_j a_ij log a_ij (0 log 0 = 0); per head, the mean over
  the batch and the queries. Under a causal mask query i (0-based) sees i + 1 keys, so its
  largest possible entropy, that of the uniform pattern, is log(i + 1): reported as the mean of
  log(n_i) over queries (n_i the keys query i sees), and H_i / log(n_i) averaged over the
  queries that see more than one key (the normalised entropy, in [0, 1]). Entropy collapse, the
  attention concentrating on few keys, accompanies training instabilities (Zhai et al.,
  "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", 2023).
- Maximum attention logit q·k / √d_head per head, over the batch and every unmasked
  (query, key) pair; its growth is the instability that qk-layernorm removes (Dehghani et al.
  2023; Wortsman et al., "Small-scale proxies for large-scale Transformer training
  instabilities", 2023).
"""

from __future__ import annotations

import torch

from ..validation import fail


def _check4(name: str, x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not torch.is_floating_point(x) or x.dim() != 4 or x.numel() == 0:
        fail(name, getattr(x, "shape", x), "must be a non-empty floating tensor (B, H, T_q, T_k)")


def keys_seen(scores: torch.Tensor) -> torch.Tensor:
    """n_i: the number of unmasked (finite-logit) keys of each query, (B, H, T_q) long.

    Raises:
        ConfigError: ``scores`` is not (B, H, T_q, T_k) floating point.
    """
    _check4("scores", scores)
    return torch.isfinite(scores).sum(dim=-1)


def query_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H_i = −Σ_j a_ij log a_ij of each query, (B, H, T_q) float64 (0 log 0 = 0).

    Each term −a log a is computed in the input's dtype (a relative error of about one rounding,
    6e-8 in float32), as −a log max(a, tiny) (tiny the dtype's smallest normal number: exact for
    a ≥ tiny, 0 for a = 0, and NaN stays NaN), the sum over keys in float64.

    Raises:
        ConfigError: ``probs`` is not (B, H, T_q, T_k) floating point.
    """
    _check4("probs", probs)
    p = probs.detach()
    return -(p * p.clamp_min(torch.finfo(p.dtype).tiny).log()).sum(dim=-1, dtype=torch.float64)


def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per head, the mean over the batch and queries of H_i (:func:`query_entropy`), (H,) float64."""
    return query_entropy(probs).mean(dim=(0, 2))


def uniform_entropy(n_keys: torch.Tensor) -> torch.Tensor:
    """Per head, the mean over batch and queries of log n_i, the entropy of a uniform pattern, (H,).

    Args:
        n_keys: (B, H, T_q) keys seen by each query (:func:`keys_seen`); each at least 1.

    Raises:
        ConfigError: a query sees no key.
    """
    if (n_keys < 1).any():
        fail("n_keys", int(n_keys.min()), "every query must see at least one key")
    return n_keys.double().log().mean(dim=(0, 2))


def normalised_attention_entropy(probs: torch.Tensor, n_keys: torch.Tensor) -> torch.Tensor:
    """Per head, the mean of H_i / log n_i over the queries that see n_i > 1 keys, (H,) float64.

    1 for a uniform pattern, 0 for a one-hot one; NaN for a head where no query sees two keys.

    Raises:
        ConfigError: ``n_keys`` is not of shape (B, H, T_q) of ``probs``.
    """
    return _normalised(query_entropy(probs), n_keys)


def _normalised(h: torch.Tensor, n_keys: torch.Tensor) -> torch.Tensor:
    if tuple(n_keys.shape) != tuple(h.shape):
        fail("n_keys", tuple(n_keys.shape), f"must have the shape (B, H, T_q) = {tuple(h.shape)} of probs")
    many = n_keys > 1
    ratio = torch.where(many, h / n_keys.double().clamp(min=2).log(), torch.zeros_like(h))
    count = many.sum(dim=(0, 2)).double()
    return ratio.sum(dim=(0, 2)) / count  # 0/0 = NaN where no query sees two keys


def max_attention_logit(scores: torch.Tensor) -> torch.Tensor:
    """Per head, max over the batch and unmasked (query, key) pairs of q·k / √d_head, (H,) float64.

    Args:
        scores: the scaled logits (B, H, T_q, T_k), masked entries −inf.

    Raises:
        ConfigError: ``scores`` is not (B, H, T_q, T_k) floating point.
    """
    _check4("scores", scores)
    return scores.detach().amax(dim=(0, 2, 3)).double()  # a maximum is exact in any dtype


def attention_stats(scores: torch.Tensor, probs: torch.Tensor,
                    n_keys: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every statistic of the module docstring per head, from one attention layer's logits and probabilities.

    Args:
        scores: (B, H, T_q, T_k) scaled logits, masked entries −inf.
        probs: (B, H, T_q, T_k) their softmax.
        n_keys: (B, H, T_q) keys seen by each query, when known (e.g. a causal mask shared by
            every sequence and head, expanded); by default :func:`keys_seen` of ``scores``.

    Returns:
        ``{"attn_entropy", "attn_entropy_uniform", "attn_entropy_norm", "attn_logit_max"}``, each (H,).

    Raises:
        ConfigError: ``scores`` and ``probs`` differ in shape.
    """
    if tuple(scores.shape) != tuple(probs.shape):
        fail("probs", tuple(probs.shape), f"must have the shape of scores, {tuple(scores.shape)}")
    n = keys_seen(scores) if n_keys is None else n_keys
    h = query_entropy(probs)
    return {"attn_entropy": h.mean(dim=(0, 2)), "attn_entropy_uniform": uniform_entropy(n),
            "attn_entropy_norm": _normalised(h, n), "attn_logit_max": max_attention_logit(scores)}
