"""Losses on model outputs, each a mean over the samples of a batch.

Every training loss here is the mean over samples of a per-sample loss, which is what the
per-sample gradient-noise probe and the chunked Hessian operator assume (a chunk of m of N
samples carries weight m / N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validation import check_number


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


def log_partition(logits: torch.Tensor) -> torch.Tensor:
    """The log-partition function log Z = logsumexp over the last (class) axis: ``logits.shape[:-1]``."""
    return torch.logsumexp(logits, dim=-1)


def z_loss_terms(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sequence mean of (log Z)² over the tokens that count (the z-loss before its coefficient).

    z-loss (Chowdhery et al. 2022, "PaLM", section 5; Wortsman et al. 2023, "Small-scale proxies
    for large-scale Transformer training instabilities") penalises the squared log-partition
    function log Z = logsumexp_v z_v of the output logits z, pulling log Z towards 0 so that the
    logits cannot drift as a whole (softmax is blind to a shared shift; the loss term is not).

    Args:
        logits: (B, T, V), or (B, V) for one prediction per example.
        mask: (B, T) or (B,) bool, True on the tokens that count; None = all tokens.

    Returns:
        (B,) mean of (log Z)² over each sequence's counted tokens; NaN for a sequence without any.

    Raises:
        ValueError: if ``mask`` does not have the shape of ``logits`` without its last axis.
    """
    if logits.dim() == 2:
        logits = logits.unsqueeze(1)
        mask = None if mask is None else mask.unsqueeze(1)
    squared = log_partition(logits) ** 2  # (B, T)
    if mask is None:
        return squared.mean(dim=1)
    if tuple(mask.shape) != tuple(squared.shape):
        raise ValueError(f"invalid mask of shape {tuple(mask.shape)} for logits of shape {tuple(logits.shape)}: "
                         f"need {tuple(squared.shape)}")
    mask = mask.bool()
    # where(), not a product: an inf log Z on an ignored (padding) token must not give NaN
    return torch.where(mask, squared, torch.zeros_like(squared)).sum(dim=1) / mask.sum(dim=1)


class ZLoss:
    """``coefficient × mean over the counted tokens of (log Z)²``, for any model's logits.

    ``ZLoss(1e-4)(logits (..., V), targets (...))`` averages over every target that is not
    ``ignore_index`` (as :class:`CrossEntropy` does), so ``CrossEntropy()(z, y) + ZLoss(c)(z, y)`` is
    the z-loss-regularised objective of Chowdhery et al. (2022) and Wortsman et al. (2023) (they
    use c = 1e-4). With ``targets=None`` every position counts. See :func:`z_loss_terms`.

    Args:
        coefficient: c >= 0 (0 gives exactly zero).
        ignore_index: target value whose positions do not count.

    Raises:
        ConfigError: for a negative or non-finite coefficient.
    """

    def __init__(self, coefficient: float, ignore_index: int = -100):
        check_number("coefficient", coefficient)
        self.coefficient, self.ignore_index = float(coefficient), int(ignore_index)
        self.__name__ = f"ZLoss({self.coefficient}, ignore_index={self.ignore_index})"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The z-loss term of ``outputs`` (..., V) over the positions whose target counts."""
        squared = log_partition(outputs) ** 2  # outputs.shape[:-1]
        if targets is None:
            return self.coefficient * squared.mean()
        if tuple(targets.shape) != tuple(squared.shape):
            raise ValueError(f"invalid targets of shape {tuple(targets.shape)} for outputs of shape "
                             f"{tuple(outputs.shape)}: need {tuple(squared.shape)} (classes last)")
        keep = targets != self.ignore_index
        return self.coefficient * torch.where(keep, squared, torch.zeros_like(squared)).sum() / keep.sum()


# -- losses a curvature operator can reason about ----------------------------------------------


class CrossEntropy:
    """Mean cross-entropy with the class axis last, over any leading axes, skipping ``ignore_index``.

    ``CrossEntropy()(logits (B, T, V), tokens (B, T))`` is the token-level loss of a language
    model: the mean over every target that is not ``ignore_index``. (``F.cross_entropy`` takes
    the class axis at position 1 instead, which for (B, T, V) logits is the time axis.) Its
    output Hessian is known, so it has a Gauss–Newton matrix, and its accuracy is defined.

    Args:
        ignore_index: target value that does not count (as in ``F.cross_entropy``).
        class_axis: axis of the classes in the outputs (-1: last; 1: ``F.cross_entropy``'s).
    """

    def __init__(self, ignore_index: int = -100, class_axis: int = -1):
        self.ignore_index, self.class_axis = int(ignore_index), int(class_axis)
        self.__name__ = f"CrossEntropy(ignore_index={self.ignore_index}, class_axis={self.class_axis})"

    def _flat(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = outputs.movedim(self.class_axis, -1)
        if targets.is_floating_point():  # class probabilities, shaped like the outputs
            probs = targets.movedim(self.class_axis, -1)
            return logits.reshape(-1, logits.shape[-1]), probs.reshape(-1, logits.shape[-1])
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"invalid targets of shape {tuple(targets.shape)} for outputs of shape "
                             f"{tuple(outputs.shape)} with class axis {self.class_axis}: class-index "
                             f"targets must have shape {tuple(logits.shape[:-1])}")
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss over the targets that count."""
        logits, flat = self._flat(outputs, targets)
        return F.cross_entropy(logits, flat, ignore_index=self.ignore_index)

    def count(self, targets: torch.Tensor) -> int:
        """How many targets count towards the mean (the weight of this batch among others)."""
        if targets.is_floating_point():
            return targets.numel() // targets.shape[self.class_axis]
        return int((targets != self.ignore_index).sum())

    def accuracy(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Fraction of the counted targets whose class has the largest logit."""
        if outputs.dim() == 2 and targets.dim() == 1 and not targets.is_floating_point():  # (N, C): the fast path
            axis = self.class_axis % 2
            if targets.shape[0] != outputs.shape[1 - axis]:
                raise ValueError(f"invalid targets of shape {tuple(targets.shape)} for outputs of shape "
                                 f"{tuple(outputs.shape)} with class axis {self.class_axis}")
            correct = (outputs.argmax(axis) == targets).sum(dtype=torch.float64)  # ignored targets never match
            return correct / (targets != self.ignore_index).sum().clamp_min(1)
        logits, flat = self._flat(outputs, targets)
        if flat.is_floating_point():
            flat = flat.argmax(-1)
        keep = flat != self.ignore_index
        return ((logits.argmax(-1) == flat) & keep).sum(dtype=torch.float64) / keep.sum().clamp_min(1)


class MSE:
    """Mean squared error over every element; outputs and targets must have the same shape.

    ``F.mse_loss`` broadcasts (N, 1) outputs against (N,) targets into an (N, N) difference with
    only a warning; this loss refuses mismatched shapes instead.
    """

    __name__ = "MSE"

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of (outputs − targets)² over all elements."""
        check_same_shape(outputs, targets)
        return F.mse_loss(outputs, targets)

    def count(self, targets: torch.Tensor) -> int:
        """Number of target elements."""
        return targets.numel()


def check_same_shape(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse a squared error between tensors of different shapes (torch would broadcast them)."""
    if tuple(outputs.shape) != tuple(targets.shape):
        raise ValueError(f"invalid targets of shape {tuple(targets.shape)} for outputs of shape "
                         f"{tuple(outputs.shape)}: a squared-error loss needs equal shapes (reshape the "
                         "targets, e.g. y[:, None] for one output)")
