"""Tests of analysis_lib.gradients.noise: the noise probe against brute-force per-sample gradients, in float64.

Also: training is unchanged by the probe, and noise_profile is the ratio of means over seeds.

The probe on an MLP, CNNs (dilated and strided; grouped convolutions skipped), sequence models and the tiny
transformer; every form of the per-sample squared norms; the statistics on hand-made numbers; hooks and
gradients left as they were; the loss curve of a run with and without the probe; and the general noise profile on
a hand-made tidy table of MLP layers.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.gradients.noise import (
    METRICS,
    GradientNoiseProbe,
    noise_profile,
    noise_statistics,
    per_sample_sq_norms,
)
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import ModelConfig, with_overrides
from analysis_lib.training.data import load_dataset
from analysis_lib.training.losses import sequence_losses
from analysis_lib.training.models import build_model
from analysis_lib.training.schedules import batches
from tests.cases import TinySequenceModel, sequence_batch, tiny_transformer_batch


def brute_force(model, sample_losses, layers):
    """Metrics per layer and "model" from per-sample gradients, one backward pass per sample."""
    params = {name: [p for p in (m.weight, m.bias) if p is not None] for name, m in layers.items()}
    per_sample = {name: [] for name in layers}  # name -> list of flat (P,) gradients
    for loss in sample_losses():
        grads = torch.autograd.grad(loss, [p for ps in params.values() for p in ps], retain_graph=True)
        flat = iter(grads)
        for name, ps in params.items():
            per_sample[name].append(torch.cat([next(flat).reshape(-1) for _ in ps]))
    per_sample = {name: torch.stack(g) for name, g in per_sample.items()}  # (B, P)
    per_sample["model"] = torch.cat(list(per_sample.values()), dim=1)
    out = {}
    for name, g in per_sample.items():
        b, mean = len(g), g.mean(dim=0)
        var_trace = (g - mean).square().sum().item() / (b - 1)
        signal = mean.square().sum().item() - var_trace / b
        out[name] = {"grad_var_trace": var_trace, "grad_mean_sq_norm": mean.square().sum().item(),
                     "grad_signal": signal, "grad_snr": signal / var_trace, "grad_noise_scale": var_trace / signal}
    return out


def probed(model, batch_loss):
    with GradientNoiseProbe(model) as probe:
        batch_loss().backward()
    got: dict = {}
    for layer, metric, value in probe.statistics():
        got.setdefault(layer, {})[metric] = value
    probe.coverage = got["model"].pop("grad_noise_coverage")
    return got, probe


def assert_matches(got, expected):
    assert set(got) == set(expected)
    for layer, metrics in expected.items():
        assert set(got[layer]) == set(METRICS)
        for metric, value in metrics.items():
            assert got[layer][metric] == pytest.approx(value, rel=1e-9, abs=1e-14), (layer, metric)


def _classifier_case(kind: str):
    model = build_model(ModelConfig(kind=kind, depth=2, width=4, kernel_size=5), n_features=12, n_classes=3,
                        seed=0).double()
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(9, 12, generator=gen, dtype=torch.float64), torch.arange(9) % 3
    return model, x, y


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_probe_matches_brute_force_per_sample_gradients(kind):
    # cnn: conv1 has 6 positions, d_in 5, d_out 4 (explicit form); conv2 3 positions, d_in 20 (Gram form).
    model, x, y = _classifier_case(kind)
    got, _ = probed(model, lambda: F.cross_entropy(model(x), y))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d))}
    model.zero_grad(set_to_none=True)
    expected = brute_force(model, lambda: (F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]) for i in range(9)), layers)
    assert_matches(got, expected)


class DilatedCNN(nn.Module):
    """A dilated, strided Conv1d with padding, a grouped Conv1d (unsupported) and a Linear head."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.conv = nn.Conv1d(2, 4, kernel_size=3, stride=2, padding=2, dilation=2)
            self.grouped = nn.Conv1d(4, 4, kernel_size=1, groups=2)
            self.out = nn.Linear(4 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, 11) -> (B, 3)
        return self.out(torch.tanh(self.grouped(torch.tanh(self.conv(x)))).flatten(1))


def test_dilated_conv_matches_and_grouped_conv_is_skipped():
    model = DilatedCNN().double()
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 2, 11, generator=gen, dtype=torch.float64), torch.arange(7) % 3
    got, probe = probed(model, lambda: F.cross_entropy(model(x), y))
    assert probe.skipped == ["grouped"]
    grouped = sum(p.numel() for p in model.grouped.parameters())
    assert probe.coverage == pytest.approx(1 - grouped / sum(p.numel() for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    layers = {"conv": model.conv, "out": model.out}
    expected = brute_force(model, lambda: (F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]) for i in range(7)), layers)
    assert_matches(got, expected)


class ImageCNN(nn.Module):
    """A strided, padded, dilated Conv2d, a plain Conv2d, a LayerNorm (not covered) and a Linear head."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.conv1 = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
            self.conv2 = nn.Conv2d(3, 4, kernel_size=2)
            self.norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2, 6, 5) -> (B, 3)
        h = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))  # (B, 4, 2, 4)
        return self.out(self.norm(h.mean(dim=(2, 3))))


def test_conv2d_is_measured_and_what_is_not_covered_is_listed():
    model = ImageCNN().double()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 2, 6, 5, generator=gen, dtype=torch.float64), torch.arange(6) % 3
    got, probe = probed(model, lambda: F.cross_entropy(model(x), y))
    assert probe.skipped == ["norm"]
    assert probe.coverage == pytest.approx(1 - 8 / sum(p.numel() for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    layers = {"conv1": model.conv1, "conv2": model.conv2, "out": model.out}
    expected = brute_force(model, lambda: (F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]) for i in range(6)), layers)
    assert_matches(got, expected)


@pytest.mark.parametrize("t", [3, 8])  # t = 3: the MLP's up/down take the Gram form; t = 8: explicit
def test_probe_matches_brute_force_on_sequences(t):
    model = TinySequenceModel(hidden=16).double()
    tokens, targets, mask = sequence_batch(b=6, t=t)

    def batch_loss():  # the mean over sequences of each sequence's token-averaged response loss
        return sequence_losses(model(tokens), targets, mask).mean()

    got, _ = probed(model, batch_loss)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    model.zero_grad(set_to_none=True)
    samples = (sequence_losses(model(tokens[i:i + 1]), targets[i:i + 1], mask[i:i + 1]).sum() for i in range(6))
    expected = brute_force(model, lambda: samples, layers)
    assert_matches(got, expected)


@pytest.mark.parametrize("t, d_in, d_out", [(1, 3, 4), (2, 6, 5), (7, 3, 4), (4, 9, 9)])
def test_per_sample_sq_norms_every_form(t, d_in, d_out):
    gen = torch.Generator().manual_seed(t * d_in)
    a = torch.randn(5, t, d_in, generator=gen, dtype=torch.float64)
    delta = torch.randn(5, t, d_out, generator=gen, dtype=torch.float64)
    explicit = torch.einsum("bto,bti->boi", delta, a).square().sum((1, 2))
    torch.testing.assert_close(per_sample_sq_norms(a, delta, bias=False), explicit)
    torch.testing.assert_close(per_sample_sq_norms(a, delta, bias=True), explicit + delta.sum(1).square().sum(1))


def test_noise_statistics_on_hand_made_numbers():
    # Per-sample gradients (1, 0), (3, 0): Σ‖g_i‖² = 10, ḡ = (2, 0), tr Σ = ((1-2)² + (3-2)²) / 1 = 2.
    stats = noise_statistics(2, 10.0, 4.0)
    assert stats == pytest.approx({"grad_var_trace": 2.0, "grad_mean_sq_norm": 4.0, "grad_signal": 3.0,
                                   "grad_snr": 1.5, "grad_noise_scale": 2 / 3})
    assert all(math.isnan(v) for v in noise_statistics(1, 1.0, 1.0).values())


def test_probe_leaves_gradients_and_hooks_as_they_were():
    model, x, y = _classifier_case("cnn")
    F.cross_entropy(model(x), y).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, probe = probed(model, lambda: F.cross_entropy(model(x), y))
    for before, p in zip(plain, model.parameters()):
        assert torch.equal(before, p.grad)
    assert all(not m._forward_hooks for m in model.modules())
    with torch.no_grad():  # forward passes outside the probe's context record nothing
        model(x)
    assert len(probe.statistics()) == 3 * len(METRICS) + len(METRICS) + 1  # conv1, conv2, out + model, coverage


@pytest.mark.parametrize("overrides", [
    {},
    {"model.kind": "cnn", "model.width": 4, "train.optimizer": "adam", "train.lr": 0.01},
    {"model.norm": "batch"},
])
def test_training_with_the_probe_has_the_same_loss_curve(tiny_config, overrides):
    on = with_overrides(tiny_config, {**overrides, "probes.every": 1, "probes.names": ["grad_noise"]})
    off = with_overrides(on, {"probes.names": []})
    metrics = train_classifier(on).metrics
    loss = lambda m: m[m["metric"] == "batch_loss"].set_index("step")["value"]  # noqa: E731
    pd.testing.assert_series_equal(loss(metrics), loss(train_classifier(off).metrics), check_exact=True)
    recorded = metrics[metrics["metric"].isin(METRICS)]
    assert set(recorded["step"]) == set(range(1, tiny_config.train.steps + 1))
    assert {"model", "out"} <= set(recorded["layer"])


def test_training_records_the_noise_of_the_first_batch(tiny_config):
    """grad_noise at step 1 comes from the first mini-batch at θ(0), like grad_norm."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.every": 1, "train.steps": 1,
                                          "probes.names": ["grad_noise"]})
    metrics = train_classifier(config).metrics
    recorded = metrics[(metrics["step"] == 1) & metrics["metric"].isin(METRICS)]
    got: dict = {}
    for row in recorded.itertuples():
        got.setdefault(row.layer, {})[row.metric] = row.value
    data = load_dataset(config.data).to("cpu", torch.float64)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).double()
    idx = next(batches(len(data.y_train), config.train.batch_size, 1_000_003 * config.seed + 17, "cpu"))
    x, y = data.x_train[idx], data.y_train[idx]
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    expected = brute_force(model, lambda: (F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]) for i in range(len(y))),
                           layers)
    assert_matches(got, expected)


def test_probe_matches_brute_force_on_the_tiny_transformer():
    model, batch = tiny_transformer_batch(n_problems=5)
    args = (batch.tokens, batch.targets, batch.mask)
    got, _ = probed(model, lambda: sequence_losses(model(args[0]), args[1], args[2]).mean())
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    model.zero_grad(set_to_none=True)
    expected = brute_force(model, lambda: (sequence_losses(model(t[None]), y[None], m[None]).sum()
                                           for t, y, m in zip(*args)), layers)
    assert_matches(got, expected)


def _mlp_noise_rows():
    """grad_noise rows of an MLP (fc1, fc2, out, model) over two seeds at steps 1 and 2.

    With the grad_snr of each single batch alongside, which the profile must not average.
    """
    rows = []
    for seed in (0, 1):
        for step in (1, 2):
            for i, layer in enumerate(("fc1", "fc2", "out", "model")):
                signal = (i + 1) * step * (1.0 if seed == 0 else -0.5)  # one batch's signal may be < 0
                noise = (i + 2) * (seed + 1.0)
                for metric, value in (("grad_signal", signal), ("grad_var_trace", noise),
                                      ("grad_snr", signal / noise), ("grad_noise_scale", noise / signal)):
                    rows.append({"run_id": f"r{seed}", "seed": seed, "step": step, "layer": layer, "metric": metric,
                                 "value": value})
        rows.append({"run_id": f"r{seed}", "seed": seed, "step": 2, "layer": "model", "metric": "train_loss",
                     "value": 0.3})
    return pd.DataFrame(rows)


def test_noise_profile_is_mean_signal_over_mean_noise_for_every_layer():
    metrics = _mlp_noise_rows()
    profile = noise_profile(metrics)
    assert list(profile.columns) == ["step", "layer", "snr", "n"]
    assert len(profile) == 2 * 4  # steps × layers, "model" kept
    assert list(zip(profile["step"], profile["layer"])) == sorted(
        (s, layer) for s in (1, 2) for layer in ("fc1", "fc2", "out", "model"))
    assert (profile["n"] == 2).all()  # seeds
    for row in profile.itertuples():
        sub = metrics[(metrics["step"] == row.step) & (metrics["layer"] == row.layer)]
        signal = sub.loc[sub["metric"] == "grad_signal", "value"].mean()
        noise = sub.loc[sub["metric"] == "grad_var_trace", "value"].mean()
        snrs = sub.loc[sub["metric"] == "grad_snr", "value"]
        assert row.snr == pytest.approx(signal / noise, rel=1e-12)
        assert row.snr != pytest.approx(snrs.mean())  # a ratio of means, not a mean of ratios
    fc2 = profile.set_index(["step", "layer"]).loc[(1, "fc2"), "snr"]
    assert fc2 == pytest.approx(((2 * 1.0) + (2 * -0.5)) / 2 / ((3 * 1.0 + 3 * 2.0) / 2))


def test_noise_profile_counts_the_seeds_present_and_is_empty_without_the_probe():
    metrics = _mlp_noise_rows()
    one_seed = metrics[~((metrics["seed"] == 1) & (metrics["step"] == 2))]
    profile = noise_profile(one_seed).set_index(["step", "layer"])
    assert (profile.loc[1, "n"] == 2).all() and (profile.loc[2, "n"] == 1).all()
    assert profile.loc[(2, "out"), "snr"] == pytest.approx((3 * 2 * 1.0) / (4 * 1.0))
    empty = noise_profile(metrics[metrics["metric"] == "train_loss"])
    assert empty.empty and list(empty.columns) == ["step", "layer", "snr", "n"]
