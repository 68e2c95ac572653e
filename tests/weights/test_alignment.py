"""Neuron alignment and angular separation against direct float64 computations, and the probe on a run.

Hand-made weights and data (known cosines, a zero row, ties at the threshold), brute-force double
loops for the separation μ, and the ``neuron_alignment`` probe against the same numbers computed
from the run's stored trajectory; training is unchanged by the probe.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.training.data import load_dataset
from analysis_lib.validation import ConfigError
from analysis_lib.weights.alignment import (
    alignment_level,
    alignment_summary,
    angular_separation,
    class_means,
    neuron_alignment,
)
from tests.cases import tiny_config


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
    return 0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb)


def test_class_means_are_the_means_of_class_1_and_class_0():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0], [5.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([1, 0, 1, 0])
    positive, negative = class_means(x, y)
    assert positive.tolist() == [0.0, 1.0] and negative.tolist() == [4.0, 1.0]


def test_neuron_cosines_match_a_direct_computation_with_a_zero_row():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((6, 4))
    weight[2] = 0.0  # a neuron pointing nowhere: cosine 0 with both means
    positive, negative = rng.standard_normal(4), rng.standard_normal(4)
    cos_pos, cos_neg = neuron_alignment(torch.from_numpy(weight), torch.from_numpy(positive),
                                        torch.from_numpy(negative))
    for j in range(6):
        assert cos_pos[j].item() == pytest.approx(_cos(weight[j], positive), abs=1e-14)
        assert cos_neg[j].item() == pytest.approx(_cos(weight[j], negative), abs=1e-14)
    assert cos_pos[2] == 0.0 and cos_neg[2] == 0.0


def test_a_neuron_along_a_mean_has_cosine_one_and_its_opposite_minus_one():
    positive = torch.tensor([3.0, 4.0], dtype=torch.float64)
    negative = -positive
    weight = torch.tensor([[0.6, 0.8], [-3.0, -4.0], [4.0, -3.0]], dtype=torch.float64)
    cos_pos, cos_neg = neuron_alignment(weight, positive, negative)
    assert cos_pos.tolist() == pytest.approx([1.0, -1.0, 0.0], abs=1e-15)
    assert cos_neg.tolist() == pytest.approx([-1.0, 1.0, 0.0], abs=1e-15)


def test_summary_and_levels_match_brute_force_counts():
    cos_pos = torch.tensor([0.95, 0.2, -0.5, 0.9, 0.1, 0.3, 0.85, -1.0], dtype=torch.float64)
    cos_neg = torch.tensor([-0.9, 0.97, 0.92, -0.8, 0.0, 0.1, 0.2, 0.99], dtype=torch.float64)
    best = np.maximum(cos_pos.numpy(), cos_neg.numpy())  # 0.95 0.97 0.92 0.9 0.1 0.3 0.85 0.99
    s = alignment_summary(cos_pos, cos_neg, threshold=0.9)
    assert s["alignment_mean"] == pytest.approx(best.mean(), abs=1e-15)
    assert s["aligned_fraction"] == 5 / 8  # 0.9 itself counts (>= threshold)
    assert s["aligned_positive"] == 5 / 8  # cos+ > cos-: neurons 0, 3, 4, 5, 6
    # sorted: 0.99 0.97 0.95 0.92 0.9 0.85 0.3 0.1; the ceil(f * 8)-th largest
    assert s["alignment_f50"] == 0.92 and s["alignment_f75"] == 0.85
    assert s["alignment_f90"] == 0.1 and s["alignment_f100"] == 0.1  # ceil(7.2) = 8
    for tau in np.linspace(-1, 1, 81):  # "fraction f aligned above tau" <=> level >= tau
        for f in (0.5, 0.75, 0.9, 1.0):
            assert ((best >= tau).mean() >= f) == (alignment_level(torch.from_numpy(best), f) >= tau)


def test_angular_separation_is_the_smallest_signed_cosine_over_all_pairs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3)) + np.array([2.0, 0.0, 0.0])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1])
    x[y == 0] *= -1  # two clusters around +-e1
    signed = (2 * y - 1)[:, None] * x
    mu = min(_cos(signed[i], signed[j]) for i in range(9) for j in range(9))
    assert angular_separation(torch.from_numpy(x).float(), torch.from_numpy(y)) == pytest.approx(mu, abs=1e-6)
    assert angular_separation(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(mu, abs=1e-14)
    mixed = torch.tensor([[1.0, 0.0], [1.0, 0.1]]), torch.tensor([1, 0])  # same direction, opposite labels
    assert angular_separation(*mixed) == pytest.approx(-_cos(np.array([1.0, 0.0]), np.array([1.0, 0.1])), abs=1e-7)


@pytest.mark.parametrize("call", [
    lambda: class_means(torch.zeros(3, 2), torch.tensor([0, 1, 2])),
    lambda: class_means(torch.zeros(3, 2), torch.tensor([1, 1, 1])),
    lambda: angular_separation(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])),
    lambda: neuron_alignment(torch.zeros(2, 3), torch.zeros(2), torch.zeros(3)),
    lambda: alignment_level(torch.zeros(3), 0.0),
])
def test_bad_inputs_are_refused(call):
    with pytest.raises(ValueError):
        call()


def _binary(**sections):
    return tiny_config(data={"n_classes": 2, "noise": 0.3}, model={"depth": 1, "width": 7, "init_scale": 0.01},
                       **sections)


def test_the_probe_records_the_alignment_of_the_stored_weights():
    config = _binary(probes={"names": ["neuron_alignment", "weights"], "every": 4})
    result = train_classifier(config)
    data = load_dataset(config.data)
    x, y = data.x_train.double(), data.y_train
    positive = x[y == 1].mean(dim=0).numpy()
    negative = x[y == 0].mean(dim=0).numpy()
    trajectory = result.tables["trajectory"]
    m = result.metrics[result.metrics["layer"] == "fc1"]
    assert trajectory["steps"].tolist() == [0, 4, 8, 12] and set(m["step"]) == {0, 4, 8, 12}
    for step, flat in zip(trajectory["steps"].tolist(), trajectory["weights"]):
        weight = flat[: 7 * 5].reshape(7, 5).double().numpy()  # fc1.weight comes first
        best = [max(_cos(w, positive), _cos(w, negative)) for w in weight]
        rows = m[m["step"] == step].set_index("metric")["value"]
        assert rows["alignment_mean"] == pytest.approx(np.mean(best), abs=1e-12)
        assert rows["aligned_fraction"] == pytest.approx(np.mean(np.array(best) >= 0.9), abs=1e-15)
        assert rows["alignment_f100"] == pytest.approx(min(best), abs=1e-12)
        assert rows["aligned_positive"] == pytest.approx(
            np.mean([_cos(w, positive) > _cos(w, negative) for w in weight]), abs=1e-15)


def test_the_probe_leaves_training_unchanged():
    plain = train_classifier(_binary(probes={"names": ["eval"]})).metrics
    probed = train_classifier(_binary(probes={"names": ["eval", "neuron_alignment"]})).metrics
    for metric in ("batch_loss", "train_loss", "test_acc"):
        a = plain[plain["metric"] == metric].reset_index(drop=True)
        b = probed[probed["metric"] == metric].reset_index(drop=True)
        assert len(a) > 0 and a[["step", "value"]].equals(b[["step", "value"]]), metric


def test_the_probe_refuses_data_with_more_than_two_classes():
    config = with_overrides(tiny_config(), {"probes.names": ["neuron_alignment"]})
    with pytest.raises(ConfigError, match="probes.names.*binary labels"):
        train_classifier(config)
