"""When things happen: probe steps, the learning rate of each update, the data order."""

from __future__ import annotations

import math

import pytest
import torch

from analysis_lib.training.config import ProbeConfig
from analysis_lib.training.schedules import batches, order_seed, probe_steps, warmup_cosine


@pytest.mark.parametrize("config, steps, expected", [
    (ProbeConfig(schedule="every", every=5), 12, [0, 5, 10, 12]),
    (ProbeConfig(schedule="every", every=4), 12, [0, 4, 8, 12]),
    (ProbeConfig(schedule="log", points=4), 100, [0, 1, 10, 100]),
    (ProbeConfig(schedule="log", points=4), 0, [0]),
    (ProbeConfig(schedule="every", every=5), 0, [0]),
])
def test_probe_steps(config, steps, expected):
    assert probe_steps(config, steps) == expected


def test_warmup_is_linear_then_constant():
    lr_at = warmup_cosine(0.2, 4, 100)
    assert [lr_at(s) for s in (1, 2, 4, 5, 100)] == pytest.approx([0.05, 0.1, 0.2, 0.2, 0.2])
    assert warmup_cosine(0.3, 0, 10)(7) == 0.3  # exactly the rate, not a rounded product


def test_cosine_decay_ends_at_the_final_fraction():
    lr_at = warmup_cosine(1.0, 10, 110, final_fraction=0.1)
    assert lr_at(10) == pytest.approx(1.0)
    assert lr_at(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110) == pytest.approx(0.1)


def test_batches_cover_each_epoch_once_and_full_batch():
    gen = batches(10, 3, seed=0, device="cpu")
    epoch = torch.cat([next(gen) for _ in range(3)])  # 3 batches of 3; the ragged 10th is dropped
    assert len(set(epoch.tolist())) == 9
    full = batches(10, 0, seed=0, device="cpu")
    assert next(full).tolist() == list(range(10))


def test_order_streams_differ_by_seed_and_phase():
    assert order_seed(0) == 17 and order_seed(1) == 1_000_020 and order_seed(1, 1) == 1_000_032
