"""SAM in the training loop against a hand-written step; identical to the base optimiser at ρ = 0; determinism; ids.

The reference (:func:`_reference`) is written here in plain torch, float64: the loss of a tiny
tanh MLP on a fixed regression batch as a function of the flat parameter vector, its gradient
g at θ, ε = ρ g/‖g‖ (ASAM: ε = ρ T² g/‖T g‖, T = |θ| + η), the gradient at θ + ε, then SGD with
momentum and weight decay, Adam or AdamW written out update by update.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.lm.config import LMRunConfig
from analysis_lib.runs.store import run_id
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import RunConfig, TrainConfig, config_from_dict, with_overrides
from analysis_lib.training.loop import Phase, make_optimizer, train_phases
from analysis_lib.training.objective import Objective
from analysis_lib.training.probe import Probe
from analysis_lib.training.sam import ASAM_ETA, SAM
from analysis_lib.validation import ConfigError

GEN = torch.Generator().manual_seed(11)
X = torch.randn(10, 2, generator=GEN, dtype=torch.float64)
Y = torch.randn(10, 1, generator=GEN, dtype=torch.float64)
# the classification probes whose gradients, curvature and weights SAM's second pass must not disturb
PROBES = ["grad_norm", "grad_noise", "update_ratio", "eval", "weight_norm", "rotation", "dist_init", "weights",
          "grad_overlap", "spectrum", "sharpness", "hessian_trace"]
BATCHES = [torch.arange(0, 6), torch.arange(4, 10), torch.arange(0, 10)]  # one per update


class Regression(Objective):
    """Mean squared error of the samples ``batch`` (indices) of the fixed data."""

    def loss(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(model(X[batch]), Y[batch])


def _model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _loss_at(model: nn.Module, theta: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """The batch's loss with the parameters ``theta``, computed by hand (no nn modules)."""
    W1, b1, W2, b2 = torch.split(theta, [6, 3, 3, 1])
    h = torch.tanh(X[batch] @ W1.reshape(3, 2).T + b1)
    return ((h @ W2.reshape(1, 3).T + b2 - Y[batch]) ** 2).mean()


def _grad(model, theta, batch) -> torch.Tensor:
    t = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss_at(model, t, batch), t)
    return g


def _reference(model, optimizer: str, steps: int, *, lr: float, rho: float, adaptive: bool = False,
               momentum: float = 0.0, weight_decay: float = 0.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """θ after ``steps`` SAM updates written out by hand, and the gradients at θ of each update."""
    theta = _flat(model).clone()
    buf = m = v = None
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    at_theta = []
    for t in range(1, steps + 1):
        batch = BATCHES[t - 1]
        g = _grad(model, theta, batch)
        at_theta.append(g)
        if rho > 0:
            T = theta.abs() + ASAM_ETA if adaptive else torch.ones_like(theta)
            eps = rho * T * T * g / torch.linalg.vector_norm(T * g)
            g = _grad(model, theta + eps, batch)
        if optimizer == "sgd":
            d = g + weight_decay * theta
            buf = d.clone() if buf is None else momentum * buf + d
            theta = theta - lr * (buf if momentum > 0 else d)
        else:
            if optimizer == "adamw":
                theta = theta * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * theta
            m = (1 - beta1) * g if m is None else beta1 * m + (1 - beta1) * g
            v = (1 - beta2) * g * g if v is None else beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            theta = theta - lr * m_hat / (v_hat.sqrt() + adam_eps)
    return theta, at_theta


class GradientAtTheta(Probe):
    """Records the flat gradient the loop's probes see after the backward pass of every update."""

    name, order = "test_gradient", 0

    def __init__(self) -> None:
        super().__init__(None)
        self.seen: list[torch.Tensor] = []

    def after_backward(self, ctx) -> None:
        self.seen.append(torch.cat([p.grad.detach().reshape(-1).clone() for p in ctx.params.values()]))


def _train(model, optimizer: str, steps: int, probes=(), **kwargs):
    opt_kwargs = {k: kwargs[k] for k in ("momentum", "weight_decay") if k in kwargs}
    sam = {"sam_rho": kwargs.get("rho", 0.0), "sam_adaptive": kwargs.get("adaptive", False)}
    phase = Phase("train", steps, lambda m: make_optimizer(m, optimizer, kwargs["lr"], **opt_kwargs, **sam),
                  lambda step: kwargs["lr"], iter(BATCHES), probe_steps=set(range(1, steps + 1)) if probes else set())
    return train_phases(model, Regression(), [phase], list(probes))


CASES = [
    ("sgd", {"lr": 0.3, "rho": 0.1}),
    ("sgd", {"lr": 0.2, "rho": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.2, "rho": 0.2, "adaptive": True}),
    ("adam", {"lr": 0.05, "rho": 0.1, "weight_decay": 0.01}),
    ("adamw", {"lr": 0.05, "rho": 0.1, "weight_decay": 0.1}),
    ("adam", {"lr": 0.05, "rho": 0.3, "adaptive": True}),
]


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("optimizer, kwargs", CASES)
def test_sam_updates_match_the_hand_written_step(optimizer, kwargs, steps):
    model = _model()
    expected, grads_at_theta = _reference(model, optimizer, steps, **kwargs)
    probe = GradientAtTheta()
    result = _train(model, optimizer, steps, probes=[probe], **kwargs)
    assert result.status == "finished"
    torch.testing.assert_close(_flat(model), expected, rtol=1e-12, atol=1e-14)
    # the probes' after_backward sees the gradient at θ, not at θ + ε
    assert len(probe.seen) == steps
    for seen, g in zip(probe.seen, grads_at_theta):
        torch.testing.assert_close(seen, g, rtol=1e-12, atol=1e-15)
    # batch_loss is the loss at θ of each update
    losses = result.metrics.query("metric == 'batch_loss'")["value"].tolist()
    base, thetas = _model(), [_flat(_model())]
    for t in range(1, steps):
        thetas.append(_reference(base, optimizer, t, **kwargs)[0])
    assert losses == pytest.approx([_loss_at(base, th, BATCHES[i]).item() for i, th in enumerate(thetas)],
                                   rel=1e-12)
    # and SAM moved differently from the base optimiser (so this test can fail)
    plain, _ = _reference(_model(), optimizer, steps, **{**kwargs, "rho": 0.0})
    assert (plain - expected).abs().max() > 1e-6


def test_rho_zero_is_the_base_optimiser_itself():
    model = _model()
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        assert type(make_optimizer(model, name, 0.1, sam_rho=0.0)) is cls
        wrapped = make_optimizer(model, name, 0.1, sam_rho=0.1)
        assert isinstance(wrapped, SAM) and type(wrapped.base) is cls
        assert wrapped.param_groups is wrapped.base.param_groups  # the loop's lr schedule reaches the base


def _batch_losses(config) -> pd.Series:
    m = train_classifier(config).metrics
    return m[m["metric"] == "batch_loss"].set_index("step")["value"]


def test_a_run_with_rho_zero_is_bit_identical_to_the_base_run_and_rho_changes_it(tiny_config):
    explicit = with_overrides(tiny_config, {"train.sam_rho": 0.0})
    pd.testing.assert_frame_equal(train_classifier(tiny_config).metrics, train_classifier(explicit).metrics,
                                  check_exact=True)
    sam = _batch_losses(with_overrides(tiny_config, {"train.sam_rho": 0.05}))
    base = _batch_losses(tiny_config)
    assert sam.iloc[0] == base.iloc[0]  # the first loss is at the same θ(0)
    assert (sam.iloc[1:] - base.iloc[1:]).abs().max() > 1e-6


@pytest.mark.parametrize("overrides", [
    {"train.sam_rho": 0.05},
    {"train.sam_rho": 0.5, "train.sam_adaptive": True, "train.optimizer": "adam", "train.lr": 0.01},
    {"train.sam_rho": 0.05, "model.norm": "batch", "train.momentum": 0.9},
])
def test_sam_runs_are_deterministic_and_probes_leave_them_unchanged(tiny_config, overrides):
    config = with_overrides(tiny_config, overrides)
    first, second = train_classifier(config).metrics, train_classifier(config).metrics
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    probed = with_overrides(config, {"probes.every": 1, "probes.names": PROBES})
    bare = with_overrides(config, {"probes.names": []})
    pd.testing.assert_series_equal(_batch_losses(probed), _batch_losses(bare), check_exact=True)


def test_batchnorm_statistics_are_updated_once_per_step():
    """With SAM, BatchNorm's running statistics are those of the forward passes at θ only."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 1)).double()
    twin = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 1)).double()
    twin.load_state_dict(model.state_dict())
    opt = make_optimizer(model, "sgd", 0.1, sam_rho=0.2)
    phase = Phase("train", 1, lambda m: opt, lambda step: 0.1, iter(BATCHES), set())
    train_phases(model, Regression(), [phase], [])
    with torch.no_grad():
        twin.train()
        twin(X[BATCHES[0]])  # one forward pass at θ(0) in train mode
    torch.testing.assert_close(model[1].running_mean, twin[1].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(model[1].running_var, twin[1].running_var, rtol=0, atol=0)
    assert int(model[1].num_batches_tracked) == 1


def test_sam_rho_enters_the_run_id_and_rho_zero_keeps_the_old_ids():
    # ids computed before sam_rho existed (commit 6c70fbb)
    assert run_id(RunConfig()) == "d9dad723cd158633"
    assert run_id(RunConfig(train=TrainConfig(optimizer="adam", lr=0.01))) == "4dfbef2dc552e719"
    assert run_id(LMRunConfig()) == "d897a1118879ccbb"
    assert run_id(RunConfig(train=TrainConfig(sam_rho=0.0, sam_adaptive=False))) == "d9dad723cd158633"
    ids = {run_id(RunConfig(train=TrainConfig(**kw)))
           for kw in ({}, {"sam_rho": 0.05}, {"sam_rho": 0.1}, {"sam_rho": 0.05, "sam_adaptive": True})}
    assert len(ids) == 4


@pytest.mark.parametrize("spec, name", [
    ({"sam_rho": -0.1}, "train.sam_rho"),
    ({"sam_rho": math.nan}, "train.sam_rho"),
    ({"sam_rho": math.inf}, "train.sam_rho"),
    ({"sam_rho": "0.1"}, "train.sam_rho"),
    ({"sam_rho": True}, "train.sam_rho"),
    ({"sam_rho": 0.1, "sam_adaptive": "yes"}, "train.sam_adaptive"),
    ({"sam_adaptive": True}, "train.sam_adaptive"),  # adaptive SAM needs ρ > 0
])
def test_bad_sam_settings_are_refused_by_name(spec, name):
    with pytest.raises(ConfigError, match=rf"invalid parameter {name}="):
        config_from_dict({"train": spec})


def test_the_optimiser_needs_a_closure_and_a_positive_rho():
    model = _model()
    with pytest.raises(ValueError, match="closure"):
        make_optimizer(model, "sgd", 0.1, sam_rho=0.1).step()
    with pytest.raises(ConfigError, match="train.sam_rho"):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), 0.0)


def test_a_zero_gradient_gives_the_base_step():
    """Where g = 0 the perturbation is 0 (not a division by zero): the closure runs at θ itself."""
    model = _model()
    opt = make_optimizer(model, "sgd", 0.1, sam_rho=0.5)
    before = _flat(model).clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    seen = []

    def closure():
        seen.append(_flat(model).clone())
        loss = Regression().loss(model, BATCHES[0])
        loss.backward()
        return loss
    opt.step(closure)
    assert torch.equal(seen[0], before)
    torch.testing.assert_close(_flat(model), before - 0.1 * _grad(model, before, BATCHES[0]), rtol=1e-13, atol=1e-15)
