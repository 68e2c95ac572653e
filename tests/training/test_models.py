"""Models have named layers in forward order, seeded init that leaves the global RNG alone, and a forward pass."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.layers import layer_names, layer_of
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import build_model


@pytest.mark.parametrize("config, layers", [
    (ModelConfig(kind="mlp", depth=2), ["fc1", "fc2", "out"]),
    (ModelConfig(kind="mlp", depth=2, norm="layer"), ["fc1", "norm1", "fc2", "norm2", "out"]),
    (ModelConfig(kind="cnn", depth=3, width=4), ["conv1", "conv2", "conv3", "out"]),
    (ModelConfig(kind="cnn", depth=2, width=4, norm="batch"), ["conv1", "norm1", "conv2", "norm2", "out"]),
])
def test_named_layers_and_forward(config, layers):
    model = build_model(config, 40, 10, seed=0)
    assert layer_names(model) == layers
    assert model(torch.randn(5, 40)).shape == (5, 10)
    assert layer_of("fc1.weight") == "fc1"


def test_init_is_seeded_and_residual_changes_the_function():
    a = build_model(ModelConfig(depth=3), 40, 10, seed=1)
    b = build_model(ModelConfig(depth=3), 40, 10, seed=1)
    r = build_model(ModelConfig(depth=3, residual=True), 40, 10, seed=1)
    x = torch.randn(4, 40)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), r(x))  # same weights (same seed), different wiring
    assert not torch.equal(a(x), build_model(ModelConfig(depth=3), 40, 10, seed=2)(x))


def test_models_built_concurrently_in_threads_get_their_own_seeds():
    from concurrent.futures import ThreadPoolExecutor

    config = ModelConfig(kind="mlp", width=64, depth=3)
    seeds = list(range(16)) * 4

    def first_weight(seed):
        return build_model(config, 40, 10, seed=seed).fc1.weight.detach().clone()

    expected = {s: first_weight(s) for s in range(16)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(first_weight, seeds))
    for seed, weight in zip(seeds, got):
        assert torch.equal(weight, expected[seed]), seed
