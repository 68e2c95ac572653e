"""Probes of the training loss's curvature at θ(step): λ_max, the trace, gradient overlap, the spectrum.

All four use the Hessian of the objective's curvature problem
(:meth:`analysis_lib.training.objective.Objective.curvature_problem`: the first
``probes.curvature_samples`` training samples, all when 0), with BatchNorm in eval mode, built
once per probed step and shared (one gradient graph for every product of that step). Each probe
draws from its own generators seeded with the step; the model, its gradients and the training
RNG are left untouched. ``block_sharpness`` (λ_max per layer) builds one operator per diagonal
block on the same data (:mod:`analysis_lib.curvature.blocks`).
"""

from __future__ import annotations

import warnings

import pandas as pd

from ..training.probe import Probe, ProbeContext, register
from .blocks import block_sharpness
from .hessian import HessianOperator
from .lanczos import top_eigenpairs
from .spectrum import spectrum_table
from .subspace import gradient_overlap, subspace_overlap
from .trace import hutchpp


def hessian_at(ctx: ProbeContext, n_samples: int) -> HessianOperator:
    """The Hessian operator of the curvature problem at the current weights, shared within a step."""
    def make() -> HessianOperator:
        loss_fn, inputs, targets = ctx.objective.curvature_problem(n_samples)
        return HessianOperator(ctx.model, loss_fn, (inputs, targets))
    return ctx.cached(f"hessian:{n_samples}", make)


class _CurvatureProbe(Probe):
    needs = frozenset({"curvature"})

    def operator(self, ctx: ProbeContext) -> HessianOperator:
        """The step's shared Hessian operator."""
        return hessian_at(ctx, self.config.curvature_samples)


@register
class GradOverlapProbe(_CurvatureProbe):
    """``grad_overlap``: ‖V_kᵀg‖²/‖g‖² of the full gradient with the top-k Hessian eigenvectors.

    Records ``grad_overlap``, its random-subspace baseline ``grad_overlap_random`` = k / dim,
    ``grad_overlap_converged`` and ``subspace_overlap_prev``, the overlap of this top-k subspace
    with the previous probe's (Gur-Ari, Roberts & Dyer 2018). k is ``probes.overlap_k``, or the
    objective's output dimension (classes) when 0. Lanczos is warm-started from the previous
    subspace.
    """

    name = "grad_overlap"
    order = 60

    def __init__(self, config) -> None:
        super().__init__(config)
        self._subspace = None

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the overlaps at θ(step)."""
        op = self.operator(ctx)
        k = min(self.config.overlap_k or ctx.objective.output_dim, op.dim)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # Warm start from the previous top-k subspace: its sum has weight on every old eigenvector.
            v0 = self._subspace.sum(dim=1) if self._subspace is not None else None
            top = top_eigenpairs(op.matvec, op.dim, k=k, tol=1e-3, max_steps=max(20 * k, 100), seed=ctx.step,
                                 v0=v0, device=op.device)
        V = top.eigenvectors
        ctx.record(ctx.step, "model", "grad_overlap", gradient_overlap(op.gradient(), V))
        ctx.record(ctx.step, "model", "grad_overlap_random", k / op.dim)
        ctx.record(ctx.step, "model", "grad_overlap_converged", float(top.all_converged))
        if self._subspace is not None:
            ctx.record(ctx.step, "model", "subspace_overlap_prev", subspace_overlap(self._subspace, V))
        self._subspace = V


@register
class SpectrumProbe(_CurvatureProbe):
    """``spectrum``: the full Hessian spectrum at step 0 and at the last step, as the table ``spectrum``.

    Exact (dense ``eigvalsh``) up to ``probes.exact_max_dim`` parameters, SLQ nodes and weights
    beyond (:func:`analysis_lib.curvature.spectrum.spectrum_table`).
    """

    name = "spectrum"
    order = 61

    def __init__(self, config) -> None:
        super().__init__(config)
        self._tables: list[pd.DataFrame] = []

    def after_update(self, ctx: ProbeContext) -> None:
        """Keep the spectrum of θ(step) at the first and last step."""
        if ctx.step == 0 or ctx.last_step:
            self._tables.append(spectrum_table(self.operator(ctx), ctx.step,
                                               exact_max_dim=self.config.exact_max_dim, seed=ctx.step))

    def tables(self) -> dict:
        """The ``spectrum`` table (:data:`analysis_lib.curvature.spectrum.SPECTRUM_COLUMNS`)."""
        return {"spectrum": pd.concat(self._tables, ignore_index=True)} if self._tables else {}


@register
class SharpnessProbe(_CurvatureProbe):
    """``sharpness``: λ_max of the training-loss Hessian by Lanczos, warm-started from the last probe.

    Records ``lambda_max``, its residual estimate ``lambda_max_residual``,
    ``lambda_max_converged`` (1 when the relative residual met ``probes.sharpness_tol`` within
    ``probes.sharpness_max_steps`` products) and ``lambda_max_hvps``, the products used.
    """

    name = "sharpness"
    order = 62

    def __init__(self, config) -> None:
        super().__init__(config)
        self._top_vector = None

    def after_update(self, ctx: ProbeContext) -> None:
        """Record λ_max at θ(step)."""
        op = self.operator(ctx)
        with warnings.catch_warnings():  # not converging is recorded below, not printed
            warnings.simplefilter("ignore", RuntimeWarning)
            top = top_eigenpairs(op.matvec, op.dim, k=1, tol=self.config.sharpness_tol,
                                 max_steps=self.config.sharpness_max_steps, seed=ctx.step,
                                 v0=self._top_vector, device=op.device)
        self._top_vector = top.eigenvectors[:, 0]
        ctx.record(ctx.step, "model", "lambda_max", top.eigenvalues[0].item())
        ctx.record(ctx.step, "model", "lambda_max_residual", top.residuals[0].item())
        ctx.record(ctx.step, "model", "lambda_max_converged", float(top.all_converged))
        ctx.record(ctx.step, "model", "lambda_max_hvps", float(top.n_matvecs))


@register
class HessianTraceProbe(_CurvatureProbe):
    """``hessian_trace``: tr H by Hutch++ with ``probes.trace_matvecs`` products, and its standard error."""

    name = "hessian_trace"
    order = 63

    def after_update(self, ctx: ProbeContext) -> None:
        """Record ``hessian_trace`` and ``hessian_trace_se`` at θ(step)."""
        op = self.operator(ctx)
        tr = hutchpp(op.matvec, op.dim, self.config.trace_matvecs, seed=ctx.step, device=op.device)
        ctx.record(ctx.step, "model", "hessian_trace", tr.estimate)
        ctx.record(ctx.step, "model", "hessian_trace_se", tr.se)


@register
class BlockSharpnessProbe(Probe):
    """``block_sharpness``: λ_max of each layer's diagonal Hessian block H_ll, warm-started per block.

    The blocks are :func:`analysis_lib.curvature.blocks.default_groups` (q, k, v, o, up, down of
    each transformer block; each Linear or conv weight of other models), on the curvature problem
    of the other curvature probes. Records per block (``layer`` = its module)
    ``block_lambda_max``, ``block_lambda_max_residual``, ``block_lambda_max_converged`` and
    ``block_lambda_max_hvps``, and on ``"model"`` ``block_lambda_ratio`` (max / min over blocks,
    NaN when the smallest is ≤ 0). Tolerance and budget per block are ``probes.sharpness_tol``
    and ``probes.sharpness_max_steps``; each block starts from its previous probe's Ritz vector.
    """

    name = "block_sharpness"
    order = 64
    needs = frozenset({"curvature"})

    def __init__(self, config) -> None:
        super().__init__(config)
        self._vectors = None

    def after_update(self, ctx: ProbeContext) -> None:
        """Record every block's λ_max at θ(step)."""
        loss_fn, inputs, targets = ctx.objective.curvature_problem(self.config.curvature_samples)
        with warnings.catch_warnings():  # not converging is recorded below, not printed
            warnings.simplefilter("ignore", RuntimeWarning)
            result = block_sharpness(ctx.model, loss_fn, (inputs, targets), tol=self.config.sharpness_tol,
                                     max_steps=self.config.sharpness_max_steps, seed=ctx.step, v0=self._vectors)
        self._vectors = result.vectors()
        for label, b in result.blocks.items():
            ctx.record(ctx.step, label, "block_lambda_max", b.lambda_max)
            ctx.record(ctx.step, label, "block_lambda_max_residual", b.residual)
            ctx.record(ctx.step, label, "block_lambda_max_converged", float(b.converged))
            ctx.record(ctx.step, label, "block_lambda_max_hvps", float(b.n_matvecs))
        ctx.record(ctx.step, "model", "block_lambda_ratio", result.ratio)
