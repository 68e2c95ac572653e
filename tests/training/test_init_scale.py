"""``model.init_scale`` multiplies the default initialisation, is validated, and keeps existing run ids."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis_lib.runs.store import run_id
from analysis_lib.training.config import DataConfig, ModelConfig, RunConfig
from analysis_lib.training.models import build_model
from analysis_lib.validation import ConfigError


@pytest.mark.parametrize("kind, extra", [("mlp", {"norm": "layer"}), ("cnn", {"norm": "batch"})])
def test_every_linear_and_conv_parameter_is_the_default_times_the_scale(kind, extra):
    base = build_model(ModelConfig(kind=kind, depth=2, width=6, **extra), 12, 3, seed=4)
    small = build_model(ModelConfig(kind=kind, depth=2, width=6, init_scale=1e-3, **extra), 12, 3, seed=4)
    scaled = 0
    for (name, p), (_, q), module in zip(base.named_parameters(), small.named_parameters(),
                                         [m for m in base.modules() for _ in m.parameters(recurse=False)]):
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            torch.testing.assert_close(q.double(), 1e-3 * p.double(), rtol=1e-6, atol=0.0)
            scaled += 1
        else:  # normalisation layers keep gain 1 and shift 0
            assert torch.equal(p, q), name
    assert scaled == 6  # two hidden layers and the output layer, weight and bias each


def test_the_default_scale_leaves_the_weights_bit_identical():
    a = build_model(ModelConfig(depth=1, width=5), 4, 2, seed=0)
    b = build_model(ModelConfig(depth=1, width=5, init_scale=1.0), 4, 2, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("value", [0.0, -1e-3, float("nan"), "small", True])
def test_init_scale_must_be_a_positive_number(value):
    with pytest.raises(ConfigError, match="model.init_scale"):
        ModelConfig(init_scale=value)


def test_init_scale_leaves_existing_run_ids_unchanged():
    # ids computed before init_scale existed (commit 6c70fbb)
    assert run_id(RunConfig()) == "d9dad723cd158633"
    assert run_id(RunConfig(data=DataConfig(name="gaussian_mixture", n_features=7))) == "419a9f3b44fc4c96"
    assert run_id(RunConfig(model=ModelConfig(init_scale=1.0))) == "d9dad723cd158633"
    assert run_id(RunConfig(model=ModelConfig(init_scale=1e-3))) != run_id(RunConfig())
