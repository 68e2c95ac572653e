"""Surfaces, slices and interpolation of any loss over any data, against losses computed by hand.

The reference writes each parameter vector into a private copy of the model and evaluates the loss of the
concatenated data with plain torch (squared error over all elements; token cross-entropy over the targets
that are not ignored), sharing nothing with analysis_lib's batch weights or loss recognition.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.landscape.directions import random_directions
from analysis_lib.landscape.evaluate import evaluate_params
from analysis_lib.landscape.interpolation import interpolation_barriers, interpolation_curve
from analysis_lib.landscape.surfaces import loss_surface
from analysis_lib.training.losses import CrossEntropy
from tests.custom.user_code import TinyLM


class MaskedRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(3, 5), nn.Linear(5, 2)

    def forward(self, x, scale):
        return self.out(torch.tanh(self.fc(x))) * scale[:, None]


def _regression_batches():
    gen = torch.Generator().manual_seed(0)
    sizes = (3, 8)
    return [({"x": torch.randn(n, 3, generator=gen, dtype=torch.float64),
              "scale": torch.rand(n, generator=gen, dtype=torch.float64) + 0.5},
             torch.randn(n, 2, generator=gen, dtype=torch.float64)) for n in sizes]


def _token_batches():
    gen = torch.Generator().manual_seed(1)
    out = []
    for n in (2, 5):
        tokens = torch.randint(0, 6, (n, 6), generator=gen)
        targets = torch.randint(0, 6, (n, 6), generator=gen)
        targets[torch.rand(n, 6, generator=gen) < 0.4] = -100
        out.append(({"tokens": tokens, "mask": torch.ones(n, 6, dtype=torch.float64)}, targets))
    return out


def _load(model, flat):
    clone = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(flat.to(torch.float64), clone.parameters())
    return clone.eval()


def _mse_by_hand(model, flat, batches):
    clone = _load(model, flat)
    with torch.no_grad():
        sq = sum(((clone(**i) - t) ** 2).sum() for i, t in batches)
    return (sq / sum(t.numel() for _, t in batches)).item()


def _token_ce_by_hand(model, flat, batches):
    clone = _load(model, flat)
    total, count, correct = 0.0, 0, 0
    with torch.no_grad():
        for i, t in batches:
            logp = torch.log_softmax(clone(**i), dim=-1)  # (B, T, V)
            keep = t != -100
            total += -logp[keep].gather(1, t[keep][:, None]).sum().item()
            correct += (logp[keep].argmax(-1) == t[keep]).sum().item()
            count += int(keep.sum())
    return total / count, correct / count


@pytest.mark.parametrize("strategy", ["inplace", "loop", "vmap"])
def test_regression_surface_with_dict_inputs_over_uneven_batches(strategy):
    torch.manual_seed(0)
    model = MaskedRegressor().double()
    batches = _regression_batches()
    D = random_directions(model, seed=3, k=2)
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 3)
    surface = loss_surface(model, D, batches, alphas, betas, loss_fn=F.mse_loss, strategy=strategy)
    assert set(surface["metric"]) == {"loss"}  # no accuracy for a squared error
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for row in surface.itertuples():
        expected = _mse_by_hand(model, theta + row.alpha * D[0] + row.beta * D[1], batches)
        assert row.value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("strategy", ["inplace", "loop", "vmap"])
def test_token_surface_counts_only_targets_that_are_not_ignored(strategy):
    torch.manual_seed(0)
    model = TinyLM(vocab=6, dim=6).double()  # T = V = 6: a class-axis mix-up would go unnoticed by shapes
    batches = _token_batches()
    D = random_directions(model, seed=1)
    surface = loss_surface(model, D, batches, [-0.5, 0.0, 0.5], loss_fn=CrossEntropy(), strategy=strategy)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for alpha, sub in surface.groupby("alpha"):
        loss, acc = _token_ce_by_hand(model, theta + alpha * D[0], batches)
        values = dict(zip(sub["metric"], sub["value"]))
        assert values["loss"] == pytest.approx(loss, rel=1e-12)
        assert values["acc"] == pytest.approx(acc, rel=1e-12)


def test_metrics_are_callables_used_only_where_they_make_sense():
    model = MaskedRegressor().double()
    batches = _regression_batches()
    point = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    with pytest.raises(ValueError, match="'acc' is defined for cross-entropy losses only"):
        evaluate_params(model, point, batches, F.mse_loss, metrics=("loss", "acc"))
    out = evaluate_params(model, point, batches, F.mse_loss,
                          metric_fns={"mae": lambda o, t: (o - t).abs().mean()})
    clone = _load(model, point)
    with torch.no_grad():
        mae = sum((clone(**i) - t).abs().sum() for i, t in batches) / sum(t.numel() for _, t in batches)
    assert out["mae"].item() == pytest.approx(mae.item(), rel=1e-12)
    with pytest.raises(ValueError, match="loss_fn"):
        evaluate_params(model, point, batches, "mse")
    with pytest.raises(ValueError, match="shape"):
        evaluate_params(model, point, [(i, t[:, 0]) for i, t in batches], F.mse_loss)


def test_interpolation_and_barrier_of_a_regression_loss():
    torch.manual_seed(0)
    model_a, model_b = MaskedRegressor().double(), MaskedRegressor().double()
    batches = _regression_batches()
    alphas = np.linspace(0, 1, 5)
    curve = interpolation_curve(model_a, model_a.state_dict(), model_b.state_dict(), {"train": batches},
                                loss_fn=F.mse_loss, alphas=alphas)
    assert set(curve["metric"]) == {"loss"}
    fa = torch.cat([p.detach().reshape(-1) for p in model_a.parameters()])
    fb = torch.cat([p.detach().reshape(-1) for p in model_b.parameters()])
    expected = [_mse_by_hand(model_a, (1 - a) * fa + a * fb, batches) for a in alphas]
    np.testing.assert_allclose(curve["value"].to_numpy(), expected, rtol=1e-12)
    barrier = interpolation_barriers(curve).iloc[0]
    line = (1 - alphas) * expected[0] + alphas * expected[-1]
    assert barrier["barrier"] == pytest.approx(max(0.0, float(np.max(np.array(expected) - line))), abs=1e-12)
    assert math.isfinite(barrier["alpha_max"])
