"""When would Lanczos stop, and would it be right? Two stopping rules replayed on the benchmark model.

The model, data and float64 reference eigenvalues are those of ``benchmarks/curvature.py`` (MNIST-1D
MLP 40-256-256-10, 78,858 parameters, 4,000 samples; cached in ``$ANALYSIS_LIB_DATA/bench-curvature``).
From each start vector, ``analysis_lib.curvature.lanczos.lanczos_steps`` runs once; after every
product the Ritz values of T_j are checked against two rules, for top-1 at tol 1e-3 and top-5 and
top-10 at tol 1e-4 (one Krylov sequence serves all three):

- ``residual`` (the library's rule): stop when every wanted r_i ≤ tol · |θ_i|;
- ``kato-temple`` (withdrawn from the library): stop when every wanted min(r_i, r_i² / δ_i) ≤ tol · |θ_i|,
  δ_i the gap estimated from the Ritz values (``lanczos.ritz_gaps``, with its guard).

At the step each rule stops, "wrong" counts starts whose returned i-th value is off the i-th
reference eigenvalue by more than tol (relative), and "bound false" those where some θ_i is farther
from every reference eigenvalue than the rule's own bound (plus 1e-7 relative, the float32 products'
rounding). Start vectors: Gaussian (``--starts`` seeds), the loss gradient, and Gaussian entries
scaled by the gradient's magnitude |g| ⊙ z (half as many seeds): the free starts a Hessian-vector
code has.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/lanczos_stopping.py [--starts 30]

About 3 minutes on one thread (40 products per start, plus the reference once if not cached).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ANALYSIS_LIB_DATA", "/tmp/benchdata")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature import compute_reference, trained_problem  # noqa: E402

from analysis_lib.curvature.hessian import HessianOperator  # noqa: E402
from analysis_lib.curvature.lanczos import lanczos_steps, ritz_gaps, tridiagonal  # noqa: E402

TASKS = [(1, 1e-3), (5, 1e-4), (10, 1e-4)]  # (k, tol)
RULES = ("residual", "kato-temple")
ROUNDING = 1e-7  # relative accuracy of a float32 model's products


def replay(alpha: list, beta: list, ref: torch.Tensor, k: int, tol: float) -> dict:
    """For each rule: (products at its stop, max relative error to the i-th reference, bound false)."""
    out = {}
    for j in range(k, len(alpha) + 1):
        T = tridiagonal(torch.tensor(alpha[:j], dtype=torch.float64), torch.tensor(beta[:j], dtype=torch.float64))
        theta, S = torch.linalg.eigh(T)
        order = torch.argsort(theta, descending=True)
        theta, S = theta[order], S[:, order]
        r_all = abs(beta[j - 1]) * S[-1, :].abs()
        r, wanted = r_all[:k], theta[:k]
        gaps = ritz_gaps(theta, r_all, k, tol)
        bounds = {"residual": r,
                  "kato-temple": torch.where(gaps > 0, torch.minimum(r, r**2 / gaps.clamp_min(1e-300)), r)}
        for rule in RULES:
            if rule in out or not bool((bounds[rule] <= tol * wanted.abs()).all()):
                continue
            error = ((wanted - ref[:k]).abs() / ref[:k].abs()).max().item()
            nearest = (wanted[:, None] - ref[None, :]).abs().min(dim=1).values
            false = bool((nearest > bounds[rule] + ROUNDING * wanted.abs()).any())
            out[rule] = (j, error, false)
        if len(out) == len(RULES):
            break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=30, help="Gaussian start vectors (seeds 0..N-1)")
    ap.add_argument("--steps", type=int, default=40, help="products per start")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    width, samples, steps, seed = 256, 4000, 600, 0  # benchmarks/curvature.py's default problem
    cache = Path(os.environ["ANALYSIS_LIB_DATA"]) / "bench-curvature" / f"mlp{width}-n{samples}-s{steps}-seed{seed}.pt"
    prob = trained_problem(samples, width, steps, seed, cache)
    compute_reference(prob, max(k for k, _ in TASKS), False, cache.with_suffix(".ref.pt"))
    ref = prob.ref_eigs
    op = HessianOperator(prob.model, F.cross_entropy, (prob.x, prob.y))
    g = op.gradient()

    def gaussian(s):
        return torch.randn(op.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
    starts = [("gaussian", s, gaussian(s)) for s in range(args.starts)]
    starts += [("gradient", 0, g.clone())]
    starts += [("|g| * gaussian", s, g.abs() * gaussian(s)) for s in range(max(1, args.starts // 2))]

    results = defaultdict(list)  # (family, k, rule) -> [(products, error, false, seed)]
    for family, s, v in starts:
        for alpha, beta, _, breakdown in lanczos_steps(op.matvec, v / v.norm(), args.steps):
            pass
        for k, tol in TASKS:
            for rule, (n, err, false) in replay(alpha, beta, ref, k, tol).items():
                results[(family, k, rule)].append((n, err, false, s))
    print(f"model: {prob.description}\nreference: {prob.ref_info}")
    print(f"{'start':<16}{'task':<19}{'rule':<13}{'starts':>7}{'products min/mean/max':>24}"
          f"{'wrong':>7}{'bound false':>13}{'worst error':>13}  worst start")
    for k, tol in TASKS:
        for family in ("gaussian", "gradient", "|g| * gaussian"):
            for rule in RULES:
                rows = results[(family, k, rule)]
                if not rows:
                    continue
                n = [r[0] for r in rows]
                worst = max(rows, key=lambda r: r[1])
                print(f"{family:<16}{f'top-{k} tol {tol:.0e}':<19}{rule:<13}{len(rows):>7}"
                      f"{f'{min(n)} / {sum(n) / len(n):.1f} / {max(n)}':>24}"
                      f"{sum(r[1] > tol for r in rows):>7}{sum(r[2] for r in rows):>13}"
                      f"{worst[1]:>13.1e}  seed {worst[3]}")
    print(f"(a start missing from a row did not stop within {args.steps} products under that rule)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
