"""The ``eval`` probe: the objective's evaluation at every probed step (and at step 0)."""

from __future__ import annotations

from .probe import Probe, ProbeContext, register


@register
class EvalProbe(Probe):
    """``eval``: what the run's objective evaluates, e.g. ``{train,test}_{loss,acc}`` of a classifier.

    Each family's objective documents its metrics (:class:`~analysis_lib.training.objective.Classification`,
    :class:`~analysis_lib.lm.training.AdditionObjective`); evaluation runs in eval mode on
    fixed data, so it never changes training.
    """

    name = "eval"
    order = 30
    needs = frozenset({"evaluate"})

    def after_update(self, ctx: ProbeContext) -> None:
        """Evaluate θ(step); ``phase_end`` lets the objective add end-of-phase metrics."""
        ctx.objective.evaluate(ctx.model, ctx.record, ctx.step, ctx.phase_end)
