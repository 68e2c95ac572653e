"""z-loss: the (log Z)² term of Chowdhery et al. (2022) and Wortsman et al. (2023), for any logits.

Values and gradients against the formula written out here (log Σ_v exp z_v by hand, in float64),
masking and ignore_index, and refusals.
"""

from __future__ import annotations

import math

import pytest
import torch

from analysis_lib.training.losses import ZLoss, log_partition, z_loss_terms
from analysis_lib.validation import ConfigError


def _log_z(z: torch.Tensor) -> torch.Tensor:  # written out, not logsumexp: log Σ exp(z - m) + m
    m = z.max(dim=-1, keepdim=True).values
    return (z - m).exp().sum(dim=-1).log() + m.squeeze(-1)


def test_log_partition_matches_the_written_sum():
    z = torch.randn(3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    brute = torch.tensor([[math.log(sum(math.exp(v) for v in row)) for row in seq] for seq in z.tolist()],
                         dtype=torch.float64)
    torch.testing.assert_close(log_partition(z), brute, rtol=1e-12, atol=1e-12)


def test_z_loss_terms_value_and_gradient_match_autograd_of_the_formula():
    g = torch.Generator().manual_seed(1)
    z = (3 * torch.randn(4, 6, 5, dtype=torch.float64, generator=g)).requires_grad_()
    mask = torch.rand(4, 6, generator=g) < 0.6
    mask[:, 0] = True
    got = z_loss_terms(z, mask)
    grad = torch.autograd.grad(got.sum() * 0.3, z)[0]

    z_ref = z.detach().clone().requires_grad_()
    ref = torch.stack([
        sum(_log_z(z_ref[b, t]) ** 2 for t in range(6) if mask[b, t]) / int(mask[b].sum()) for b in range(4)])
    ref_grad = torch.autograd.grad(ref.sum() * 0.3, z_ref)[0]
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert (grad[~mask] == 0).all()  # masked tokens get no gradient


def test_z_loss_gradient_has_the_closed_form_2_logZ_softmax():
    # d/dz (log Z)² = 2 log Z softmax(z)
    z = torch.randn(2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    loss = ZLoss(0.5)(z)  # 0.5 × mean over the 2 rows
    grad = torch.autograd.grad(loss, z)[0]
    with torch.no_grad():
        lz = _log_z(z)
        closed = 0.5 * 2 * lz[:, None] * z.exp() / z.exp().sum(-1, keepdim=True) / 2
    torch.testing.assert_close(grad, closed, rtol=1e-12, atol=1e-12)


def test_zloss_class_averages_over_targets_that_are_not_ignored():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 4, 6, dtype=torch.float64, generator=g)
    y = torch.randint(0, 6, (3, 4), generator=g)
    y[0, 1] = y[2, 3] = -100
    z[0, 1] = float("inf")  # an ignored position may hold anything
    keep = [(b, t) for b in range(3) for t in range(4) if y[b, t] != -100]
    ref = 1e-2 * sum(float(_log_z(z[b, t])) ** 2 for b, t in keep) / len(keep)
    assert ZLoss(1e-2)(z, y).item() == pytest.approx(ref, rel=1e-12)
    assert ZLoss(0.0)(z[1:], y[1:]).item() == 0.0


def test_z_loss_is_zero_exactly_when_log_z_is_zero():
    z = torch.full((2, 4), -math.log(4.0), dtype=torch.float64)  # Z = 1
    assert ZLoss(1.0)(z).item() == pytest.approx(0.0, abs=1e-28)
    assert ZLoss(1.0)(z + 1.0).item() == pytest.approx(1.0, rel=1e-12)  # a shared shift moves log Z by it


def test_refusals():
    with pytest.raises(ConfigError, match=r"invalid parameter coefficient=-0.1"):
        ZLoss(-0.1)
    with pytest.raises(ConfigError, match=r"coefficient=nan"):
        ZLoss(float("nan"))
    with pytest.raises(ValueError, match=r"invalid targets of shape \(3,\)"):
        ZLoss(1.0)(torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"invalid mask of shape \(2, 5\)"):
        z_loss_terms(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool))
