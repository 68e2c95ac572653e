"""Weight spectra against numpy on hand-made matrices, the power-law tail fit, and the weight_spectra probe."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, special
from torch import nn

from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError
from analysis_lib.weights import (
    empirical_spectral_density,
    layer_weight_spectra,
    powerlaw_tail,
    shuffled_null,
    spectrum_stats,
    weight_matrix,
)
from analysis_lib.weights.powerlaw_fit import ks_fit
from analysis_lib.weights.spectra import PROBE_METRICS, STATS, mp_density, probe_spectra


def orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def with_singular_values(rng, n, m, s):
    """U diag(s) Vᵀ (n × m) with random orthogonal U, V."""
    return orthogonal(rng, n)[:, :len(s)] @ np.diag(s) @ orthogonal(rng, m)[:, :len(s)].T


def reference(W: np.ndarray) -> dict[str, float]:
    """The statistics straight from numpy's SVD and the definitions."""
    s = np.linalg.svd(W, compute_uv=False)
    p = s / s.sum()
    edge = np.std(W) * (math.sqrt(W.shape[0]) + math.sqrt(W.shape[1]))
    return {"sigma_max": s[0], "stable_rank": np.sum(W**2) / s[0] ** 2,
            "effective_rank": math.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))),
            "condition_number": s[0] / s[-1], "mp_edge": edge, "n_above_mp": float(np.sum(s > edge))}


def pareto(rng, n, alpha, xmin=1.0):
    """Samples of p(x) ∝ x^(−alpha) on x ≥ xmin by the inverse CDF."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("n, m", [(30, 12), (12, 30), (20, 20)])
def test_known_singular_values(n, m):
    rng = np.random.default_rng(n * m)
    s = np.sort(rng.uniform(0.1, 5.0, min(n, m)))[::-1]
    W = with_singular_values(rng, n, m, s)
    got = spectrum_stats(torch.tensor(W))
    assert list(got) == list(STATS)
    assert got["sigma_max"] == pytest.approx(s[0], rel=1e-12)
    assert got["stable_rank"] == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-12)
    assert got["condition_number"] == pytest.approx(s[0] / s[-1], rel=1e-10)
    p = s / s.sum()
    assert got["effective_rank"] == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-12)
    for key, value in reference(W).items():
        assert got[key] == pytest.approx(value, rel=1e-10), key


def test_rank_one_and_zero_matrices():
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(9), rng.standard_normal(6)
    got = spectrum_stats(torch.tensor(np.outer(u, v)))
    assert got["sigma_max"] == pytest.approx(np.linalg.norm(u) * np.linalg.norm(v), rel=1e-12)
    assert got["stable_rank"] == pytest.approx(1.0, rel=1e-12)
    assert got["effective_rank"] == pytest.approx(1.0, rel=1e-10)
    assert got["condition_number"] == math.inf
    zero = spectrum_stats(torch.zeros(4, 3, dtype=torch.float64))
    assert zero["sigma_max"] == 0.0 and zero["n_above_mp"] == 0.0
    assert all(math.isnan(zero[k]) for k in ("stable_rank", "effective_rank", "condition_number"))


@pytest.mark.parametrize("n, m, sigma", [(400, 200, 0.5), (150, 600, 2.0)])
def test_marchenko_pastur_bulk_edge_and_planted_spikes(n, m, sigma):
    rng = np.random.default_rng(7)
    X = sigma * rng.standard_normal((n, m))
    edge = sigma * (math.sqrt(n) + math.sqrt(m))  # the closed-form edge for the true σ
    got = spectrum_stats(torch.tensor(X))
    assert got["mp_edge"] == pytest.approx(edge, rel=0.01)
    assert got["sigma_max"] == pytest.approx(edge, rel=0.03)
    assert got["n_above_mp"] <= 1  # Tracy–Widom fluctuations may put the top value just above
    # Planted rank-3 signal with singular values 2, 3 and 4 times the edge: exactly three above.
    spikes = with_singular_values(rng, n, m, np.array([4.0, 3.0, 2.0]) * edge)
    spiked = spectrum_stats(torch.tensor(X + spikes))
    assert spiked["n_above_mp"] == 3
    assert spiked["sigma_max"] == pytest.approx(4 * edge, rel=0.05)


def test_gaussian_matrices_rarely_exceed_the_edge():
    counts = [spectrum_stats(torch.tensor(np.random.default_rng(s).standard_normal((120, 80))))["n_above_mp"]
              for s in range(20)]
    assert np.mean(counts) <= 0.5


@pytest.mark.parametrize("n, m", [(50, 20), (20, 50)])
def test_esd_against_numpy_histogram(n, m):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((n, m))
    big = max(n, m)
    lam = np.linalg.eigvalsh(W.T @ W / big if n >= m else W @ W.T / big)
    table = empirical_spectral_density(torch.tensor(W), bins=7)
    count, edges = np.histogram(lam, bins=7)
    assert list(table.columns) == ["bin_left", "bin_right", "count", "density", "mp_density"]
    np.testing.assert_allclose(table["bin_left"], edges[:-1], rtol=1e-10)
    np.testing.assert_array_equal(table["count"], count)
    np.testing.assert_allclose(table["density"], count / (len(lam) * np.diff(edges)), rtol=1e-10)
    given = empirical_spectral_density(torch.tensor(W), bins=[0.0, 1.0, 2.0, 10.0])
    np.testing.assert_array_equal(given["count"], np.histogram(lam, bins=[0.0, 1.0, 2.0, 10.0])[0])


def test_mp_density_integrates_to_one_and_matches_a_large_sample():
    for q in (0.25, 0.5, 1.0):
        lo, hi = (1 - math.sqrt(q)) ** 2 * 4.0, (1 + math.sqrt(q)) ** 2 * 4.0
        total, _ = integrate.quad(lambda x: mp_density(np.array([x]), 4.0, q)[0], lo, hi, limit=200)
        assert total == pytest.approx(1.0, abs=2e-3)
    W = np.random.default_rng(0).standard_normal((1600, 800))
    table = empirical_spectral_density(torch.tensor(W), bins=20)
    width = table["bin_right"] - table["bin_left"]
    assert np.sum(np.abs(table["density"] - table["mp_density"]) * width) < 0.1


def test_conv_kernels_are_out_by_in_times_kernel():
    conv = nn.Conv2d(3, 5, (2, 4)).double()
    W = weight_matrix(conv.weight)
    assert W.shape == (5, 24)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    patches = F.unfold(x, (2, 4))  # (B, 3·2·4, L): the matrix multiplies the unfolded patches
    out = (W @ patches).reshape(2, 5, 5, 4) + conv.bias.reshape(1, 5, 1, 1)
    torch.testing.assert_close(out, conv(x), rtol=1e-12, atol=1e-12)
    kernel = nn.Conv1d(4, 6, 3).weight
    assert weight_matrix(kernel).shape == (6, 12)


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="tensor"):
        weight_matrix(torch.zeros(5))
    with pytest.raises(ConfigError, match="W"):
        spectrum_stats(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ConfigError, match="bins"):
        empirical_spectral_density(torch.eye(3), bins=[1.0, 0.5])
    with pytest.raises(ConfigError, match="no weight matrix"):
        layer_weight_spectra(nn.LayerNorm(4))
    with pytest.raises(ConfigError, match="min_tail"):
        layer_weight_spectra(nn.Linear(3, 3), min_tail=1)
    with pytest.raises(ConfigError, match="eigenvalues"):
        powerlaw_tail([1.0, -2.0, 3.0])
    with pytest.raises(ConfigError, match="ci"):
        powerlaw_tail(np.ones(80), ci=1.0)


def test_shuffled_null_permutes_the_entries():
    W = torch.randn(7, 5, dtype=torch.float64)
    state = torch.random.get_rng_state()
    null = shuffled_null(W, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert null.shape == W.shape and not torch.equal(null, W)
    assert torch.equal(torch.sort(null.reshape(-1)).values, torch.sort(W.reshape(-1)).values)
    assert torch.equal(shuffled_null(W, seed=3), null)
    assert spectrum_stats(null)["mp_edge"] == pytest.approx(spectrum_stats(W)["mp_edge"], rel=1e-12)


def brute_force_clauset(x):
    """x_min, α by looping over every candidate with powerlaw's tail CDF (fraction strictly below)."""
    x = np.sort(x)
    best = (math.inf, None, None)
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        alpha = 1 + len(tail) / np.sum(np.log(tail / xmin))
        values = np.unique(tail)
        empirical = np.array([np.mean(tail < v) for v in values])
        d = np.max(np.abs(1 - (values / xmin) ** (1 - alpha) - empirical))
        if d < best[0]:
            best = (d, xmin, alpha)
    return best


def test_ks_fit_matches_a_brute_force_loop_and_the_powerlaw_package():
    import powerlaw

    rng = np.random.default_rng(5)
    x = np.concatenate([pareto(rng, 150, 3.5), rng.uniform(0, 1, 50)])
    for data in (x, x[rng.integers(0, len(x), len(x))]):  # and a bootstrap sample, with ties
        alpha, xmin, n_tail, d = ks_fit(data)
        d_ref, xmin_ref, alpha_ref = brute_force_clauset(data)
        assert (xmin, n_tail) == (xmin_ref, int(np.sum(data >= xmin_ref)))
        assert alpha == pytest.approx(alpha_ref, rel=1e-12) and d == pytest.approx(d_ref, rel=1e-10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = powerlaw.Fit(data, verbose=False, parameter_ranges={"alpha": [1.0, 1e3]})
        assert fit.xmin == xmin and fit.power_law.alpha == pytest.approx(alpha, rel=1e-10)


def test_alpha_recovers_a_known_exponent_and_prefers_the_power_law():
    rng = np.random.default_rng(11)
    x = pareto(rng, 2000, 2.5)
    fit = powerlaw_tail(x, n_boot=30, ci=0.95, seed=0)
    assert fit["status"] == "fitted"
    assert fit["alpha"] == pytest.approx(2.5, abs=0.1)
    assert fit["alpha_lo"] < fit["alpha"] < fit["alpha_hi"] and fit["alpha_hi"] - fit["alpha_lo"] < 0.4
    assert fit["R_exponential"] > 0 and fit["p_exponential"] < 0.01
    # R and p against an exponential tail, from the closed-form MLEs on x ≥ x_min (Vuong 1989).
    tail = np.sort(x)[np.sort(x) >= fit["xmin"]] / fit["xmin"]
    ll_pl = np.log(fit["alpha"] - 1) - fit["alpha"] * np.log(tail)
    rate = 1 / np.mean(tail - 1)
    ll_exp = np.log(rate) - rate * (tail - 1)
    diff = ll_pl - ll_exp  # both per unit of x / x_min, so the shift log x_min cancels
    assert fit["R_exponential"] == pytest.approx(diff.sum(), rel=1e-4)
    p = special.erfc(abs(diff.sum()) / (math.sqrt(2 * len(diff)) * diff.std()))
    assert fit["p_exponential"] == pytest.approx(p, rel=1e-2)  # powerlaw fits the rate numerically


def test_bootstrap_ci_covers_the_true_exponent():
    covered = []
    for rep in range(40):
        x = pareto(np.random.default_rng(1000 + rep), 200, 2.5)
        fit = powerlaw_tail(x, min_tail=20, n_boot=60, ci=0.9, seed=rep)
        covered.append(fit["alpha_lo"] <= 2.5 <= fit["alpha_hi"])
    assert 0.8 <= np.mean(covered) <= 1.0


def test_refuses_a_short_tail():
    few = powerlaw_tail(pareto(np.random.default_rng(0), 30, 2.5), min_tail=50)
    assert few["status"].startswith("not identifiable: 30 positive eigenvalues")
    assert all(math.isnan(v) for k, v in few.items() if k != "status")
    # A body the power law does not fit with a short steep top: the KS tail is below min_tail.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(1.0, 2.0, 400), pareto(rng, 10, 2.0, xmin=20.0)])
    alpha, _, n_tail, _ = ks_fit(x)
    short = powerlaw_tail(x, min_tail=50)
    assert n_tail < 50 and short["n_tail"] == n_tail
    assert short["status"].startswith("not identifiable: the KS-chosen tail holds")
    assert math.isnan(short["alpha"]) and math.isnan(short["alpha_lo"]) and math.isnan(short["R_lognormal"])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(400, 300, bias=False)


def test_layer_table_on_a_users_model():
    torch.manual_seed(0)
    model = Net().double()
    with torch.no_grad():  # a heavy-tailed spectrum in fc so that α is identifiable
        rng = np.random.default_rng(2)
        s = np.sqrt(np.sort(pareto(rng, 300, 3.0))[::-1])
        model.fc.weight.copy_(torch.tensor(with_singular_values(rng, 300, 400, s)))
    table = layer_weight_spectra(model, null=True, n_boot=20)
    assert list(table[["layer", "tensor", "matrix"]].itertuples(index=False, name=None)) == [
        ("conv", "weight", "weight"), ("conv", "weight", "shuffled"), ("fc", "weight", "weight"),
        ("fc", "weight", "shuffled")]
    assert table[["rows", "cols", "shape"]].iloc[0].tolist() == [4, 6, "4x2x3"]
    for row, W in ((0, model.conv.weight.detach().numpy().reshape(4, 6)), (2, model.fc.weight.detach().numpy())):
        for key, value in reference(W).items():
            assert table.loc[row, key] == pytest.approx(value, rel=1e-10), key
    assert table.loc[0, "status"].startswith("not identifiable: 4 positive eigenvalues")
    import powerlaw

    lam = np.linalg.svd(model.fc.weight.detach().numpy(), compute_uv=False) ** 2 / 400
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = powerlaw.Fit(lam, verbose=False, parameter_ranges={"alpha": [1.0, 1e3]})
    assert table.loc[2, "status"] == "fitted"
    assert table.loc[2, "alpha"] == pytest.approx(ref.power_law.alpha, rel=1e-9)
    assert table.loc[2, "xmin"] == pytest.approx(ref.xmin, rel=1e-12)
    plain = layer_weight_spectra(model, fit_tail=False)
    assert len(plain) == 2 and set(plain["status"]) == {"not fitted"} and plain["alpha"].isna().all()


def test_probe_rows_match_the_function_and_record_alpha_only_where_identifiable():
    rng = np.random.default_rng(4)
    s = np.sqrt(np.sort(pareto(rng, 200, 3.0))[::-1])
    params = {"big.weight": torch.tensor(with_singular_values(rng, 200, 260, s)),
              "big.bias": torch.zeros(200), "small.weight": torch.randn(5, 3, 2),
              "attn.in_proj_weight": torch.randn(6, 4)}
    rows = {(layer, metric): value for layer, metric, value in probe_spectra(params)}
    for layer, name, suffix in (("big", "big.weight", ""), ("small", "small.weight", ""),
                                ("attn", "attn.in_proj_weight", ".in_proj_weight")):
        expected = reference(params[name].double().numpy().reshape(params[name].shape[0], -1))
        for metric in PROBE_METRICS:
            assert rows[(layer, metric + suffix)] == pytest.approx(expected[metric], rel=1e-10)
    lam = np.linalg.svd(params["big.weight"].numpy(), compute_uv=False) ** 2 / 260
    assert rows[("big", "alpha")] == pytest.approx(brute_force_clauset(lam)[2], rel=1e-10)
    assert ("small", "alpha") not in rows and ("attn", "alpha.in_proj_weight") not in rows


@pytest.mark.parametrize("model", [{}, {"kind": "cnn", "depth": 2, "width": 3, "kernel_size": 3}])
def test_probe_leaves_training_unchanged_and_equals_the_function_on_the_final_weights(tiny_config, model):
    on = with_overrides(tiny_config, {"probes.names": ["weight_spectra", "weights"],
                                      **{f"model.{k}": v for k, v in model.items()}})
    off = with_overrides(on, {"probes.names": ["weights"]})
    result = train_classifier(on)
    metrics = result.metrics
    loss = lambda m: m[m["metric"] == "batch_loss"].set_index("step")["value"]  # noqa: E731
    pd.testing.assert_series_equal(loss(metrics), loss(train_classifier(off).metrics), check_exact=True)
    recorded = metrics[metrics["metric"].isin(PROBE_METRICS)]
    assert set(recorded["step"]) == {0, 3, 6, 9, 12}
    final = result.tables["final"]
    matrices = {name: t for name, t in final.items() if t.ndim >= 2}
    assert any(t.ndim == 3 for t in matrices.values()) == bool(model)  # the CNN's kernels are reshaped
    last = recorded[recorded["step"] == 12].set_index(["layer", "metric"])["value"]
    assert len(last) == len(matrices) * len(PROBE_METRICS)
    for name, tensor in matrices.items():
        expected = reference(tensor.double().numpy().reshape(tensor.shape[0], -1))
        for metric in PROBE_METRICS:
            assert last[(name.rsplit(".", 1)[0], metric)] == pytest.approx(expected[metric], rel=1e-9)
