"""The sharpness measures against closed forms on a quadratic, their (non-)invariance, and their refusals.

References are built here: for L(θ) = ½θᵀAθ (float64) the ρ-sharpness at θ = 0 is ½ρ²λ_max(A)
(numpy's eigvalsh), one ascent step from θ ≠ 0 is ε = ρAθ/‖Aθ‖ evaluated by hand, the
average-direction sharpness at θ = 0 is ½ρ² tr(A)/d, and the adaptive sharpness of a diagonal A
is the trust-region maximum of ½Σ b_i (1 + u_i)² over ‖u‖ ≤ ρ (b_i = a_i θ_i²), solved here by
its secular equation with scipy's brentq. Invariance: a ReLU MLP and its
``equivalent_rescaling``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from torch import nn

from analysis_lib.curvature.sharpness import adaptive_sharpness, average_sharpness, rho_sharpness, sharpness_battery
from analysis_lib.landscape.directions import equivalent_rescaling
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.models import MLP
from analysis_lib.validation import ConfigError


class Quadratic(nn.Module):
    """``forward(x)`` = ½θᵀAθ for every sample: with ``mean_loss`` the loss is L(θ) = ½θᵀAθ."""

    def __init__(self, A: torch.Tensor, theta: torch.Tensor):
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.A @ self.theta).expand(len(x))


def mean_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return outputs.mean()


DATA = (torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))


def _psd(d: int, seed: int, spread: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return Q @ np.diag(np.geomspace(spread, 0.1, d)) @ Q.T


def _quadratic(A: np.ndarray, theta: np.ndarray) -> Quadratic:
    A = (A + A.T) / 2
    return Quadratic(torch.tensor(A, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64))


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(before: dict, model: nn.Module) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_several_projected_steps_reach_half_rho_squared_lambda_max_at_the_minimum():
    A = _psd(6, 0)
    model, rho = _quadratic(A, np.zeros(6)), 0.3
    expected = 0.5 * rho**2 * np.linalg.eigvalsh(A).max()
    est = rho_sharpness(model, mean_loss, DATA, rho, steps=40)
    assert est.value == pytest.approx(expected, rel=1e-8)
    assert est.eps_norm == pytest.approx(rho, rel=1e-12)
    assert est.base_loss == 0.0 and est.n_gradients == 42
    few = rho_sharpness(model, mean_loss, DATA, rho, steps=3)
    assert few.value < expected  # a lower bound, which a short ascent has not reached yet


def test_one_step_at_the_minimum_does_not_move_and_says_so():
    model = _quadratic(_psd(4, 1), np.zeros(4))
    with pytest.warns(UserWarning, match="gradient at θ is 0"):
        est = rho_sharpness(model, mean_loss, DATA, 0.1)
    assert est.value == 0.0 and est.eps_norm == 0.0


@pytest.mark.parametrize("rho", [0.05, 0.7])
def test_one_step_away_from_the_minimum_is_the_sam_perturbation(rho):
    A, theta = _psd(5, 2), np.random.default_rng(3).standard_normal(5)
    model = _quadratic(A, theta)
    g = A @ theta
    eps = rho * g / np.linalg.norm(g)
    L = lambda t: 0.5 * t @ A @ t  # noqa: E731
    est = rho_sharpness(model, mean_loss, DATA, rho)
    assert est.value == pytest.approx(L(theta + eps) - L(theta), rel=1e-12)
    assert est.base_loss == pytest.approx(L(theta), rel=1e-12)
    assert est.eps_norm == pytest.approx(rho, rel=1e-12)
    # several steps: at least the one-step value, at most the exact maximum over the ball
    many = rho_sharpness(model, mean_loss, DATA, rho, steps=30)
    w, V = np.linalg.eigh(A)
    directions = np.random.default_rng(0).standard_normal((20000, 5))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    sampled = max(L(theta + rho * v) for v in directions) - L(theta)
    assert many.value >= est.value - 1e-12
    assert many.value >= sampled - 1e-9  # beats 20 000 random points of the sphere
    assert many.value <= rho * np.linalg.norm(g) + 0.5 * rho**2 * w.max() + 1e-12  # Taylor bound


def _trust_region_max(b: np.ndarray, c: np.ndarray, rho: float) -> float:
    """max_{‖u‖ ≤ ρ} ½Σ b_i ((1 + c_i u_i)² − 1), b, c > 0: u_i = b_i c_i / (μ − b_i c_i²), ‖u‖ = ρ, μ > max b c²."""
    k = b * c**2
    norm = lambda mu: np.linalg.norm(b * c / (mu - k)) - rho  # noqa: E731
    top = k.max()
    mu = brentq(norm, top * (1 + 1e-13), top + np.linalg.norm(b * c) / rho * 10, xtol=1e-15, rtol=1e-15)
    u = b * c / (mu - k)
    return 0.5 * np.sum(b * ((1 + c * u) ** 2 - 1))


@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_adaptive_sharpness_of_a_diagonal_quadratic(eta):
    a = np.array([3.0, 1.0, 0.5, 2.0])
    theta = np.array([0.4, -1.5, 2.0, -0.2])
    model, rho = _quadratic(np.diag(a), theta), 0.2
    T = np.abs(theta) + eta
    L = lambda t: 0.5 * np.sum(a * t**2)  # noqa: E731
    # one step: δ = ρ T g / ‖T g‖, ε = T δ
    u = T * a * theta
    one = adaptive_sharpness(model, mean_loss, DATA, rho, eta=eta)
    assert one.value == pytest.approx(L(theta + T * rho * u / np.linalg.norm(u)) - L(theta), rel=1e-12)
    assert one.eps_norm == pytest.approx(rho, rel=1e-12)
    # the maximum: with s = sign θ, u = s δ and c = T / |θ|, L(θ + Tδ) = ½Σ b_i (1 + c_i u_i)², b = a θ²
    many = adaptive_sharpness(model, mean_loss, DATA, rho, steps=60, eta=eta)
    assert many.value == pytest.approx(_trust_region_max(a * theta**2, T / np.abs(theta), rho), rel=1e-8)
    directions = np.random.default_rng(1).standard_normal((20000, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    sampled = max(L(theta + T * rho * d) for d in directions) - L(theta)
    assert sampled - 1e-9 <= many.value and many.value >= one.value - 1e-12
    assert many.eps_norm == pytest.approx(rho, rel=1e-12)


def test_average_sharpness_of_the_quadratic_and_its_interval():
    d, rho = 8, 0.5
    A = _psd(d, 4)
    model = _quadratic(A, np.zeros(d))
    expected = 0.5 * rho**2 * np.trace(A) / d
    est = average_sharpness(model, mean_loss, DATA, rho, n_directions=400, seed=1)
    assert est.ci_low < expected < est.ci_high
    assert est.ci_high - est.ci_low < 0.2 * expected  # informative, not vacuous
    assert est.ci_high - est.value == pytest.approx(est.value - est.ci_low, rel=1e-12)
    assert est.base_loss == 0.0
    # coverage by simulation: 40 seeds of 30 directions, 95% intervals
    covered = sum(average_sharpness(model, mean_loss, DATA, rho, n_directions=30, seed=s).ci_low < expected
                  < average_sharpness(model, mean_loss, DATA, rho, n_directions=30, seed=s).ci_high
                  for s in range(40))
    assert covered >= 33


def test_values_are_the_same_for_any_split_of_the_data_into_batches():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(13, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (13,), generator=gen)
    model = _mlp(seed=0)
    whole, parts = (x, y), [(x[:5], y[:5]), (x[5:], y[5:])]
    for fn in (lambda data: rho_sharpness(model, F.cross_entropy, data, 0.1, steps=3).value,
               lambda data: adaptive_sharpness(model, F.cross_entropy, data, 0.1, steps=2).value,
               lambda data: average_sharpness(model, F.cross_entropy, data, 0.1, n_directions=5).value):
        assert fn(parts) == pytest.approx(fn(whole), rel=1e-10, abs=1e-14)
    # against a plain-torch reference of the one-step value on the concatenated data
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).requires_grad_(True)
    names = [(n, p.shape, p.numel()) for n, p in model.named_parameters()]

    def loss_of(v):
        parts_, start = {}, 0
        for n, shape, size in names:
            parts_[n] = v[start:start + size].reshape(shape)
            start += size
        return F.cross_entropy(torch.func.functional_call(model, parts_, (x,)), y)
    (g,) = torch.autograd.grad(loss_of(flat), flat)
    with torch.no_grad():
        expected = (loss_of(flat + 0.1 * g / g.norm()) - loss_of(flat)).item()
    assert rho_sharpness(model, F.cross_entropy, parts, 0.1).value == pytest.approx(expected, rel=1e-10)


def _mlp(seed: int, width: int = 6) -> MLP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(3, 3, ModelConfig(width=width, depth=2, activation="relu")).double()


def _classification(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(24, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (24,), generator=gen)


def test_adaptive_sharpness_is_invariant_under_rescaling_and_the_others_are_not():
    model, data = _mlp(1), _classification(1)
    scaled = equivalent_rescaling(model, 5.0, layer=1)
    x, _ = data
    torch.testing.assert_close(model(x), scaled(x), rtol=1e-12, atol=1e-12)  # the same function
    for steps in (1, 8):
        a = adaptive_sharpness(model, F.cross_entropy, data, 0.1, steps=steps).value
        b = adaptive_sharpness(scaled, F.cross_entropy, data, 0.1, steps=steps).value
        assert a > 1e-6 and b == pytest.approx(a, rel=1e-9)
        p = rho_sharpness(model, F.cross_entropy, data, 0.1, steps=steps).value
        q = rho_sharpness(scaled, F.cross_entropy, data, 0.1, steps=steps).value
        assert abs(p - q) > 0.05 * abs(p)
    eta = [adaptive_sharpness(m, F.cross_entropy, data, 0.1, eta=0.5).value for m in (model, scaled)]
    assert abs(eta[0] - eta[1]) > 1e-3 * abs(eta[0])  # η > 0 breaks it
    avg = [average_sharpness(m, F.cross_entropy, data, 0.1, n_directions=20).value for m in (model, scaled)]
    assert abs(avg[0] - avg[1]) > 0.05 * abs(avg[0])
    table = [sharpness_battery(m, F.cross_entropy, data, rho=0.1, steps=(1,), n_directions=5) for m in (model, scaled)]
    lam = [t.set_index("measure").loc["lambda_max", "value"] for t in table]
    assert abs(lam[0] - lam[1]) > 0.05 * lam[0]
    assert table[0].set_index("measure")["invariant"].to_dict() == {
        "lambda_max": False, "trace": False, "rho_sharpness": False, "adaptive_sharpness": True,
        "average_sharpness": False}


def test_every_measure_leaves_the_weights_and_gradients_bit_for_bit(tmp_path):
    model = MLP(3, 3, ModelConfig(width=5, depth=2, norm="batch"))  # float32, BatchNorm buffers
    model.train()
    x, y = _classification(2)
    data = [(x[:10].float(), y[:10]), (x[10:].float(), y[10:])]
    before = _state(model)
    rho_sharpness(model, F.cross_entropy, data, 0.1)
    rho_sharpness(model, F.cross_entropy, data, 0.1, steps=4)
    adaptive_sharpness(model, F.cross_entropy, data, 0.1, steps=3, eta=0.01)
    average_sharpness(model, F.cross_entropy, data, 0.1, n_directions=4)
    sharpness_battery(model, F.cross_entropy, data, rho=[0.05, 0.1], steps=(1, 2), n_directions=3)
    _same(before, model)
    assert model.training and all(m.training for m in model.modules())


def test_the_battery_reuses_lanczos_and_the_trace():
    A = _psd(5, 6)
    model = _quadratic(A, np.random.default_rng(7).standard_normal(5) * 0.1)
    table = sharpness_battery(model, mean_loss, DATA, rho=[0.1, 0.2], steps=(1, 5), n_directions=10)
    assert list(table.columns[:7]) == ["measure", "value", "ci_low", "ci_high", "rho", "steps", "invariant"]
    assert len(table) == 2 + 2 * 5
    by = table.set_index("measure")
    assert by.loc["lambda_max", "value"] == pytest.approx(np.linalg.eigvalsh(A).max(), rel=1e-6)
    assert by.loc["trace", "value"] == pytest.approx(np.trace(A), rel=1e-9)
    avg = table[table["measure"] == "average_sharpness"]
    assert (avg["ci_low"] < avg["value"]).all() and (avg["value"] < avg["ci_high"]).all()
    assert table["steps"].isna().tolist() == [True, True] + ([False] * 4 + [True]) * 2


def test_bad_input_is_refused_before_any_work():
    model, data = _mlp(0), _classification(0)

    class Empty(nn.Module):
        def forward(self, x):
            return x
    calls = [
        (lambda: rho_sharpness(model, F.cross_entropy, data, 0.0), "rho"),
        (lambda: rho_sharpness(model, F.cross_entropy, data, -1.0), "rho"),
        (lambda: rho_sharpness(model, F.cross_entropy, data, math.nan), "rho"),
        (lambda: rho_sharpness(model, F.cross_entropy, data, 0.1, steps=0), "steps"),
        (lambda: rho_sharpness(model, F.cross_entropy, data, 0.1, steps=2, step_size=0.0), "step_size"),
        (lambda: adaptive_sharpness(model, F.cross_entropy, data, 0.1, eta=-0.1), "eta"),
        (lambda: adaptive_sharpness(model, F.cross_entropy, data, 0.1, steps=1.5), "steps"),
        (lambda: average_sharpness(model, F.cross_entropy, data, 0.1, n_directions=1), "n_directions"),
        (lambda: average_sharpness(model, F.cross_entropy, data, 0.0, n_directions=5), "rho"),
        (lambda: rho_sharpness(Empty(), F.cross_entropy, data, 0.1), "model"),
        (lambda: average_sharpness(Empty(), F.cross_entropy, data, 0.1), "model"),
        (lambda: sharpness_battery(model, F.cross_entropy, data, rho=[0.1, 0.0]), "rho"),
        (lambda: sharpness_battery(model, F.cross_entropy, data, rho=0.1, steps=(1, 0)), "steps"),
        (lambda: sharpness_battery(model, F.cross_entropy, data, rho=0.1, n_directions=1), "n_directions"),
        (lambda: sharpness_battery(Empty(), F.cross_entropy, data, rho=0.1), "model"),
    ]
    for call, name in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ConfigError, match=rf"invalid parameter {name}="):
                call()
