"""Tests of analysis_lib.gradients.snr: the mini-batch SNR against per-batch gradients by hand, in float64.

Also: the relation to the per-sample SNR of gradients.noise (B times its square, with the finite-population
factor) exactly over every mini-batch of a tiny dataset; the probe leaves training unchanged and records the
function's numbers; the phase switch on hand-made curves (a known switch, none, noisy curves); refusals.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.gradients.noise import GradientNoiseProbe
from analysis_lib.gradients.snr import (
    SNR_METRICS,
    batch_statistics,
    draw_batches,
    gradient_snr,
    minibatch_gradients,
    minibatch_snr_from_per_sample,
    phase_switch,
)
from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.training.data import load_dataset
from analysis_lib.training.models import build_model
from analysis_lib.validation import ConfigError
from tests.cases import tiny_config


def _model_and_data(config):
    data = load_dataset(config.data).to("cpu", torch.float64)
    model = build_model(config.model, data.n_features, data.n_classes, config.seed).double()
    return model, data.x_train, data.y_train


def _by_hand(model, x, y, batches):
    """Layer -> (K, P) numpy gradients, one ``backward()`` into ``.grad`` per mini-batch."""
    out: dict = {}
    for idx in batches:
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        for name, p in model.named_parameters():
            out.setdefault(name.rsplit(".", 1)[0], {}).setdefault(name, []).append(p.grad.reshape(-1).numpy().copy())
    model.zero_grad()
    layers = {layer: np.concatenate([np.stack(v) for v in tensors.values()], axis=1) for layer, tensors in out.items()}
    layers["model"] = np.concatenate(list(layers.values()), axis=1)
    return layers


def _reference(g: np.ndarray) -> dict:
    k = g.shape[0]
    mean = g.mean(axis=0)
    dev = sum(float(np.sum((row - mean) ** 2)) for row in g)
    signal = float(mean @ mean) - dev / (k - 1) / k
    return {"grad_snr_mb": math.sqrt(max(signal, 0) / (dev / (k - 1))),
            "snr_plain": math.sqrt(float(mean @ mean) / (dev / k)), "snr_signal": signal, "snr_var": dev / (k - 1)}


def test_batch_statistics_on_hand_made_gradients():
    g = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    # mean (2, 2); deviations (-1,-2), (1,0), (0,2): squared norms 5, 1, 4 -> 10; var 5; signal 8 - 5/3
    got = batch_statistics(g)
    assert got["snr_var"] == pytest.approx(5.0, rel=1e-12)
    assert got["snr_signal"] == pytest.approx(8 - 5 / 3, rel=1e-12)
    assert got["grad_snr_mb"] == pytest.approx(math.sqrt((8 - 5 / 3) / 5), rel=1e-12)
    assert got["snr_plain"] == pytest.approx(math.sqrt(8 / (10 / 3)), rel=1e-12)
    assert math.isnan(batch_statistics(torch.ones(3, 2))["grad_snr_mb"])  # no noise: undefined, not infinite
    assert batch_statistics(torch.tensor([[1.0], [-1.0]]))["grad_snr_mb"] == 0.0  # signal estimate <= 0
    with pytest.raises(ValueError, match="K >= 2"):
        batch_statistics(torch.ones(1, 3))


def test_gradient_snr_matches_per_batch_gradients_by_hand():
    model, x, y = _model_and_data(tiny_config())
    rows = gradient_snr(model, F.cross_entropy, x, y, n_batches=6, batch_size=10, seed=3)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad leaves .grad alone
    expected = _by_hand(model, x, y, draw_batches(len(y), 6, 10, 3))
    got = pd.DataFrame(rows, columns=["layer", "metric", "value"]).set_index(["layer", "metric"])["value"]
    assert set(got.index.get_level_values(0)) == {"fc1", "fc2", "out", "model"}
    for layer, g in expected.items():
        for metric, value in _reference(g).items():
            assert got[(layer, metric)] == pytest.approx(value, rel=1e-9), (layer, metric)


def test_draw_batches_is_seeded_and_without_replacement():
    a, b, c = draw_batches(50, 4, 20, 7), draw_batches(50, 4, 20, 7), draw_batches(50, 4, 20, 8)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not all(torch.equal(u, v) for u, v in zip(a, c))
    assert all(len(set(i.tolist())) == 20 for i in a)
    with pytest.raises(ConfigError, match="probes.snr_batch_size"):
        draw_batches(10, 4, 11, 0)
    with pytest.raises(ConfigError, match="probes.snr_batches"):
        draw_batches(10, 1, 5, 0)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_minibatch_snr_is_b_times_the_per_sample_snr_squared_over_every_batch(batch_size):
    """Over all C(N, B) mini-batches: ‖E g_b‖² / E‖g_b − E g‖² = B (N−1)/(N−B) · ‖E g‖² / tr Σ_population."""
    config = tiny_config()
    model, x, y = _model_and_data(config)
    x, y = x[:7], y[:7]
    n = len(y)
    subsets = [torch.tensor(s) for s in itertools.combinations(range(n), batch_size)]
    g = minibatch_gradients(model, F.cross_entropy, x, y, subsets)["model"].numpy()
    mean = g.mean(axis=0)
    population_var = float(np.mean(np.sum((g - mean) ** 2, axis=1)))
    direct = math.sqrt(float(mean @ mean) / population_var)
    model.zero_grad()
    with GradientNoiseProbe(model) as probe:
        F.cross_entropy(model(x), y).backward()
    stats = {(layer, metric): v for layer, metric, v in probe.statistics()}
    model.zero_grad()
    trace_population = stats[("model", "grad_var_trace")] * (n - 1) / n  # the probe's trace is unbiased
    per_sample = stats[("model", "grad_mean_sq_norm")] / trace_population  # ‖E g‖² exactly: all N samples
    assert minibatch_snr_from_per_sample(per_sample, batch_size, n) == pytest.approx(direct, rel=1e-9)
    with_replacement = minibatch_snr_from_per_sample(per_sample, batch_size)
    assert with_replacement == pytest.approx(math.sqrt(batch_size * per_sample), rel=1e-12)
    if batch_size > 1:
        assert with_replacement < direct  # the finite-population factor matters here


def test_the_probe_leaves_training_unchanged_and_records_the_function():
    on = tiny_config(probes={"names": ["eval", "gradient_snr"], "snr_batches": 4, "snr_batch_size": 15},
                     train={"dtype": "float64"})
    off = with_overrides(on, {"probes.names": ["eval"]})
    metrics = train_classifier(on).metrics
    plain = train_classifier(off).metrics
    for metric in ("batch_loss", "train_loss"):
        a = metrics[metrics["metric"] == metric].reset_index(drop=True)
        b = plain[plain["metric"] == metric].reset_index(drop=True)
        assert len(a) > 0 and a[["step", "value"]].equals(b[["step", "value"]]), metric
    recorded = metrics[metrics["metric"].isin(SNR_METRICS)]
    assert set(recorded["step"]) == {0, 3, 6, 9, 12}
    model, x, y = _model_and_data(on)  # θ(0): the seeded initial weights
    expected = _by_hand(model, x, y, draw_batches(len(y), 4, 15, 0))
    at0 = recorded[recorded["step"] == 0].set_index(["layer", "metric"])["value"]
    for layer, g in expected.items():
        assert at0[(layer, "grad_snr_mb")] == pytest.approx(_reference(g)["grad_snr_mb"], rel=1e-9)


def test_late_probe_fields_keep_run_ids_and_are_validated():
    from analysis_lib.runs.store import run_id

    assert run_id(tiny_config()) == run_id(tiny_config(probes={"snr_batches": 16, "snr_batch_size": 32}))
    assert run_id(tiny_config()) != run_id(tiny_config(probes={"snr_batches": 8}))
    with pytest.raises(ConfigError, match="probes.snr_batches"):
        tiny_config(probes={"snr_batches": 1})
    with pytest.raises(ConfigError, match="probes.snr_batch_size"):
        tiny_config(probes={"snr_batch_size": 0})


STEPS = np.arange(0, 100, 10)


def test_phase_switch_finds_a_known_switch():
    snr = np.array([5, 4, 3, 2, 1.5, 0.8, 0.5, 0.4, 0.3, 0.2])
    got = phase_switch(STEPS, snr)
    assert got == {"switch_step": 50.0, "high_early": 1.0, "low_late": 1.0, "switched": 1.0}
    assert phase_switch(STEPS, snr, threshold=2.5)["switch_step"] == 30.0


def test_phase_switch_without_a_switch():
    high = phase_switch(STEPS, np.full(10, 3.0))
    assert math.isnan(high["switch_step"]) and high["switched"] == 0.0 and high["low_late"] == 0.0
    low = phase_switch(STEPS, np.full(10, 0.5))  # below from the start: no drift phase
    assert low["switch_step"] == 0.0 and low["high_early"] == 0.0 and low["switched"] == 0.0
    back_up = phase_switch(STEPS, np.array([3, 2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2.0]))
    assert math.isnan(back_up["switch_step"])
    assert math.isnan(phase_switch([], [])["switch_step"])


def test_phase_switch_on_noisy_curves():
    spike = np.array([5, 4, 3, 0.5, 0.4, 1.6, 0.3, 0.3, 0.2, 0.2])  # one noisy probe back above 1
    assert phase_switch(STEPS, spike)["switch_step"] == 60.0  # stays below only after the spike
    assert phase_switch(STEPS, spike, window=3)["switch_step"] == 30.0  # the running median removes it
    with_nan = spike.copy()
    with_nan[5] = np.nan
    assert phase_switch(STEPS, with_nan)["switch_step"] == 30.0  # a NaN probe is dropped, not read as low
    rng = np.random.default_rng(0)
    noisy = np.exp(np.where(STEPS < 45, 1.0, -1.0) + 0.3 * rng.standard_normal(10))
    assert phase_switch(STEPS, noisy, window=3)["switch_step"] == 50.0


def test_phase_switch_refuses_bad_rules():
    with pytest.raises(ConfigError, match="window"):
        phase_switch(STEPS, np.ones(10), window=2)
    with pytest.raises(ConfigError, match="threshold"):
        phase_switch(STEPS, np.ones(10), threshold=0)
    with pytest.raises(ValueError, match="length"):
        phase_switch(STEPS, np.ones(9))
