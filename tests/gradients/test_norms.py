"""Gradient probes in a run: per-layer gradient norms against a manual autograd loop, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.training.schedules import batches, order_seed


def test_gradient_norms_match_a_manual_autograd_loop(tiny_config):
    """grad_norm at step 1 is the norm of the first mini-batch gradient at θ(0), per layer and tensor."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.every": 1, "train.steps": 1})
    metrics = train_classifier(config).metrics
    recorded = metrics[(metrics["step"] == 1) & metrics["metric"].str.startswith("grad_norm")]

    data = config.dataset()
    model = config.build_model()
    idx = next(batches(len(data.y_train), config.train.batch_size, order_seed(config.seed), "cpu"))
    loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params)
    manual = {}
    for name, g in zip(names, grads):
        layer, kind = name.rsplit(".", 1)
        manual[(layer, f"grad_norm.{kind}")] = g.norm().item()
        manual[(layer, "grad_norm")] = math.hypot(manual.get((layer, "grad_norm"), 0.0), g.norm().item())
    manual[("model", "grad_norm")] = math.sqrt(sum(g.pow(2).sum().item() for g in grads))
    got = {(r.layer, r.metric): r.value for r in recorded.itertuples()}
    assert set(got) == set(manual)
    for key, value in manual.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
