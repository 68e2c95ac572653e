"""Probes of the weights: norms, update ratios, rotation, distance from init, spectra, stored trajectories."""

from __future__ import annotations

import torch

from ..layers import layer_of
from ..training.probe import Probe, ProbeContext, register
from ..validation import fail
from .alignment import alignment_summary, class_means, neuron_alignment
from .movement import layer_distances, layer_rotations, layer_update_ratios, layer_weight_norms
from .spectra import probe_spectra


def _copy(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


@register
class UpdateRatioProbe(Probe):
    """``update_ratio``: ‖θ_l(t) − θ_l(t−1)‖ / ‖θ_l(t−1)‖ of the probed update t, per layer and tensor."""

    name = "update_ratio"
    order = 20

    def __init__(self, config) -> None:
        super().__init__(config)
        self._before: dict | None = None

    def after_backward(self, ctx: ProbeContext) -> None:
        """Keep θ(t−1)."""
        self._before = _copy(ctx.params)

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the ratio (nothing at step 0: no update yet)."""
        if self._before is not None:
            ctx.record_layers(ctx.step, "update_ratio", layer_update_ratios(ctx.params, self._before))
            self._before = None


@register
class WeightNormProbe(Probe):
    """``weight_norm``: ‖θ_l(t)‖₂ per layer, tensor and for the whole model."""

    name = "weight_norm"
    order = 40

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the norms of θ(step)."""
        ctx.record_layers(ctx.step, "weight_norm", layer_weight_norms(ctx.params))


class _FromInit(Probe):
    """A probe comparing θ(t) with θ(0), kept when training starts."""

    def start(self, ctx: ProbeContext) -> None:
        """Keep θ(0) (after any perturbation at step 0)."""
        self._initial = _copy(ctx.params)


@register
class RotationProbe(_FromInit):
    """``rotation``: layer rotation 1 − cos(θ_l(t), θ_l(0)) (Carbonnelle & De Vleeschouwer 2019)."""

    name = "rotation"
    order = 41

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the rotation of θ(step) from θ(0)."""
        ctx.record_layers(ctx.step, "rotation", layer_rotations(ctx.params, self._initial))


@register
class DistanceFromInitProbe(_FromInit):
    """``dist_init``: ‖θ_l(t) − θ_l(0)‖₂."""

    name = "dist_init"
    order = 42

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the distance of θ(step) from θ(0)."""
        ctx.record_layers(ctx.step, "dist_init", layer_distances(ctx.params, self._initial))


@register
class WeightSpectraProbe(Probe):
    """``weight_spectra``: singular-value statistics of every weight matrix (≥ 2-D parameter).

    Records ``sigma_max``, ``stable_rank``, ``effective_rank``, ``condition_number``,
    ``n_above_mp`` and, only where the KS-chosen tail holds at least 50 eigenvalues, ``alpha``
    (the point estimate of :func:`analysis_lib.weights.powerlaw_fit.ks_fit`; its CI and
    likelihood-ratio tests are left to :func:`analysis_lib.weights.spectra.layer_weight_spectra`),
    all as defined in :mod:`analysis_lib.weights.spectra`, one float64 SVD per matrix per probed
    step. The row's layer is the owning module (``fc1``); a tensor not named ``weight`` gets its
    name as a metric suffix (``sigma_max.in_proj_weight``). A non-finite matrix records NaN.
    """

    name = "weight_spectra"
    order = 43

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the spectra of θ(step)."""
        for layer, metric, value in probe_spectra(ctx.params):
            ctx.record(ctx.step, layer, metric, value)


@register
class NeuronAlignmentProbe(Probe):
    """``neuron_alignment``: first-layer neurons against the class means of binary training inputs.

    For the first weight matrix whose rows are as long as the inputs (the MLP's ``fc1.weight``),
    each neuron's cos(w_j, x̄₊) and cos(w_j, x̄₋), x̄₊ and x̄₋ the means of the class-1 and class-0
    inputs of all training samples (:mod:`analysis_lib.weights.alignment`, Min, Mallada & Vidal
    2024), summarised under that layer (``fc1``) in float64 by
    :func:`~analysis_lib.weights.alignment.alignment_summary`: ``alignment_mean``,
    ``aligned_fraction`` (max cosine ≥ 0.9), ``aligned_positive`` and the levels
    ``alignment_f50``, ``alignment_f75``, ``alignment_f90``, ``alignment_f100``. Refused at the
    start of training (ConfigError) unless the labels are binary and such a matrix exists.
    """

    name = "neuron_alignment"
    order = 44
    needs = frozenset({"curvature"})

    def start(self, ctx: ProbeContext) -> None:
        """Find the first layer and compute the class means once (the data do not change)."""
        _, x, y = ctx.objective.curvature_problem(0)
        if not (torch.is_tensor(x) and x.dim() == 2 and torch.is_tensor(y) and set(torch.unique(y).tolist()) == {0, 1}):
            fail("probes.names", list(self.config.names),
                 "probe 'neuron_alignment' needs flat inputs (n, d) and binary labels 0 and 1")
        matches = [n for n, p in ctx.params.items() if p.dim() == 2 and p.shape[1] == x.shape[1]]
        if not matches:
            fail("probes.names", list(self.config.names),
                 f"probe 'neuron_alignment' needs a first-layer weight matrix with {x.shape[1]} inputs")
        self._name = matches[0]
        self._positive, self._negative = class_means(x.detach().double(), y)

    def after_update(self, ctx: ProbeContext) -> None:
        """Record the alignment summary of θ(step)'s first layer."""
        weight = ctx.params[self._name].detach().double()
        summary = alignment_summary(*neuron_alignment(weight, self._positive, self._negative))
        for metric, value in summary.items():
            ctx.record(ctx.step, layer_of(self._name), metric, value)


@register
class WeightsProbe(Probe):
    """``weights``: the flattened weights at every probed step and the final state dict.

    Stored as the checkpoint ``trajectory`` (``steps`` (S,), ``weights`` (S, P) float32, in
    ``named_parameters`` order) and the checkpoint ``final`` (the model's state dict when
    training ends, also after a divergence), for landscapes, interpolation and trajectory PCA.
    Costs S × P × 4 bytes of disk per run.
    """

    name = "weights"
    order = 50

    def __init__(self, config) -> None:
        super().__init__(config)
        self._steps: list[int] = []
        self._weights: list[torch.Tensor] = []
        self._model = None

    def after_update(self, ctx: ProbeContext) -> None:
        """Append θ(step) to the trajectory."""
        self._model = ctx.model
        self._steps.append(ctx.step)
        self._weights.append(torch.cat([v.detach().reshape(-1) for v in ctx.params.values()]).float().cpu())

    def tables(self) -> dict:
        """The ``trajectory`` and ``final`` checkpoints."""
        final = {k: v.detach().cpu().clone() for k, v in self._model.state_dict().items()}
        return {"trajectory": {"steps": torch.tensor(self._steps), "weights": torch.stack(self._weights)},
                "final": final}
