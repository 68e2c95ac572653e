"""Lanczos eigenpairs of HessianOperator against eigvalsh of the independent dense reference.

Float64, the tiny models of tests.cases: top and bottom eigenvalues, Ritz vectors, warm starts, and loud
non-convergence.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from analysis_lib.curvature.hessian import HessianOperator
from analysis_lib.curvature.lanczos import NotConvergedError, top_eigenpairs
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
