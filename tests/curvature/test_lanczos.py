"""Lanczos eigenpairs of HessianOperator against eigvalsh of the independent dense reference.

Float64, the tiny models of tests.cases: top and bottom eigenvalues, Ritz vectors, warm starts, and loud
non-convergence. Then the stopping rule (the residual bound) on dense float64 matrices with chosen
spectra against ``torch.linalg.eigh``: every pair within tolerance and within its own bounds
(eigenvalue and eigenvector), also next to an eigenvalue 0.1% away; and the withdrawn Kato–Temple
rule ``stop="gap"`` refused with its reason.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis_lib.curvature.hessian import HessianOperator
from analysis_lib.curvature.lanczos import NotConvergedError, ritz_gaps, top_eigenpairs
from tests.cases import MODEL_CASES, classification_problem, cross_entropy
from tests.reference import dense_hessian


@pytest.fixture(params=MODEL_CASES, ids=[m[0] for m in MODEL_CASES])
def problem(request):
    _, config, n_features = request.param
    return classification_problem(config, n_features)


def test_top_and_bottom_eigenvalues_match_eigvalsh(problem):
    model, x, y = problem
    exact = torch.linalg.eigvalsh(dense_hessian(model, cross_entropy, x, y))
    op = HessianOperator(model, F.cross_entropy, (x, y))
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
    op = HessianOperator(model, F.cross_entropy, (x, y))
    cold = top_eigenpairs(op.matvec, op.dim, k=1, tol=1e-8)
    warm = top_eigenpairs(op.matvec, op.dim, k=1, tol=1e-8, v0=cold.eigenvectors[:, 0])
    assert warm.n_matvecs < cold.n_matvecs
    assert warm.eigenvalues[0].item() == pytest.approx(cold.eigenvalues[0].item(), rel=1e-7)


@pytest.mark.parametrize("tol", [1e-8, 1e-10])
def test_converged_pairs_of_a_float64_operator_meet_tight_tolerances(tol):
    """The tridiagonal matrix is float64: pairs flagged converged satisfy ‖Av − θv‖ ≤ tol·|θ| for real.

    A float32 tridiagonal caps the eigenvalues at ~1e-8 relative accuracy, so most pairs reported
    converged at these tolerances used to violate them.
    """
    gen = torch.Generator().manual_seed(3)
    n = 200
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    top = torch.tensor([41.3, 17.9, 9.1, 4.7, 2.9], dtype=torch.float64)
    lam = torch.cat([top, 0.3 * torch.randn(n - 5, generator=gen, dtype=torch.float64)])
    A = Q @ torch.diag(lam) @ Q.T
    A = (A + A.T) / 2
    result = top_eigenpairs(lambda v: A @ v, n, k=5, tol=tol, max_steps=n, strict=True)
    true_residuals = (A @ result.eigenvectors - result.eigenvectors * result.eigenvalues).norm(dim=0)
    assert bool((true_residuals <= tol * result.eigenvalues.abs()).all()), true_residuals / result.eigenvalues
    torch.testing.assert_close(result.eigenvalues, top, rtol=1e-12, atol=0)


# --- the stopping rule on dense references with chosen spectra --------------------------------
# Dense float64 references built here, independently of the code under test: Q (QR of a Gaussian
# matrix) times a chosen spectrum, compared with torch.linalg.eigh.
BENCHMARK_TOP = [16.47, 15.08, 14.02, 12.27, 10.34, 9.39, 7.79, 5.18, 4.66, 2.88]  # the MNIST-1D MLP's


def _bulk(n: int, seed: int) -> torch.Tensor:
    return 0.3 * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _dense(spectrum: torch.Tensor, seed: int) -> torch.Tensor:
    """Q diag(spectrum) Qᵀ for a random orthogonal Q, symmetrised, float64."""
    gen = torch.Generator().manual_seed(seed)
    n = len(spectrum)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    A = (Q * spectrum) @ Q.T
    return (A + A.T) / 2


def _spectrum(top, seed: int, n: int = 200) -> torch.Tensor:
    head = torch.tensor(top, dtype=torch.float64)
    return torch.cat([head, _bulk(n - len(head), seed)])


# name: (spectrum from seed, k, which)
SPECTRA = {
    "outliers over a bulk (Hessian-like)": (lambda s: _spectrum([50.0, 30.0, 20.0, -5.0], s), 3, "largest"),
    "negative outlier, smallest": (lambda s: _spectrum([50.0, 30.0, 20.0, -5.0], s), 1, "smallest"),
    "benchmark model's top 10 over a bulk": (lambda s: _spectrum(BENCHMARK_TOP, s), 5, "largest"),
    "negated, smallest": (lambda s: -_spectrum(BENCHMARK_TOP, s), 5, "smallest"),
    "top pair 1% apart": (lambda s: _spectrum([10.0, 9.9, 5.0, 4.0, 3.0, 2.0], s), 1, "largest"),
    "top pair 1% apart, both": (lambda s: _spectrum([10.0, 9.9, 5.0, 4.0, 3.0, 2.0], s), 2, "largest"),
    "clustered top three, 10% apart": (lambda s: _spectrum([10.0, 9.0, 8.0, 6.0, 5.0, 4.0], s), 3, "largest"),
    "λ6 = 0.999 λ5, top five": (lambda s: _spectrum([*BENCHMARK_TOP[:5], 10.34 * 0.999, *BENCHMARK_TOP[6:]], s),
                               5, "largest"),
}


def _reference(A: torch.Tensor, which: str):
    ev, Z = torch.linalg.eigh(A)
    return (ev.flip(0), Z.flip(1)) if which == "largest" else (ev, Z)


def _check_result(result, ev, Z, k, tol):
    """Each pair within tol of the i-th eigenvalue, within its own bounds (value and angle)."""
    err = (result.eigenvalues - ev[:k]).abs()
    assert result.all_converged and result.stop == "residual"
    assert bool((result.errors == result.residuals).all())
    assert bool((err <= tol * ev[:k].abs()).all()), err / ev[:k].abs()
    assert bool((err <= result.errors * (1 + 1e-9) + 1e-13).all()), (err, result.errors)
    sines = (1 - ((Z[:, :k] * result.eigenvectors).sum(0) ** 2).clamp(max=1.0)).sqrt()
    assert bool((sines <= result.vector_errors + 1e-7).all()), (sines, result.vector_errors)


@pytest.mark.parametrize("name", list(SPECTRA))
@pytest.mark.parametrize("tol", [1e-4, 1e-8])
@pytest.mark.parametrize("seed", [500, 501, 502, 503, 504])
def test_pairs_meet_their_tolerance_on_dense_references(name, tol, seed):
    spectrum, k, which = SPECTRA[name]
    A = _dense(spectrum(seed), seed)
    ev, Z = _reference(A, which)
    result = top_eigenpairs(lambda v: A @ v, len(A), k=k, which=which, tol=tol, seed=seed,
                            max_steps=len(A), strict=True)
    if name.startswith("λ6 = 0.999") and tol == 1e-4:
        # θ5 may converge to λ6 instead (0.1% away, 10× tol): what holds is the bound to the nearest
        # eigenvalue, and the angle says nothing there (the two eigenvectors are not separated).
        nearest = (result.eigenvalues[:, None] - ev[None, :]).abs().min(dim=1).values
        assert result.all_converged and bool((nearest <= result.errors * (1 + 1e-9) + 1e-13).all())
        assert bool((nearest <= tol * result.eigenvalues.abs()).all())
        return
    _check_result(result, ev, Z, k, tol)


@pytest.mark.parametrize("seed", [500, 501, 502])
def test_degenerate_top_eigenvalue(seed):
    """λ1 = λ2: one Ritz value finds the double eigenvalue, its vector lies in the eigenspace.

    The gap theorems hold with δ the distance to the *other* eigenvalues, so multiplicity is no
    obstacle; the angle is measured to the two-dimensional eigenspace.
    """
    A = _dense(_spectrum([10.0, 10.0, 5.0, 4.0, 3.0, 2.0], seed), seed)
    tol = 1e-8
    result = top_eigenpairs(lambda v: A @ v, len(A), k=1, tol=tol, seed=seed, max_steps=len(A), strict=True)
    err = (result.eigenvalues[0] - 10.0).abs()
    assert err <= tol * 10.0 and err <= result.errors[0] * (1 + 1e-9) + 1e-13
    _, Z = _reference(A, "largest")
    y = result.eigenvectors[:, 0]
    sine = (y - Z[:, :2] @ (Z[:, :2].T @ y)).norm()
    assert sine <= result.vector_errors[0] + 1e-7


def test_pairs_on_tiny_models_true_hessians(problem):
    """The dense float64 Hessian of each tiny model (tests.reference.dense_hessian) as reference."""
    model, x, y = problem
    H = dense_hessian(model, cross_entropy, x, y)
    ev, Z = _reference(H, "largest")
    op = HessianOperator(model, F.cross_entropy, (x, y))
    _check_result(top_eigenpairs(op.matvec, op.dim, k=5, tol=1e-9, strict=True), ev, Z, 5, 1e-9)


def test_kato_temple_stopping_rule_is_refused_with_its_reason():
    A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="stop='gap': withdrawn.*9% off.*stop='residual'"):
        top_eigenpairs(lambda v: A @ v, 10, k=1, stop="gap")


def test_ritz_gaps_are_distances_to_the_other_ritz_intervals():
    """δ_i = min over l ≠ i of |θ_i − θ_l| − r_l; 0 (untrusted) where θ_i's own interval is not isolated.

    Without the − r_l an unconverged neighbour's interval would be ignored (δ_0 = 1.0 below), and
    without the isolation test δ_1 would be trusted although r_1 > δ_1.
    """
    theta = torch.tensor([10.0, 9.0, 5.0, 1.0], dtype=torch.float64)
    tol = 1e-2  # the first unwanted value, 5.0, counts as resolved for r ≤ 0.1 · 9.0
    r = torch.tensor([1e-3, 0.4, 1e-3, 0.5], dtype=torch.float64)
    torch.testing.assert_close(ritz_gaps(theta, r, 2, tol), torch.tensor([0.6, 0.999], dtype=torch.float64))
    r = torch.tensor([1e-3, 1.2, 1e-3, 0.5], dtype=torch.float64)  # θ_1's interval reaches θ_0
    torch.testing.assert_close(ritz_gaps(theta, r, 2, tol), torch.zeros(2, dtype=torch.float64))
    r = torch.tensor([1e-3, 0.4, 1.0, 0.5], dtype=torch.float64)  # θ_2 not resolved yet
    torch.testing.assert_close(ritz_gaps(theta, r, 2, tol), torch.zeros(2, dtype=torch.float64))
    assert not ritz_gaps(theta[:2], r[:2], 2, tol).any()  # no unwanted Ritz value: no inner bound


def test_stop_rule_is_validated():
    A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="stop"):
        top_eigenpairs(lambda v: A @ v, 10, k=1, stop="kato")
