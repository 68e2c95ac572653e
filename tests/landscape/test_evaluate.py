"""Batched landscape evaluation against a Python loop of functional_call (float64, eval-mode BatchNorm).

Every strategy, with a memory budget small enough to force several chunks: values, loss-only evaluation, the
caller's model left untouched, and refused arguments.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.landscape.directions import random_directions
from analysis_lib.landscape.evaluate import evaluate_params, flat_parameters
from analysis_lib.landscape.surfaces import surface_table
from tests.cases import LANDSCAPE_MODELS, landscape_problem
from tests.reference import loss_and_accuracy_at

STRATEGIES = ["inplace", "loop", "vmap"]


def _state(model: nn.Module) -> dict:
    return {"params": {n: p.detach().clone() for n, p in model.named_parameters()},
            "buffers": {n: b.clone() for n, b in model.named_buffers()},
            "modes": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()]}


def _assert_same_state(before: dict, after: dict) -> None:
    for key in ("params", "buffers"):
        for name in before[key]:
            assert torch.equal(before[key][name], after[key][name]), f"{key} {name} changed"
    assert before["modes"] == after["modes"] and before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("name", list(LANDSCAPE_MODELS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_evaluate_params_matches_a_loop_of_functional_call(name, strategy):
    model, x, y = landscape_problem(name)
    theta = flat_parameters(model)
    gen = torch.Generator().manual_seed(3)
    points = theta + 0.3 * torch.randn(7, theta.numel(), generator=gen, dtype=torch.float64)
    # A tiny memory budget forces several data batches and point chunks.
    out = evaluate_params(model, points, (x, y), strategy=strategy, memory_mb=0.002)
    for g in range(len(points)):
        loss, acc = loss_and_accuracy_at(model, points[g], x, y)
        assert out["loss"][g].item() == pytest.approx(loss, rel=1e-12, abs=1e-12)
        assert out["acc"][g].item() == pytest.approx(acc, rel=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_model_is_not_mutated(strategy):
    model, x, y = landscape_problem("mlp-batchnorm")
    model.train()
    model.norm1.eval()  # a mixed state must come back as it was
    F.cross_entropy(model(x), y).backward()  # .grad present and must stay
    with torch.no_grad():  # the forward above moved the running statistics; record after it
        before = _state(model)
    points = flat_parameters(model) + torch.ones(3, flat_parameters(model).numel(), dtype=torch.float64)
    evaluate_params(model, points, (x, y), strategy=strategy)
    surface_table(model, {"train": (x, y)}, seeds=[0], dims=2, steps=3, strategy=strategy)
    _assert_same_state(before, _state(model))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_loss_only_evaluation_gives_the_same_loss(strategy):
    model, x, y = landscape_problem("cnn-batchnorm")
    points = flat_parameters(model) + 0.1 * random_directions(model, 0, k=3)
    both = evaluate_params(model, points, (x, y), strategy=strategy, memory_mb=0.002)
    loss_only = evaluate_params(model, points, (x, y), strategy=strategy, memory_mb=0.002, metrics=("loss",))
    assert list(loss_only) == ["loss"]
    torch.testing.assert_close(loss_only["loss"], both["loss"], rtol=0, atol=0)


def test_bad_arguments_raise():
    model, x, y = landscape_problem("mlp-batchnorm")
    with pytest.raises(ValueError, match="points"):
        evaluate_params(model, torch.zeros(2, 5, dtype=torch.float64), (x, y))
    with pytest.raises(ValueError, match="strategy"):
        evaluate_params(model, flat_parameters(model), (x, y), strategy="fast")
