"""Datasets are local, seeded and standardised; models have named layers and seeded init."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from analysis_lib.config import DataConfig, ModelConfig
from analysis_lib.data import load_dataset
from analysis_lib.models import build_model, layer_names, layer_of


@pytest.mark.parametrize("config, n_features", [
    (DataConfig(name="mnist1d", n_train=300, n_test=100), 40),
    (DataConfig(name="digits", n_train=300, n_test=100), 64),
    (DataConfig(name="gaussian_mixture", n_train=300, n_test=100, n_classes=4, n_features=7), 7),
])
def test_shapes_split_and_standardisation(config, n_features):
    ds = load_dataset(config)
    assert ds.x_train.shape == (300, n_features) and ds.x_test.shape == (100, n_features)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert int(ds.y_train.max()) < ds.n_classes
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(n_features), atol=1e-4)


def test_split_is_seeded_and_leaves_global_rngs_alone():
    states = (np.random.get_state()[1].copy(), random.getstate(), torch.random.get_rng_state())
    a = load_dataset(DataConfig(n_train=200, n_test=50, split_seed=3), cache=False)
    assert np.array_equal(states[0], np.random.get_state()[1]) and states[1] == random.getstate()
    assert torch.equal(states[2], torch.random.get_rng_state())
    b = load_dataset(DataConfig(n_train=200, n_test=50, split_seed=3))
    c = load_dataset(DataConfig(n_train=200, n_test=50, split_seed=4))
    assert torch.equal(a.x_train, b.x_train)  # cache gives what generation gives
    assert not torch.equal(a.x_train, c.x_train)


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
