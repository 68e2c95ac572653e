"""Curvature numbers against brute force in float64 on tiny models (dense torch.func.hessian,
torch.linalg.eigvalsh, exact traces), plus the statistical behaviour of the randomised estimators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from analysis_lib.config import ModelConfig
from analysis_lib.density import density_curve, slq_nodes, slq_probes, spectrum_criteria
from analysis_lib.hessian import HessianOperator, dense_hessian, layer_blocks
from analysis_lib.lanczos import NotConvergedError, top_eigenpairs
from analysis_lib.models import build_model
from analysis_lib.subspace import gradient_overlap, subspace_overlap
from analysis_lib.trace import exact_trace, hutchinson, hutchpp

# Tiny models as data: (name, ModelConfig, input features).
MODELS = [
    ("mlp", ModelConfig(kind="mlp", depth=2, width=6, activation="tanh"), 5),
    ("cnn", ModelConfig(kind="cnn", depth=2, width=3, kernel_size=3), 8),
    ("mlp-batchnorm", ModelConfig(kind="mlp", depth=2, width=5, norm="batch"), 4),
]


def _problem(config: ModelConfig, n_features: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = build_model(config, n_features, 3, seed).double()
    if config.norm == "batch":  # non-trivial running statistics, so eval mode matters
        with torch.no_grad():
            model.train()(torch.randn(64, n_features, generator=gen, dtype=torch.float64))
    x = torch.randn(30, n_features, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    return model, x, y


@pytest.fixture(params=MODELS, ids=[m[0] for m in MODELS])
def problem(request):
    _, config, n_features = request.param
    return _problem(config, n_features)


def test_hvp_matches_dense_hessian(problem):
    model, x, y = problem
    H = dense_hessian(model, x, y)
    op = HessianOperator(model, x, y, chunk_size=7)  # chunks must add up to the mean loss
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.dense(), H, rtol=1e-10, atol=1e-12)


def test_block_hvp_matches_the_block_of_the_dense_hessian(problem):
    model, x, y = problem
    names = [n for n, _ in model.named_parameters()]
    H = dense_hessian(model, x, y)
    for layer, block in layer_blocks(model).items():
        idx = torch.cat([torch.arange(sum(p.numel() for n, p in model.named_parameters() if names.index(n) < names.index(b)),
                                      sum(p.numel() for n, p in model.named_parameters() if names.index(n) <= names.index(b)))
                         for b in block])
        op = HessianOperator(model, x, y, params=block)
        torch.testing.assert_close(op.dense(), H[idx][:, idx], rtol=1e-10, atol=1e-12, msg=layer)


def test_top_and_bottom_eigenvalues_match_eigvalsh(problem):
    model, x, y = problem
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    op = HessianOperator(model, x, y)
    top = top_eigenpairs(op.matvec, op.dim, k=5, tol=1e-9, strict=True)
    torch.testing.assert_close(top.eigenvalues, exact.flip(0)[:5], rtol=1e-7, atol=1e-10)
    assert top.all_converged and top.n_matvecs <= op.dim
    low = top_eigenpairs(op.matvec, op.dim, k=1, which="smallest", tol=1e-9, strict=True)
    assert low.eigenvalues[0].item() == pytest.approx(exact[0].item(), rel=1e-7, abs=1e-10)
    # Ritz vectors are eigenvectors: ‖H y − θ y‖ small, and orthonormal.
    V = top.eigenvectors
    torch.testing.assert_close(V.T @ V, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    resid = (op.matmat(V) - V * top.eigenvalues).norm(dim=0)
    assert (resid <= 1e-6 * top.eigenvalues.abs().max()).all()


def test_unconverged_results_are_never_silent():
    A = torch.diag(torch.linspace(1.0, 2.0, 400, dtype=torch.float64))  # clustered spectrum: slow
    with pytest.warns(RuntimeWarning, match="did not converge"):
        result = top_eigenpairs(lambda v: A @ v, 400, k=3, tol=1e-12, max_steps=10)
    assert not result.all_converged
    with pytest.raises(NotConvergedError):
        top_eigenpairs(lambda v: A @ v, 400, k=3, tol=1e-12, max_steps=10, strict=True)


def test_warm_start_needs_fewer_products(problem):
    model, x, y = problem
    op = HessianOperator(model, x, y)
    cold = top_eigenpairs(op.matvec, op.dim, k=1, tol=1e-8)
    warm = top_eigenpairs(op.matvec, op.dim, k=1, tol=1e-8, v0=cold.eigenvectors[:, 0])
    assert warm.n_matvecs < cold.n_matvecs
    assert warm.eigenvalues[0].item() == pytest.approx(cold.eigenvalues[0].item(), rel=1e-7)


def test_operator_leaves_the_model_untouched_and_does_not_accumulate():
    model, x, y = _problem(*MODELS[2][1:])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    ops = [HessianOperator(model, x, y, train_mode=mode) for mode in (False, True, False)]
    v = torch.ones(ops[0].dim, dtype=torch.float64)
    results = [op.matvec(v) for op in ops]
    torch.testing.assert_close(results[0], results[2], rtol=0, atol=0)  # no accumulation
    assert not torch.allclose(results[0], results[1])  # BatchNorm mode matters and is honoured
    assert model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_ggn_of_a_linear_model_equals_its_hessian_and_is_psd():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (20,), generator=gen)
    linear = nn.Sequential(nn.Linear(4, 3)).double()
    G = HessianOperator(linear, x, y, kind="ggn").dense()
    torch.testing.assert_close(G, dense_hessian(linear, x, y), rtol=1e-10, atol=1e-12)
    model, x, y = _problem(*MODELS[0][1:])
    assert torch.linalg.eigvalsh(HessianOperator(model, x, y, kind="ggn").dense()).min() > -1e-12


def _outlier_matrix(dim=120, seed=0):
    """Symmetric matrix with a few large outliers over a bulk near zero, like a Hessian."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.cat([torch.tensor([50.0, 30.0, 20.0, -5.0]), 0.3 * torch.randn(dim - 4, generator=gen)])
    return (Q * eig) @ Q.T


def test_trace_estimators_are_unbiased_with_honest_errors():
    A = _outlier_matrix()
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
    A = _outlier_matrix()
    exact = torch.trace(A).item()
    err = {f.__name__: np.sqrt(np.mean([(f(lambda v: A @ v, 120, 30, seed=s).estimate - exact) ** 2
                                         for s in range(100)])) for f in (hutchinson, hutchpp)}
    assert err["hutchpp"] < 0.5 * err["hutchinson"]


def test_slq_moments_are_exact_and_density_integrates_to_one():
    A = _outlier_matrix(dim=40)
    probes = slq_probes(40, 3, seed=1)
    nodes = slq_nodes(lambda v: A @ v, 40, steps=8, probes=probes)
    for probe, sub in nodes.groupby("probe"):
        v = probes[probe] / probes[probe].norm()
        assert sub["weight"].sum() == pytest.approx(1.0, abs=1e-12)
        for p in range(1, 2 * 8):  # Gauss quadrature with m nodes is exact up to degree 2m − 1
            exact = (v @ torch.linalg.matrix_power(A, p) @ v).item()
            assert (sub["weight"] * sub["node"] ** p).sum() == pytest.approx(exact, rel=1e-6), p
    grid = np.linspace(-20, 70, 4000)
    dens = density_curve(nodes, grid, sigma=0.5)
    for _, sub in dens.groupby("probe"):
        assert np.trapezoid(sub["density"], grid) == pytest.approx(1.0, abs=1e-3)


def test_slq_with_a_full_basis_recovers_the_spectrum_and_criteria():
    eig = torch.tensor([-2.0, -1.0, 0.5, 1.0, 4.0], dtype=torch.float64)
    A = torch.diag(eig)
    nodes = slq_nodes(lambda v: A @ v, 5, steps=5, n_probes=1)
    torch.testing.assert_close(torch.tensor(sorted(nodes["node"]), dtype=torch.float64), eig, rtol=0, atol=1e-10)
    crit = spectrum_criteria(nodes).iloc[0]
    w = 1 / 5  # a Rademacher probe weighs every eigenvector equally: (±1/√5)²
    assert crit["re"] == pytest.approx(0.5)
    assert crit["negative_mass"] == pytest.approx(0.4)
    kh = (math.sqrt(2 * w) + math.sqrt(1 * w)) / (math.sqrt(0.5 * w) + math.sqrt(w) + math.sqrt(4 * w))
    assert crit["Kh_0.5"] == pytest.approx(kh)


def test_overlaps_on_constructed_cases():
    e = torch.eye(4, dtype=torch.float64)
    assert gradient_overlap(e[0] + e[1], e[:, :1]) == pytest.approx(0.5)
    assert gradient_overlap(3 * e[2], e[:, 2:4]) == pytest.approx(1.0)
    assert subspace_overlap(e[:, :2], e[:, [1, 0]]) == pytest.approx(1.0)
    assert subspace_overlap(e[:, :2], e[:, 1:3]) == pytest.approx(0.5)


# (spectrum, max_outliers, expected count): gaps in log scale decide.
OUTLIER_CASES = [
    ([100.0, 50.0, 20.0, 0.5, 0.4, 0.3, -0.2], 6, 3),
    ([9.0, 8.0, 0.1, 0.09, 0.08], 4, 2),
    ([5.0, 0.01, 0.009], 2, 1),
    ([1.0, 0.9, 0.8, 0.7], 3, 3),  # no clear gap: the rule still returns its argmax; report the spectrum
]


@pytest.mark.parametrize("eigs, max_outliers, expected", OUTLIER_CASES)
def test_count_outliers_by_the_largest_log_gap(eigs, max_outliers, expected):
    from analysis_lib.spectrum import count_outliers

    assert count_outliers(np.array(eigs), max_outliers) == expected


def test_spectrum_table_exact_and_slq_agree_on_moments(problem):
    from analysis_lib.spectrum import spectrum_table

    model, x, y = problem
    op = HessianOperator(model, x, y)
    exact = spectrum_table(op, step=3)
    assert set(exact["method"]) == {"exact"} and len(exact) == op.dim
    torch.testing.assert_close(torch.tensor(np.sort(exact["eigenvalue"].to_numpy())),
                               torch.linalg.eigvalsh(dense_hessian(model, x, y)), rtol=1e-8, atol=1e-10)
    slq = spectrum_table(op, step=3, exact_max_dim=1, slq_probes=30, slq_steps=20)
    assert set(slq["method"]) == {"slq"}
    # Σ w λ² per probe estimates tr(H²)/dim; averaged over 30 probes it is within a few SE.
    m2 = slq.assign(m=slq["weight"] * slq["eigenvalue"] ** 2).groupby("probe")["m"].sum()
    exact_m2 = (exact["eigenvalue"] ** 2).mean()
    assert abs(m2.mean() - exact_m2) < 4 * m2.std() / np.sqrt(len(m2))


def test_layer_traces_add_up_to_the_model_trace(problem):
    from analysis_lib.trace import layer_traces

    model, x, y = problem
    H = dense_hessian(model, x, y)
    table = layer_traces(model, x, y).set_index("layer")
    assert table["method"].isin(["exact", "exact diagonal"]).all()
    assert table.loc["model", "estimate"] == pytest.approx(torch.trace(H).item(), rel=1e-9)
    assert table.drop("model")["estimate"].sum() == pytest.approx(torch.trace(H).item(), rel=1e-9)
    sampled = layer_traces(model, x, y, exact_max_dim=1, n_matvecs=30).set_index("layer")
    assert (sampled["method"] == "Hutch++").all() and (sampled["se"] > 0).any()


@pytest.mark.parametrize("residual", [False, True])
def test_hessian_diagonal_of_relu_mlps_is_exact(residual):
    from analysis_lib.hessian import hessian_diagonal

    model, x, y = _problem(ModelConfig(kind="mlp", depth=3, width=5, residual=residual), 4)
    diag = hessian_diagonal(model, x, y)
    flat = torch.cat([diag[n].reshape(-1) for n, _ in model.named_parameters()])
    H = dense_hessian(model, x, y)
    torch.testing.assert_close(flat, torch.diagonal(H), rtol=1e-9, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())
    from analysis_lib.trace import layer_traces

    table = layer_traces(model, x, y).set_index("layer")
    assert (table["method"] == "exact diagonal").all()
    assert table.loc["model", "estimate"] == pytest.approx(torch.trace(H).item(), rel=1e-9)


def test_hessian_diagonal_refuses_models_where_it_does_not_hold():
    from analysis_lib.hessian import hessian_diagonal

    for config, n_features in (MODELS[0][1:], MODELS[1][1:], MODELS[2][1:]):  # tanh, conv, batchnorm
        model, x, y = _problem(config, n_features)
        assert hessian_diagonal(model, x, y) is None
