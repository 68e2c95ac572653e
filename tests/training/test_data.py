"""Datasets are local, seeded and standardised, and generating one leaves the global RNGs alone."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from analysis_lib.training.config import DataConfig
from analysis_lib.training.data import class_count, load_dataset


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


def test_class_count_without_generating():
    assert class_count(DataConfig(name="gaussian_mixture", n_classes=4)) == 4
    assert class_count(DataConfig(name="mnist1d")) == 10
