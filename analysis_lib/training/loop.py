"""The one training loop: phases of optimiser updates, probes on a schedule, divergence detection.

Every model family trains through :func:`train_phases`; a family supplies the model, an
:class:`~analysis_lib.training.objective.Objective` (the loss of a batch, its evaluation, the
data of curvature probes) and one or more :class:`Phase` s (pre-training and fine-tuning of the
transformer are two phases; an MLP run is one).

Step convention: "step t" is the state after t optimiser updates, counted on through every
phase. Probes at step t read θ(t); gradient probes at step t refer to update t (the gradient
computed at θ(t−1)). ``batch_loss`` is the mini-batch loss of every update, recorded at the step
it produced (an objective with a regulariser records its data loss there and the added terms
apart: :meth:`~analysis_lib.training.objective.Objective.batch_metrics`). A non-finite
mini-batch loss stops the run as ``diverged`` at that step, keeping
what was recorded and the checkpoints of the phases that finished.

With SAM (``train.sam_rho > 0``, :mod:`analysis_lib.training.sam`) each update takes a second
forward and backward pass on the same batch at θ + ε, inside the optimiser's step: ``batch_loss``
is the loss at θ, and probes see only the first pass (their ``capture`` hooks and
``after_backward`` read the gradient at θ; ``after_update`` runs after θ was restored and
updated, with ``.grad`` holding the gradient at θ + ε).

Probes never perturb training (they draw no random numbers from the training streams and leave
weights, gradients and modes as they were), so a run with and without probes from the same seed
has identical loss curves (``tests/training/test_loop.py`` checks it).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import pandas as pd
import torch
from torch import nn

from .objective import Objective
from .probe import Probe, ProbeContext
from .sam import SAM

TIDY_COLUMNS = ["step", "layer", "metric", "value"]


@dataclass
class TrainResult:
    """Tidy metrics (``step, layer, metric, value``) and how the run ended."""

    metrics: pd.DataFrame
    status: str  # "finished" or "diverged"
    diverged_step: int | None = None
    timings: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)  # extra tidy tables and checkpoints, e.g. "spectrum"


@dataclass
class Phase:
    """One run of optimiser updates with its own optimiser, learning-rate schedule and data stream.

    Attributes:
        name: e.g. ``"train"``, ``"pretrain"``, ``"finetune"``.
        steps: updates in the phase.
        optimizer: builds a fresh optimiser for the model at the phase's start.
        lr_at: learning rate of the phase's update ``step`` (1-based).
        batches: yields one batch per update (whatever the objective's ``loss`` takes).
        probe_steps: the phase's updates (1-based) after which probes run.
        checkpoint: name under which the weights at the end of the phase are stored, or None.
    """

    name: str
    steps: int
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    lr_at: Callable[[int], float]
    batches: Iterator
    probe_steps: set[int]
    checkpoint: str | None = None


class Recorder:
    """Collects tidy rows; cheaper than growing a DataFrame."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, float]] = []

    def add(self, step: int, layer: str, metric: str, value: float) -> None:
        """One row."""
        self.rows.append((step, layer, metric, value))

    def add_layers(self, step: int, metric: str, triples) -> None:
        """Rows from ``(layer, suffix, value)`` triples (:func:`analysis_lib.layers.per_layer`)."""
        self.rows.extend((step, layer, metric + suffix, value) for layer, suffix, value in triples)

    def frame(self) -> pd.DataFrame:
        """The rows as a tidy DataFrame."""
        return pd.DataFrame(self.rows, columns=TIDY_COLUMNS)


def make_optimizer(model: nn.Module, name: str, lr: float, *, momentum: float = 0.0,
                   weight_decay: float = 0.0, sam_rho: float = 0.0,
                   sam_adaptive: bool = False) -> torch.optim.Optimizer:
    """``torch.optim`` SGD (with momentum), Adam or AdamW over the model's parameters.

    With ``sam_rho > 0`` wrapped in :class:`~analysis_lib.training.sam.SAM` (ASAM with
    ``sam_adaptive``); 0 returns the base optimiser itself.
    """
    params = model.parameters()
    if name == "sgd":
        base = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif name == "adam":
        base = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        base = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"invalid argument name={name!r}: must be 'sgd', 'adam' or 'adamw'")
    return SAM(base, sam_rho, adaptive=sam_adaptive) if sam_rho > 0 else base


class _Timer:
    """Accumulates the seconds spent in probes."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def __call__(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def train_phases(model: nn.Module, objective: Objective, phases: list[Phase], probes: list[Probe], *,
                 interventions: Mapping[int, Callable[[dict], None]] | None = None,
                 first_step: int = 0) -> TrainResult:
    """Train ``model`` (in place) through ``phases``, calling ``probes`` on their schedule.

    Args:
        model: in train mode, on its device and dtype.
        objective: loss, evaluation and curvature data of the model family.
        phases: run one after another; steps count on across phases.
        probes: from :func:`analysis_lib.training.probe.build_probes`, in run order.
        interventions: global step -> ``fn(params)`` applied after that update (step 0: before
            training, before step 0 is observed), e.g. the seeded weight perturbation of twins.
        first_step: the step ``model`` is at when this call starts (0: untrained), for a run that
            continues from a stored checkpoint of ``first_step`` updates: the probes first observe
            step ``first_step`` and the phases' updates count on from ``first_step + 1``;
            interventions at steps <= ``first_step`` are taken to be in the checkpoint already.

    Returns:
        TrainResult: tidy metrics, ``finished`` or ``diverged`` (with the step), timings
        (``train_seconds``, ``probe_seconds``, ``<phase>_seconds``) and the probes' tables plus
        each finished phase's checkpoint.
    """
    interventions = dict(interventions or {})
    rec, timer, tables, timings = Recorder(), _Timer(), {}, {}
    params = dict(model.named_parameters())
    if first_step == 0 and 0 in interventions:  # later ones at steps <= first_step are in the checkpoint
        interventions[0](params)
    total = first_step + sum(p.steps for p in phases)
    ctx = ProbeContext(model, params, objective, rec.add, rec.add_layers, step=first_step,
                       last_step=total == first_step)
    t0 = time.perf_counter()
    with timer():
        for probe in probes:
            probe.start(ctx)
        _observe(probes, ctx)
    status, diverged_step, offset = "finished", None, first_step
    for phase in phases:
        start = time.perf_counter()
        diverged_step = _run_phase(model, objective, phase, offset, total, probes, ctx, interventions, timer)
        timings[f"{phase.name}_seconds"] = time.perf_counter() - start
        if diverged_step is not None:
            status = "diverged"
            break
        if phase.checkpoint:
            tables[phase.checkpoint] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        offset += phase.steps
    for probe in probes:
        tables.update(probe.tables())
    timings["train_seconds"] = time.perf_counter() - t0 - timer.seconds
    timings["probe_seconds"] = timer.seconds
    return TrainResult(rec.frame(), status, diverged_step, timings, tables)


def _call(probes: list[Probe], hook: str, ctx: ProbeContext) -> None:
    for probe in probes:
        getattr(probe, hook)(ctx)


def _observe(probes: list[Probe], ctx: ProbeContext) -> None:
    """Every probe's ``after_update``; then drop what they shared (e.g. a Hessian operator's graph)."""
    _call(probes, "after_update", ctx)
    ctx.cache.clear()


def _run_phase(model, objective, phase: Phase, offset: int, total: int, probes, ctx: ProbeContext,
               interventions, timer) -> int | None:
    """Run one phase's updates; return the global step of a divergence, or None."""
    opt = phase.optimizer(model)
    for local in range(1, phase.steps + 1):
        step, batch = offset + local, next(phase.batches)
        for group in opt.param_groups:
            group["lr"] = phase.lr_at(local)
        opt.zero_grad(set_to_none=True)
        probing = local in phase.probe_steps
        if probing:
            ctx.step, ctx.phase, ctx.phase_end, ctx.last_step = step, phase.name, local == phase.steps, step == total
        with contextlib.ExitStack() as hooks:
            if probing:
                for probe in probes:
                    manager = probe.capture(ctx)
                    if manager is not None:
                        hooks.enter_context(manager)
            loss = objective.loss(model, batch)
            value = loss.item()
            for metric, recorded in objective.batch_metrics(loss).items():
                ctx.record(step, "model", metric, recorded)
            if not math.isfinite(value):
                return step
            loss.backward()
        if probing:
            with timer():
                _call(probes, "after_backward", ctx)
        if isinstance(opt, SAM):
            opt.step(lambda: _second_pass(model, objective, batch))
        else:
            opt.step()
        if step in interventions:
            interventions[step](ctx.params)
        if probing:
            with timer():
                _observe(probes, ctx)
    return None


def _second_pass(model: nn.Module, objective: Objective, batch) -> torch.Tensor:
    """SAM's closure: the loss of the same batch at θ + ε, backpropagated; buffers left as the first pass left them.

    BatchNorm's running statistics are updated once per step, by the forward pass at θ: the
    second pass's update (at the perturbed weights) is undone.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    loss = objective.loss(model, batch)
    loss.backward()
    with torch.no_grad():
        for b, value in buffers:
            b.copy_(value)
    return loss
