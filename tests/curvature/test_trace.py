"""Hessian traces: randomised estimators on a constructed spectrum, exact ones against the dense reference.

Hutchinson and Hutch++ are unbiased with honest standard errors on an outlier spectrum and Hutch++ beats
Hutchinson there; layer_traces and hessian_diagonal agree with the trace and diagonal of the independent dense
reference (float64, tiny models of tests.cases).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis_lib.curvature.diagonal import hessian_diagonal
from analysis_lib.curvature.trace import exact_trace, hutchinson, hutchpp, layer_traces
from tests.cases import MODEL_CASES, RELU_CASES, classification_problem, cross_entropy, outlier_matrix
from tests.reference import dense_hessian


@pytest.fixture(params=MODEL_CASES, ids=[m[0] for m in MODEL_CASES])
def problem(request):
    _, config, n_features = request.param
    return classification_problem(config, n_features)


def test_trace_estimators_are_unbiased_with_honest_errors():
    A = outlier_matrix()
    exact = exact_trace(lambda v: A @ v, 120).estimate
    assert exact == pytest.approx(torch.trace(A).item(), rel=1e-12)
    for estimator in (hutchinson, hutchpp):
        runs = [estimator(lambda v: A @ v, 120, 30, seed=s) for s in range(200)]
        estimates = np.array([r.estimate for r in runs])
        se_of_mean = estimates.std(ddof=1) / math.sqrt(len(runs))
        assert abs(estimates.mean() - exact) < 4 * se_of_mean  # unbiased
        coverage = np.mean([abs(r.estimate - exact) <= 2 * r.se for r in runs])
        assert coverage > 0.8, estimator.__name__  # the reported SE is about right


def test_hutchpp_beats_hutchinson_on_outlier_spectra():
    A = outlier_matrix()
    exact = torch.trace(A).item()
    err = {f.__name__: np.sqrt(np.mean([(f(lambda v: A @ v, 120, 30, seed=s).estimate - exact) ** 2
                                         for s in range(100)])) for f in (hutchinson, hutchpp)}
    assert err["hutchpp"] < 0.5 * err["hutchinson"]


def test_layer_traces_add_up_to_the_model_trace(problem):
    model, x, y = problem
    H = dense_hessian(model, cross_entropy, x, y)
    table = layer_traces(model, F.cross_entropy, (x, y)).set_index("layer")
    assert table["method"].isin(["exact", "exact diagonal"]).all()
    assert table.loc["model", "estimate"] == pytest.approx(torch.trace(H).item(), rel=1e-9)
    assert table.drop("model")["estimate"].sum() == pytest.approx(torch.trace(H).item(), rel=1e-9)
    sampled = layer_traces(model, F.cross_entropy, (x, y), exact_max_dim=1, n_matvecs=30).set_index("layer")
    assert (sampled["method"] == "Hutch++").all() and (sampled["se"] > 0).any()


@pytest.mark.parametrize("case", RELU_CASES, ids=[c[0] for c in RELU_CASES])
def test_hessian_diagonal_of_relu_mlps_is_exact(case):
    _, config, n_features = case
    model, x, y = classification_problem(config, n_features)
    diag = hessian_diagonal(model, F.cross_entropy, (x, y))
    flat = torch.cat([diag[n].reshape(-1) for n, _ in model.named_parameters()])
    H = dense_hessian(model, cross_entropy, x, y)
    torch.testing.assert_close(flat, torch.diagonal(H), rtol=1e-9, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())
    table = layer_traces(model, F.cross_entropy, (x, y)).set_index("layer")
    assert (table["method"] == "exact diagonal").all()
    assert table.loc["model", "estimate"] == pytest.approx(torch.trace(H).item(), rel=1e-9)


def test_hessian_diagonal_refuses_models_where_it_does_not_hold():
    for _, config, n_features in MODEL_CASES:  # tanh, conv, batchnorm
        model, x, y = classification_problem(config, n_features)
        assert hessian_diagonal(model, F.cross_entropy, (x, y)) is None
    model, x, y = classification_problem(*RELU_CASES[0][1:])  # a ReLU MLP, but not F.cross_entropy
    assert hessian_diagonal(model, cross_entropy, (x, y)) is None
