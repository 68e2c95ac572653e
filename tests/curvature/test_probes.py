"""Curvature probes in a run against dense float64 Hessians built independently (tests/reference.py)."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.training.classifier import train_classifier
from analysis_lib.training.config import with_overrides
from tests.cases import cross_entropy
from tests.reference import dense_hessian


def _hessian_at_init(config, n):
    data = config.dataset()
    model = config.build_model()
    return dense_hessian(model, cross_entropy, data.x_train[:n], data.y_train[:n]), model, data


def test_sharpness_and_trace_probes_match_the_dense_hessian(tiny_config):
    """λ_max and the trace recorded during training equal those of the dense Hessian at θ(0)."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "train.steps": 1,
                                          "probes.names": ["sharpness", "hessian_trace"],
                                          "probes.sharpness_tol": 1e-9, "probes.trace_matvecs": 200,
                                          "probes.curvature_samples": 50})
    metrics = train_classifier(config).metrics.set_index(["step", "metric"])["value"]
    H, _, _ = _hessian_at_init(config, 50)
    assert metrics[(0, "lambda_max")] == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-8)
    assert metrics[(0, "lambda_max_converged")] == 1.0
    trace, se = metrics[(0, "hessian_trace")], metrics[(0, "hessian_trace_se")]
    assert abs(trace - torch.trace(H).item()) < 4 * se + 1e-9


def test_spectrum_probe_is_exact_at_the_first_and_last_step(tiny_config):
    config = with_overrides(tiny_config, {"train.dtype": "float64", "probes.names": ["spectrum"],
                                          "probes.curvature_samples": 40})
    result = train_classifier(config)
    spectrum = result.tables["spectrum"]
    assert sorted(spectrum["step"].unique()) == [0, config.train.steps]
    assert (spectrum["method"] == "exact").all()
    H, _, _ = _hessian_at_init(config, 40)
    got = torch.tensor(spectrum.loc[spectrum["step"] == 0, "eigenvalue"].to_numpy())
    torch.testing.assert_close(got, torch.linalg.eigvalsh(H), rtol=1e-8, atol=1e-10)


def test_gradient_overlap_probe_matches_dense_eigenvectors(tiny_config):
    """‖V_kᵀg‖²/‖g‖² at θ(0) with the top-k eigenvectors of the dense Hessian, k = number of classes."""
    config = with_overrides(tiny_config, {"train.dtype": "float64", "train.steps": 1,
                                          "probes.names": ["grad_overlap"], "probes.curvature_samples": 40})
    metrics = train_classifier(config).metrics.set_index(["step", "metric"])["value"]
    H, model, data = _hessian_at_init(config, 40)
    x, y = data.x_train[:40], data.y_train[:40]
    loss = cross_entropy(model(x), y)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))])
    _, vectors = torch.linalg.eigh(H)
    V = vectors[:, -3:]  # the top C = 3
    expected = ((V.T @ g).pow(2).sum() / g.pow(2).sum()).item()
    assert metrics[(0, "grad_overlap_converged")] == 1.0
    assert metrics[(0, "grad_overlap")] == pytest.approx(expected, rel=1e-3)
    assert metrics[(0, "grad_overlap_random")] == pytest.approx(3 / H.shape[0])
