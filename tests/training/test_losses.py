"""Tests of analysis_lib.training.losses against a direct loop over sequences with F.cross_entropy, in float64.

sequence_losses: each sequence's cross-entropy averaged or summed over its masked tokens, one prediction per
example, a sequence without loss tokens, and padding targets outside the mask; masked_sequence_loss: the mean over
sequences of each sequence's masked mean, on the tiny transformer of tests.cases.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis_lib.training.losses import masked_sequence_loss, sequence_losses
from tests.cases import sequence_problem


def _batch(b: int = 5, t: int = 6, v: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.rand(b, t, generator=gen) < 0.5
    mask[:, 0] = True  # every sequence has a loss token
    return logits, targets, mask


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sequence_losses_match_a_loop_over_sequences(reduction):
    logits, targets, mask = _batch()
    got = sequence_losses(logits, targets, mask, reduction)
    expected = torch.stack([F.cross_entropy(logits[i][mask[i]], targets[i][mask[i]], reduction=reduction)
                            for i in range(len(logits))])
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    other = sequence_losses(logits, targets, mask, "sum" if reduction == "mean" else "mean")
    assert not torch.allclose(got, other)  # the reductions differ where a sequence has several loss tokens


def test_no_mask_counts_every_token_and_two_dimensional_logits_are_one_prediction():
    logits, targets, _ = _batch()
    full = torch.stack([F.cross_entropy(logits[i], targets[i]) for i in range(len(logits))])
    torch.testing.assert_close(sequence_losses(logits, targets, None), full, rtol=1e-12, atol=1e-14)
    flat_logits, flat_targets = logits[:, 0], targets[:, 0]  # (B, V), (B,)
    per_example = F.cross_entropy(flat_logits, flat_targets, reduction="none")
    torch.testing.assert_close(sequence_losses(flat_logits, flat_targets, None), per_example, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sequence_losses(flat_logits, flat_targets, None, "sum"), per_example, rtol=1e-12,
                               atol=1e-14)


def test_a_sequence_without_loss_tokens_has_a_nan_mean_and_a_zero_sum():
    logits, targets, mask = _batch()
    mask[2] = False
    mean, total = sequence_losses(logits, targets, mask), sequence_losses(logits, targets, mask, "sum")
    assert math.isnan(mean[2].item()) and total[2].item() == 0.0
    keep = [0, 1, 3, 4]
    assert torch.isfinite(mean[keep]).all()


def test_targets_outside_the_mask_are_ignored_even_out_of_range():
    logits, targets, mask = _batch()
    padded = torch.where(mask, targets, torch.full_like(targets, 99))  # 99 is no class index
    torch.testing.assert_close(sequence_losses(logits, padded, mask), sequence_losses(logits, targets, mask),
                               rtol=0, atol=0)


def test_masked_sequence_loss_is_the_mean_of_per_sequence_means():
    model, tokens, (targets, mask) = sequence_problem()
    logits = model(tokens)
    got = masked_sequence_loss(logits, (targets, mask))
    per_sequence = [F.cross_entropy(logits[i][mask[i]], targets[i][mask[i]]) for i in range(len(tokens))]
    expected = torch.stack(per_sequence).mean()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    assert mask.sum(1).unique().numel() > 1  # ragged: differs from the mean over all masked tokens
    pooled = F.cross_entropy(logits[mask], targets[mask])
    assert not torch.isclose(got, pooled)
    got.backward()  # a training loss: differentiable
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
