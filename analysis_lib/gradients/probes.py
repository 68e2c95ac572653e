"""Probes of the gradients: per-layer norms and noise of the probed update's mini-batch, and mini-batch SNR."""

from __future__ import annotations

from ..training.probe import Probe, ProbeContext, register
from .noise import GradientNoiseProbe
from .norms import gradients_of, layer_gradient_norms
from .snr import gradient_snr


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


@register
class GradientSNRProbe(Probe):
    """``gradient_snr``: per-layer SNR of mini-batch gradients at θ(step), over fresh mini-batches.

    At each probed step (and step 0), ``probes.snr_batches`` mini-batches of
    ``probes.snr_batch_size`` training samples, drawn by a generator seeded with the step, each
    give a gradient of the mean loss through :func:`torch.autograd.grad` (``.grad``, the weights
    and the training RNG untouched; the model in ``eval()`` mode, restored after); records
    :data:`~analysis_lib.gradients.snr.SNR_METRICS` per layer and ``"model"``
    (:mod:`analysis_lib.gradients.snr`; ``grad_snr_mb`` is the mini-batch SNR of Shwartz-Ziv &
    Tishby 2017).
    """

    name = "gradient_snr"
    order = 12
    needs = frozenset({"curvature", "sample_mean"})

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the SNR at θ(step)."""
        loss_fn, x, y = ctx.objective.curvature_problem(0)
        was_training = ctx.model.training
        ctx.model.eval()
        try:
            rows = gradient_snr(ctx.model, loss_fn, x, y, n_batches=self.config.snr_batches,
                                batch_size=self.config.snr_batch_size, seed=ctx.step)
        finally:
            ctx.model.train(was_training)
        for layer, metric, value in rows:
            ctx.record(ctx.step, layer, metric, value)
