"""Probes of activations: hidden-state statistics, activation gradients, attention, output log Z.

All three read the *probed training batch*: their hooks (:class:`~analysis_lib.activations.capture.Capture`)
are registered around the forward and backward pass of a probed update t and keep detached
references of its tensors, so they cost no extra forward or backward pass (a fixed evaluation
batch would cost one of each, and activation gradients need the training loss's backward
anyway). Rows at step t therefore describe update t's batch at the weights θ(t−1), like
``grad_norm``; there are no rows at step 0 (no forward pass has run). Statistics pool every
position of the batch as the model sees it (padding positions included: the model computes
them, whatever the loss masks). Nothing is written into the model or its gradients, so training
is unchanged. Definitions: :mod:`analysis_lib.activations.statistics` and
:mod:`analysis_lib.activations.attention`.
"""

from __future__ import annotations

import contextlib

from ..training.probe import Probe, ProbeContext, register
from ..validation import ConfigError
from .attention import attention_stats, keys_seen
from .capture import Capture, activation_units, attention_modules, residual_blocks
from .statistics import dead_unit_fraction, gradient_norm, hidden_rms, hidden_state_stats, log_partition_stats


@register
class ActivationStatsProbe(Probe):
    """``activation_stats``: hidden-state statistics per residual block, activation gradients, dead units.

    Per block (layer ``blocks.{i}``; :func:`~analysis_lib.activations.capture.residual_blocks`),
    of its output h_l over every token and feature of the batch: ``hidden_rms``,
    ``hidden_variance``, ``hidden_growth`` (RMS(h_l) / RMS(h_{l−1}); for the first block, over the
    RMS of its input, the embedding), ``massive_ratio`` (max |h| / median |h|), ``kurtosis``
    (excess) and ``act_grad_norm`` (‖∂L/∂h_l‖₂ of the batch's mean training loss). Per hidden-unit
    module (layer ``blocks.{i}.mlp.up`` of our transformer, units on the last axis; or an
    ``nn.ReLU``/``nn.GELU`` module with 2-D outputs (N, units), a module called k > 1 times per
    forward labelled ``act[0]`` .. ``act[k−1]`` in call order): ``dead_fraction``, the share of
    units never positive on the batch; an ``nn.ReLU``/``nn.GELU`` output of more dimensions gets
    ``dead_fraction_skipped`` = 1 instead (channels-first maps and tokens-last sequences cannot be
    told apart). A model without a ``blocks``/``layers`` ModuleList records one row
    ``hidden_stats_skipped`` = 1 (layer ``model``, step 0) and no hidden-state rows.
    """

    name = "activation_stats"
    order = 13

    def start(self, ctx: ProbeContext) -> None:
        """Find the blocks and unit modules; a model without blocks gets the ``hidden_stats_skipped`` row."""
        try:
            blocks = residual_blocks(ctx.model)
        except ConfigError:
            blocks = []
            ctx.record(ctx.step, "model", "hidden_stats_skipped", 1.0)
        self._capture = Capture(ctx.model, blocks=blocks, gradients=True, units=activation_units(ctx.model))

    def capture(self, ctx: ProbeContext) -> contextlib.AbstractContextManager:
        """Hooks on the blocks and unit modules for the probed update's forward and backward pass."""
        self._capture.clear()
        return self._capture()

    def after_backward(self, ctx: ProbeContext) -> None:
        """Record the rows of the captured pass and drop its tensors."""
        cap = self._capture
        previous = hidden_rms(cap.inputs) if cap.inputs is not None else None
        for name, _ in cap.blocks:
            if name not in cap.hidden:
                continue
            stats = hidden_state_stats(cap.hidden[name])
            rows = {"hidden_rms": stats["rms"], "hidden_variance": stats["variance"],
                    "massive_ratio": stats["massive_ratio"], "kurtosis": stats["kurtosis"]}
            if previous is not None:
                rows["hidden_growth"] = stats["rms"] / previous if previous else float("nan")
            if name in cap.grads:
                rows["act_grad_norm"] = gradient_norm(cap.grads[name])
            for metric, value in rows.items():
                ctx.record(ctx.step, name, metric, value)
            previous = stats["rms"]
        for name, _ in cap.unit_modules:
            outputs = cap.units.get(name, [])
            for call, out in enumerate(outputs):
                layer = name if len(outputs) == 1 else f"{name}[{call}]"
                if out.dim() == 2 or name.endswith("mlp.up"):
                    ctx.record(ctx.step, layer, "dead_fraction", dead_unit_fraction(out))
                else:  # (N, C, L) feature maps or (B, T, d) tokens: which axis holds the units is unknown
                    ctx.record(ctx.step, layer, "dead_fraction_skipped", 1.0)
        cap.clear()


@register
class AttentionStatsProbe(Probe):
    """``attention_stats``: entropy and maximum logit of every attention layer, per head.

    For each :class:`~analysis_lib.lm.transformer.Attention` (layer ``blocks.{i}.attn``), per head
    h (metric suffix ``.head{h}``) and over the heads: ``attn_entropy`` (mean over batch and
    queries of −Σ_j a_ij log a_ij; the layer row is the mean over heads), ``attn_entropy_norm``
    (mean of H_i / log n_i over queries seeing n_i > 1 keys; mean over heads), ``attn_logit_max``
    (max q·k/√d_head; the layer row is the max over heads) and, once per layer,
    ``attn_entropy_uniform`` (mean over queries of log n_i, the uniform pattern's entropy; log(i+1)
    under the causal mask). An ``nn.MultiheadAttention`` gets one row ``attn_stats_skipped`` = 1 at
    step 0 (see :mod:`analysis_lib.activations.capture` for why), and a model with no attention
    at all one such row under layer ``model``.
    """

    name = "attention_stats"
    order = 14

    def start(self, ctx: ProbeContext) -> None:
        """Find the attention modules; record the skipped ones (or the model, when it has none)."""
        supported, unsupported = attention_modules(ctx.model)
        if not supported and not unsupported:
            ctx.record(ctx.step, "model", "attn_stats_skipped", 1.0)
        for name, _ in unsupported:
            ctx.record(ctx.step, name, "attn_stats_skipped", 1.0)
        self._capture = Capture(ctx.model, attention=supported)

    def capture(self, ctx: ProbeContext) -> contextlib.AbstractContextManager:
        """Observers on the attention modules for the probed update's forward pass."""
        self._capture.clear()
        return self._capture()

    def after_backward(self, ctx: ProbeContext) -> None:
        """Record the rows of the captured pass and drop its tensors."""
        for name, _ in self._capture.attention_mods:
            if name not in self._capture.attention:
                continue
            scores, probs = self._capture.attention[name]
            # our Attention's only mask is the causal one, the same for every sequence and head
            n_keys = keys_seen(scores[:1, :1]).expand(scores.shape[:-1])
            stats = attention_stats(scores, probs, n_keys)
            for metric in ("attn_entropy", "attn_entropy_norm", "attn_logit_max"):
                for head, value in enumerate(stats[metric].tolist()):
                    ctx.record(ctx.step, name, f"{metric}.head{head}", value)
            ctx.record(ctx.step, name, "attn_entropy", float(stats["attn_entropy"].mean()))
            ctx.record(ctx.step, name, "attn_entropy_norm", float(stats["attn_entropy_norm"].mean()))
            ctx.record(ctx.step, name, "attn_logit_max", float(stats["attn_logit_max"].max()))
            ctx.record(ctx.step, name, "attn_entropy_uniform", float(stats["attn_entropy_uniform"][0]))
        self._capture.clear()


@register
class LogitStatsProbe(Probe):
    """``logit_stats``: the output log-partition log Z = logsumexp_v z_v over the batch's tokens.

    Rows under layer ``model``: ``log_z_mean``, ``log_z_max`` and ``log_z_sq_mean`` (mean (log Z)²,
    the z-loss term before its coefficient), over every position of the probed training batch,
    from the model's output (..., V).
    """

    name = "logit_stats"
    order = 15

    def start(self, ctx: ProbeContext) -> None:
        """A hook on the model's output."""
        self._capture = Capture(ctx.model, logits=True)

    def capture(self, ctx: ProbeContext) -> contextlib.AbstractContextManager:
        """The hook for the probed update's forward pass."""
        self._capture.clear()
        return self._capture()

    def after_backward(self, ctx: ProbeContext) -> None:
        """Record log Z's statistics and drop the logits."""
        if self._capture.logits is not None:
            for metric, value in log_partition_stats(self._capture.logits).items():
                ctx.record(ctx.step, "model", metric, value)
        self._capture.clear()
