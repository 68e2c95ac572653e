"""Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

The Krylov basis grows one product at a time; after each step the Ritz values of the tridiagonal
matrix T_j are checked, and iteration stops once the wanted k Ritz pairs have residual estimates
β_j |s_{j,i}| ≤ tol · |θ_i| (Parlett, "The Symmetric Eigenvalue Problem", ch. 13). Every basis
vector is reorthogonalised twice against all previous ones in float64, because Lanczos loses
orthogonality fast in finite precision and then reports spurious copies of converged eigenvalues.
A result that did not converge says so (``converged`` per eigenpair); :func:`top_eigenpairs`
warns, and raises when asked to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


class NotConvergedError(RuntimeError):
    """Lanczos stopped at its step limit before every wanted eigenpair met the tolerance."""


@dataclass
class EigenResult:
    """k eigenpairs, largest first (or smallest first for ``which="smallest"``).

    ``eigenvalues`` (k,), ``eigenvectors`` (dim, k) float64; ``residuals`` (k,) are the Ritz
    residual norms ‖H y − θ y‖ estimated as β_j |s_{j,i}|; ``n_matvecs`` products were used.
    The estimate is exact in exact arithmetic but keeps falling after convergence while the true
    residual stops at the rounding error of ``matvec`` itself (about 1e-8 relative for a float32
    model's Hessian-vector products): read a residual far below that as "at working precision",
    not as an error bound.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    n_matvecs: int

    @property
    def all_converged(self) -> bool:
        """Every wanted eigenpair met the tolerance."""
        return bool(self.converged.all())


def _start_vector(dim: int, v0: torch.Tensor | None, seed: int, device) -> torch.Tensor:
    if v0 is not None:
        v = v0.to(torch.float64).reshape(-1).clone()
        if v.norm() > 0:
            return v / v.norm()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device)
    return v / v.norm()


def lanczos_steps(matvec: MatVec, v0: torch.Tensor, max_steps: int):
    """Lanczos with full reorthogonalisation, yielding after every product.

    Yields:
        ``(alpha, beta, Q, breakdown)`` after step j: lists of the j+1 coefficients so far, the
        (dim, j+1) basis (a transposed view), and whether an invariant subspace was found (the iteration then stops).
    """
    dim = v0.numel()
    # Rows, not columns: Q[: j + 1] is then contiguous and reorthogonalisation streams through
    # memory, several times faster for large models (benchmarks/README.md).
    Q = torch.zeros(max_steps, dim, dtype=torch.float64, device=v0.device)
    alpha: list[float] = []
    beta: list[float] = []
    q = v0
    for j in range(max_steps):
        Q[j] = q
        w = matvec(q).to(torch.float64)
        alpha.append(torch.dot(w, q).item())
        basis = Q[: j + 1]  # (j+1, dim)
        for _ in range(2):  # "twice is enough" (Kahan, Parlett) to stay orthogonal to float64 precision
            w = w - basis.T @ (basis @ w)
        beta.append(w.norm().item())
        breakdown = beta[-1] < 1e-12 * max(1.0, max(abs(a) for a in alpha))
        yield alpha, beta, basis.T, breakdown
        if breakdown:
            return
        q = w / beta[-1]


def lanczos_tridiagonal(matvec: MatVec, v0: torch.Tensor, steps: int):
    """Run ``steps`` Lanczos steps from unit vector ``v0`` (fewer on breakdown).

    Returns:
        ``(alpha (m,), beta (m,), Q (dim, m))``; T has diagonal alpha and off-diagonal beta[:-1].
    """
    for alpha, beta, Q, _ in lanczos_steps(matvec, v0, steps):
        pass
    return torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64), Q


def tridiagonal(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The symmetric tridiagonal T with diagonal ``alpha`` (m,) and off-diagonal ``beta[:m-1]``."""
    T = torch.diag(alpha.to(torch.float64))
    off = beta[: len(alpha) - 1].to(torch.float64)
    return T + torch.diag(off, 1) + torch.diag(off, -1)


def top_eigenpairs(matvec: MatVec, dim: int, k: int = 1, *, which: str = "largest",
                   tol: float = 1e-6, max_steps: int | None = None, seed: int = 0,
                   v0: torch.Tensor | None = None, strict: bool = False,
                   device: str | torch.device = "cpu") -> EigenResult:
    """The k largest (or smallest) eigenvalues of a symmetric operator, with convergence info.

    Args:
        matvec: v (dim,) float64 -> H v.
        dim: operator size.
        k: number of eigenpairs.
        which: ``"largest"`` or ``"smallest"`` (algebraic).
        tol: relative residual tolerance, ‖H y − θ y‖ ≤ tol · |θ|.
        max_steps: product budget (default min(dim, max(20·k, 100))).
        seed: seed of the random start vector (ignored when v0 is given).
        v0: start vector, e.g. the previous top eigenvector for a warm start.
        strict: raise NotConvergedError instead of warning when not converged.

    Returns:
        EigenResult.

    Reference: Lanczos (1950); Golub & Van Loan, "Matrix Computations", §10.1.
    """
    if which not in ("largest", "smallest"):
        raise ValueError(f"invalid argument which={which!r}: must be 'largest' or 'smallest'")
    if not 1 <= k <= dim:
        raise ValueError(f"invalid argument k={k}: must be in [1, dim={dim}]")
    max_steps = min(dim, max_steps or max(20 * k, 100))
    q = _start_vector(dim, v0, seed, device)
    result = None
    for alpha, beta, Q, breakdown in lanczos_steps(matvec, q, max_steps):
        if len(alpha) >= k:
            result, S = _ritz(alpha, beta, k, which, tol, breakdown)
            if result.all_converged:
                break
    if result is None:  # invariant subspace of dimension < k found
        raise ValueError(f"the operator's Krylov space from this start vector has dimension "
                         f"{len(alpha)} < k={k}; use another start vector or a smaller k")
    result.eigenvectors = Q @ S  # Ritz vectors, formed once at the end
    return _finish(result, strict)


def _ritz(alpha, beta, k, which, tol, breakdown) -> tuple[EigenResult, torch.Tensor]:
    """Ritz values, residual estimates and the coefficients S of the Ritz vectors in the basis."""
    # float64 from the Python floats: torch.tensor(list_of_floats) would be float32 and cap the
    # eigenvalues' accuracy at ~1e-8, below what a float64 operator and a tight tol ask for.
    T = tridiagonal(torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64))
    theta, S = torch.linalg.eigh(T)
    order = torch.argsort(theta, descending=(which == "largest"))[:k]
    theta, S = theta[order], S[:, order]
    residuals = (0.0 if breakdown else abs(beta[-1])) * S[-1, :].abs()
    converged = residuals <= tol * theta.abs().clamp_min(1e-30)
    return EigenResult(theta, torch.empty(0), residuals, converged, len(alpha)), S


def _finish(result: EigenResult, strict: bool) -> EigenResult:
    if not result.all_converged:
        message = (f"Lanczos did not converge after {result.n_matvecs} products: residuals "
                   f"{[f'{r:.2e}' for r in result.residuals.tolist()]} for eigenvalues "
                   f"{[f'{t:.6g}' for t in result.eigenvalues.tolist()]}; raise max_steps or tol")
        if strict:
            raise NotConvergedError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result
