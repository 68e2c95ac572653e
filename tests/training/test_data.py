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


def test_xor_labels_are_the_xor_of_the_first_two_signs_and_balanced():
    config = DataConfig(name="xor", n_train=402, n_test=100, n_features=5, noise=0.1)
    ds = load_dataset(config, cache=False)
    x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]).astype(np.float64)
    y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()])
    assert ds.n_classes == 2 and class_count(config) == 2 and x.shape[1] == 5
    # standardising shifts by the (near-zero) training mean, so the cluster signs survive at noise 0.1
    expected = (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64)
    assert np.array_equal(y, expected)
    counts = np.bincount(y, minlength=2)
    assert abs(counts[0] - counts[1]) <= 2  # the four quadrants take turns: balanced to a sample each
    quadrants = np.bincount((x[:, 0] > 0) * 2 + (x[:, 1] > 0), minlength=4)
    assert quadrants.max() - quadrants.min() <= 1
    assert abs(np.corrcoef(x[:, 2], y)[0, 1]) < 0.2  # the other coordinates carry no signal


def test_sparse_parity_labels_are_the_parity_of_the_first_k_and_balanced():
    config = DataConfig(name="sparse_parity", n_train=3000, n_test=1000, n_features=8, parity_k=3)
    ds = load_dataset(config, cache=False)
    x, y = ds.x_train.numpy().astype(np.float64), ds.y_train.numpy()
    assert class_count(config) == 2 and set(np.unique(np.sign(x))) == {-1.0, 1.0}
    negatives = (x[:, :3] < 0).sum(axis=1)
    assert np.array_equal(y, negatives % 2)  # odd number of -1 among the first 3 -> 1
    assert abs(y.mean() - 0.5) < 3 * 0.5 / np.sqrt(len(y))  # balanced within 3 standard errors
    for j in range(8):  # each single coordinate is uninformative (only the 3-way product is)
        assert abs(np.corrcoef(x[:, j], y)[0, 1]) < 0.1


@pytest.mark.parametrize("name", ["xor", "sparse_parity"])
def test_new_datasets_are_deterministic_by_split_seed(name):
    a = load_dataset(DataConfig(name=name, n_train=100, n_test=20, split_seed=5), cache=False)
    b = load_dataset(DataConfig(name=name, n_train=100, n_test=20, split_seed=5))
    c = load_dataset(DataConfig(name=name, n_train=100, n_test=20, split_seed=6), cache=False)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_parity_k_changes_the_labels_only():
    k2 = load_dataset(DataConfig(name="sparse_parity", n_train=200, n_test=10, n_features=6, parity_k=2), cache=False)
    k5 = load_dataset(DataConfig(name="sparse_parity", n_train=200, n_test=10, n_features=6, parity_k=5))
    assert torch.equal(k2.x_train, k5.x_train) and not torch.equal(k2.y_train, k5.y_train)


@pytest.mark.parametrize("kwargs, name", [
    ({"name": "sparse_parity", "n_features": 4, "parity_k": 5}, "data.parity_k"),
    ({"name": "sparse_parity", "parity_k": 0}, "data.parity_k"),
    ({"name": "xor", "n_features": 1}, "data.n_features"),
])
def test_new_dataset_parameters_are_validated(kwargs, name):
    from analysis_lib.validation import ConfigError

    with pytest.raises(ConfigError, match=name):
        DataConfig(**kwargs)


def test_parity_k_leaves_existing_run_ids_unchanged():
    from analysis_lib.runs.store import run_id
    from analysis_lib.training.config import RunConfig

    # ids computed before parity_k existed (commit 6c70fbb)
    assert run_id(RunConfig()) == "d9dad723cd158633"
    assert run_id(RunConfig(data=DataConfig(name="gaussian_mixture", n_features=7))) == "419a9f3b44fc4c96"
    assert run_id(RunConfig(data=DataConfig(name="sparse_parity", parity_k=2))) != run_id(
        RunConfig(data=DataConfig(name="sparse_parity", parity_k=3)))
