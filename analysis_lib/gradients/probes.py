"""Probes of the gradients: per-layer norms and per-layer noise of the probed update's mini-batch."""

from __future__ import annotations

from ..training.probe import Probe, ProbeContext, register
from .noise import GradientNoiseProbe
from .norms import gradients_of, layer_gradient_norms


@register
class GradNormProbe(Probe):
    """``grad_norm``: ‖g_l‖₂ of the mini-batch gradient of the probed update, per layer and tensor."""

    name = "grad_norm"
    order = 10

    def after_backward(self, ctx: ProbeContext) -> None:
        """Record the norms of ``.grad``."""
        ctx.record_layers(ctx.step, "grad_norm", layer_gradient_norms(gradients_of(ctx.params)))


@register
class GradNoiseProbe(Probe):
    """``grad_noise``: per-layer tr Σ, signal, SNR and noise scale of the probed mini-batch.

    From per-sample gradient norms, without materialising per-sample gradients
    (:mod:`analysis_lib.gradients.noise`, which lists the layers covered); the objective's loss
    must be a mean over samples.
    """

    name = "grad_noise"
    order = 11
    needs = frozenset({"sample_mean"})

    def __init__(self, config) -> None:
        super().__init__(config)
        self._probe: GradientNoiseProbe | None = None

    def capture(self, ctx: ProbeContext) -> GradientNoiseProbe:
        """Hooks on every supported layer for this forward and backward pass."""
        self._probe = GradientNoiseProbe(ctx.model)
        return self._probe

    def after_backward(self, ctx: ProbeContext) -> None:
        """Record the statistics of the pass just captured."""
        for layer, metric, value in self._probe.statistics():
            ctx.record(ctx.step, layer, metric, value)
        self._probe = None
