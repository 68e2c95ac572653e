"""Losses on model outputs, each a mean over the samples of a batch.

Every training loss here is the mean over samples of a per-sample loss, which is what the
per-sample gradient-noise probe and the chunked Hessian operator assume (a chunk of m of N
samples carries weight m / N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_losses(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None,
                    reduction: str = "mean") -> torch.Tensor:
    """Masked cross-entropy of each sequence over its response tokens.

    Args:
        logits: (B, T, V), or (B, V) for one prediction per example.
        targets: (B, T) or (B,) class indices; values where ``mask`` is False are ignored.
        mask: (B, T) or (B,) bool, True on the tokens that count; None = all tokens.
        reduction: ``"mean"`` over each sequence's response tokens or their ``"sum"``.

    Returns:
        (B,) per-sequence losses; the mean of a sequence without response tokens is NaN.
    """
    if logits.dim() == 2:
        logits, targets = logits.unsqueeze(1), targets.unsqueeze(1)
        mask = None if mask is None else mask.unsqueeze(1)
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    safe = torch.where(mask, targets, torch.zeros_like(targets))  # padding ids may be out of range
    ce = F.cross_entropy(logits.flatten(0, 1), safe.flatten(), reduction="none").view_as(safe)
    total = (ce * mask).sum(dim=1)  # (B,)
    return total if reduction == "sum" else total / mask.sum(dim=1)


def masked_sequence_loss(logits: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean over sequences of each sequence's mean cross-entropy on its masked tokens.

    The training loss of the tiny transformer, in the ``loss_fn(outputs, targets)`` form the
    curvature operators take: ``targets`` is the pair ``(token targets (B, T), mask (B, T))``.
    """
    tokens, mask = targets
    return sequence_losses(logits, tokens, mask, "mean").mean()
