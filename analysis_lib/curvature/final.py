"""Curvature of the training loss at the final weights of stored runs: top-k eigenvalues, per-layer traces.

Works for any run config with ``problem()`` (its loss and splits) and ``build_model(state)``:
the MLP / CNN family, your own model (:class:`analysis_lib.custom.config.CustomRunConfig`). The
runs must have stored their ``final`` checkpoint (the ``weights`` probe).
"""

from __future__ import annotations

import pandas as pd

from ..training.problem import final_models, no_final_models
from .hessian import HessianOperator
from .lanczos import top_eigenpairs
from .trace import layer_traces


def run_curvature(result, run_ids=None, *, k: int = 5, tol: float = 1e-6, n_matvecs: int = 60,
                  exact_max_dim: int = 500, split: str = "train") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The top-k Hessian eigenvalues and the per-layer traces at each run's final weights.

    Args:
        result: what :func:`analysis_lib.runs.execute.run_grid` returned (runs with ``weights``).
        run_ids: the runs to use (default: all); runs without a final checkpoint are left out.
        k, tol: eigenpairs and their relative residual tolerance (Lanczos).
        n_matvecs, exact_max_dim: of :func:`analysis_lib.curvature.trace.layer_traces`.
        split: the split whose mean loss is differentiated.

    Returns:
        ``(eigenvalues, traces)``: ``run_id, <conditions>, seed, rank, eigenvalue, residual,
        converged, n_matvecs`` and ``run_id, <conditions>, seed, layer, estimate, se, n_matvecs,
        method``.

    Raises:
        ValueError: no run has a final checkpoint.
    """
    eigen, traces = [], []
    for rid, config, model, problem in final_models(result, run_ids):
        labels = {"run_id": rid, **dict(config.conditions), "seed": config.seed}
        data = problem.splits[split]
        op = HessianOperator(model, problem.loss_fn, data)
        top = top_eigenpairs(op.matvec, op.dim, k=min(k, op.dim), tol=tol, device=op.device)
        eigen += [{**labels, "rank": i + 1, "eigenvalue": float(lam), "residual": float(res),
                   "converged": bool(conv), "n_matvecs": top.n_matvecs}
                  for i, (lam, res, conv) in enumerate(zip(top.eigenvalues, top.residuals, top.converged))]
        table = layer_traces(model, problem.loss_fn, data, n_matvecs=n_matvecs, exact_max_dim=exact_max_dim)
        traces.append(table.assign(**labels))
    if not eigen:
        labels = no_final_models(result, "run_curvature")
        return (pd.DataFrame(columns=[*labels, "rank", "eigenvalue", "residual", "converged", "n_matvecs"]),
                pd.DataFrame(columns=[*labels, "layer", "estimate", "se", "n_matvecs", "method"]))
    traces = pd.concat(traces, ignore_index=True)
    front = [c for c in traces.columns if c not in ("layer", "estimate", "se", "n_matvecs", "method")]
    return pd.DataFrame(eigen), traces[front + ["layer", "estimate", "se", "n_matvecs", "method"]]
