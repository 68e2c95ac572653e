"""Hidden-state, dead-unit, log Z and gradient-norm statistics against direct float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis_lib.activations.statistics import (
    _median_selected,
    dead_unit_fraction,
    excess_kurtosis,
    gradient_norm,
    growth_ratios,
    hidden_rms,
    hidden_state_stats,
    hidden_variance,
    log_partition,
    log_partition_stats,
    massive_activation_ratio,
)
from analysis_lib.validation import ConfigError


def _entries(h: torch.Tensor) -> list[float]:
    return [float(v) for v in h.reshape(-1).tolist()]


def test_rms_variance_and_massive_ratio_against_python_sums():
    h = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)).float()
    h[1, 2, 3] = 40.0  # a massive activation
    xs = _entries(h.double())
    n = len(xs)
    mean = sum(xs) / n
    assert hidden_rms(h) == pytest.approx(math.sqrt(sum(x * x for x in xs) / n), rel=1e-12)
    assert hidden_variance(h) == pytest.approx(sum((x - mean) ** 2 for x in xs) / n, rel=1e-12)
    a = sorted(abs(x) for x in xs)
    median = (a[n // 2 - 1] + a[n // 2]) / 2  # n = 60 is even
    assert massive_activation_ratio(h) == pytest.approx(40.0 / median, rel=1e-12)
    assert massive_activation_ratio(torch.tensor([1.0, -2.0, 9.0])) == pytest.approx(9.0 / 2.0)
    stats = hidden_state_stats(h)
    assert set(stats) == {"rms", "variance", "massive_ratio", "kurtosis"}
    assert stats["rms"] == hidden_rms(h)


@pytest.mark.parametrize("values", [[1.0, 1.0, 1.0, 5.0], [3.0, -1.0, 2.0, 2.0, 7.0, 2.0], [4.0, 1.0, 2.0, 3.0],
                                    [0.5, -0.5, 0.5, 0.25, 9.0], [2.0, 2.0]])
def test_massive_ratio_median_by_selection_with_ties_and_both_parities(values):
    a = sorted(abs(v) for v in values)
    n = len(a)
    median = a[n // 2] if n % 2 else (a[n // 2 - 1] + a[n // 2]) / 2
    h = torch.tensor(values)[torch.randperm(n, generator=torch.Generator().manual_seed(n))]
    assert massive_activation_ratio(h) == pytest.approx(a[-1] / median, rel=1e-15)
    assert hidden_state_stats(h)["massive_ratio"] == pytest.approx(a[-1] / median, rel=1e-15)
    assert float(_median_selected(h.abs())) == pytest.approx(median, rel=1e-15)  # the path off the CPU


def test_massive_ratio_of_bfloat16_and_non_finite_states():
    h = torch.tensor([1.0, -2.0, 3.0, 8.0], dtype=torch.bfloat16)
    assert massive_activation_ratio(h) == pytest.approx(8.0 / 2.5)
    assert math.isnan(massive_activation_ratio(torch.tensor([0.0, 0.0, math.nan])))
    assert massive_activation_ratio(torch.tensor([0.0, 0.0, 1.0])) == math.inf


def test_growth_ratios_of_consecutive_layers():
    assert growth_ratios([1.0, 2.0, 3.0]) == pytest.approx([2.0, 1.5])
    assert growth_ratios([0.0, 1.0]) == [math.inf]
    with pytest.raises(ConfigError, match="rms"):
        growth_ratios([1.0])


@pytest.mark.parametrize("draw,expected,tol", [
    (lambda rng, n: rng.laplace(size=n), 3.0, 0.15),
    (lambda rng, n: rng.uniform(-1, 1, size=n), -1.2, 0.02),
    (lambda rng, n: rng.normal(size=n), 0.0, 0.03),
])
def test_excess_kurtosis_of_known_distributions(draw, expected, tol):
    x = torch.from_numpy(draw(np.random.default_rng(1), 400_000)).reshape(400, 1000)
    assert excess_kurtosis(x) == pytest.approx(expected, abs=tol)


def test_excess_kurtosis_of_a_two_point_distribution_is_minus_two_exactly():
    # ±1 with equal mass: m4 = m2 = 1, so m4 / m2² − 3 = −2; float32 input is computed in float64
    assert excess_kurtosis(torch.tensor([1.0, -1.0] * 50)) == pytest.approx(-2.0, abs=1e-12)
    assert math.isnan(excess_kurtosis(torch.ones(5)))


def test_dead_unit_fraction_on_a_hand_built_relu_layer():
    layer = torch.nn.Linear(2, 4, bias=True)
    with torch.no_grad():  # units: always on, never on (dead), on only for x0 > 0, dead by bias
        layer.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
        layer.bias.copy_(torch.tensor([1.0, -1.0, 0.0, -100.0]))
    x = torch.tensor([[-1.0, 2.0], [0.5, 0.0], [-3.0, -1.0]])
    pre = layer(x)
    assert dead_unit_fraction(pre) == pytest.approx(2 / 4)
    assert dead_unit_fraction(torch.relu(pre)) == pytest.approx(2 / 4)  # ReLU output: same units
    assert dead_unit_fraction(torch.nn.functional.gelu(pre)) == pytest.approx(2 / 4)
    assert dead_unit_fraction(pre[None].expand(2, 3, 4)) == pytest.approx(0.5)  # (B, T, units)


def test_log_partition_against_torch_logsumexp_and_a_direct_sum():
    z = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(2)) * 5
    direct = torch.tensor([[math.log(sum(math.exp(v) for v in z[b, t].double().tolist())) for t in range(3)]
                           for b in range(2)], dtype=torch.float64)
    assert torch.allclose(log_partition(z), direct, rtol=1e-12, atol=0)
    assert torch.allclose(log_partition(z), torch.logsumexp(z.double(), -1), rtol=1e-12, atol=0)
    stats = log_partition_stats(z)
    assert stats["log_z_mean"] == pytest.approx(float(direct.mean()), rel=1e-12)
    assert stats["log_z_max"] == pytest.approx(float(direct.max()), rel=1e-12)
    assert stats["log_z_sq_mean"] == pytest.approx(float((direct ** 2).mean()), rel=1e-12)
    big = torch.tensor([[1000.0, 1000.0]])  # no overflow: log(2 e^1000) = 1000 + log 2
    assert log_partition(big).item() == pytest.approx(1000 + math.log(2), rel=1e-15)


def test_gradient_norm_is_the_frobenius_norm():
    g = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    assert gradient_norm(g) == pytest.approx(5.0)


@pytest.mark.parametrize("fn", [hidden_rms, hidden_variance, massive_activation_ratio, excess_kurtosis,
                                dead_unit_fraction, log_partition, gradient_norm])
def test_empty_or_integer_tensors_are_refused(fn):
    with pytest.raises(ConfigError, match="non-empty floating"):
        fn(torch.zeros(0))
    with pytest.raises(ConfigError, match="non-empty floating"):
        fn(torch.ones(3, dtype=torch.long))
