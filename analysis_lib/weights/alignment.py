"""Alignment of first-layer neurons with the class means of binary data, and the data's separation.

For a first layer with weights W (h × d; row w_j is neuron j's incoming weights) and binary
training inputs x_i with labels in {0, 1}, let x̄₊ be the mean of the inputs of class 1 (the
positive class) and x̄₋ the mean of the inputs of class 0. Neuron j's alignments are
cos(w_j, x̄₊) and cos(w_j, x̄₋); it is *aligned above τ* when max(cos(w_j, x̄₊), cos(w_j, x̄₋)) ≥ τ.
Min, Mallada & Vidal (2024), "Early Neuron Alignment in Two-layer ReLU Networks with Small
Initialization" (ICLR 2024), show that under small initialisation the neurons of a two-layer ReLU
network turn towards the positive or the negative data early in training, before their norms grow.

The data's *angular separation* (their μ) is the smallest cosine between label-signed inputs,
μ = min_{i,j} ⟨ỹ_i x_i, ỹ_j x_j⟩ / (‖x_i‖ ‖x_j‖) with ỹ = +1 for class 1 and −1 for class 0: μ > 0
means every pair of same-class inputs is at an acute angle and every pair across classes at an
obtuse one.

A neuron or mean of zero norm has cosine 0 with everything (it points nowhere).
"""

from __future__ import annotations

import math

import torch

FRACTIONS = (0.5, 0.75, 0.9, 1.0)  # the neuron fractions whose alignment levels are summarised


def _check_binary(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 2 or y.dim() != 1 or len(x) != len(y):
        raise ValueError(f"need inputs (n, d) and labels (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    labels = set(torch.unique(y).tolist())
    if not labels <= {0, 1} or len(labels) < 2:
        raise ValueError(f"need binary labels with both classes 0 and 1 present, got {sorted(labels)}")


def class_means(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The means x̄₊ (class 1) and x̄₋ (class 0) of binary inputs.

    Args:
        x: (n, d) inputs. y: (n,) labels in {0, 1}, both present.

    Returns:
        (x̄₊, x̄₋), each (d,), in the dtype of ``x``.

    Raises:
        ValueError: shapes disagree or the labels are not binary with both classes present.
    """
    _check_binary(x, y)
    return x[y == 1].mean(dim=0), x[y == 0].mean(dim=0)


def _cosines(rows: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(rows, dim=1) * torch.linalg.vector_norm(direction)
    dots = rows @ direction
    return torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), torch.zeros_like(dots))


def neuron_alignment(weight: torch.Tensor, positive: torch.Tensor,
                     negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(w_j, x̄₊) and cos(w_j, x̄₋) for every neuron j (row of ``weight``).

    Args:
        weight: (h, d) first-layer weights. positive, negative: (d,) the class means x̄₊, x̄₋.

    Returns:
        (cos₊, cos₋), each (h,); 0 for a zero-norm row or mean.

    Raises:
        ValueError: the shapes do not match.
    """
    if weight.dim() != 2 or positive.shape != (weight.shape[1],) or negative.shape != (weight.shape[1],):
        raise ValueError(f"need weight (h, d) and means (d,), got {tuple(weight.shape)}, "
                         f"{tuple(positive.shape)} and {tuple(negative.shape)}")
    return _cosines(weight, positive), _cosines(weight, negative)


def alignment_level(best: torch.Tensor, fraction: float) -> float:
    """The largest τ such that at least ``fraction`` of the neurons have max cosine ≥ τ.

    That is the ⌈fraction · h⌉-th largest of ``best``: "a fraction f of the neurons is aligned
    above τ" holds exactly when this level is ≥ τ.

    Args:
        best: (h,) each neuron's max(cos₊, cos₋). fraction: in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    k = max(1, math.ceil(round(fraction * len(best), 9)))  # rounded: 0.7 * 10 is 7.000000000000001
    return float(torch.sort(best, descending=True).values[k - 1])


def alignment_summary(cos_pos: torch.Tensor, cos_neg: torch.Tensor, *, threshold: float = 0.9,
                      fractions: tuple[float, ...] = FRACTIONS) -> dict[str, float]:
    """Per-step summary of the neurons' alignments.

    Args:
        cos_pos, cos_neg: (h,) from :func:`neuron_alignment`.
        threshold: τ of ``aligned_fraction``.
        fractions: the f of the ``alignment_f{100 f}`` levels.

    Returns:
        ``alignment_mean`` (mean over neurons of max(cos₊, cos₋)), ``aligned_fraction`` (the
        share of neurons with max cosine ≥ ``threshold``), ``aligned_positive`` (the share with
        cos₊ > cos₋), and for each f ``alignment_f{round(100 f)}``, :func:`alignment_level`.
    """
    best = torch.maximum(cos_pos, cos_neg)
    out = {"alignment_mean": float(best.mean()), "aligned_fraction": float((best >= threshold).double().mean()),
           "aligned_positive": float((cos_pos > cos_neg).double().mean())}
    for f in fractions:
        out[f"alignment_f{round(100 * f)}"] = alignment_level(best, f)
    return out


def angular_separation(x: torch.Tensor, y: torch.Tensor) -> float:
    """μ = min_{i,j} ⟨ỹ_i x_i, ỹ_j x_j⟩ / (‖x_i‖ ‖x_j‖), ỹ = 2y − 1 (module docstring).

    Computed in float64 over all n² pairs (the diagonal gives 1, so μ ≤ 1).

    Args:
        x: (n, d) inputs, none of zero norm. y: (n,) labels in {0, 1}, both present.

    Raises:
        ValueError: the labels are not binary, or an input has zero norm.
    """
    _check_binary(x, y)
    x = x.double()
    norms = torch.linalg.vector_norm(x, dim=1)
    if (norms == 0).any():
        raise ValueError("an input of zero norm has no angle with the others")
    signed = (2.0 * y.double() - 1.0).unsqueeze(1) * x / norms.unsqueeze(1)
    return float((signed @ signed.T).min())
