"""Pre-training and fine-tuning the tiny transformer on the addition task (the fast-vs-slow study).

Protocol of :func:`train_lm` for one :class:`LMRunConfig`:

1. **Pre-training ("base")**: ``train.steps`` updates of ``train.optimizer`` at ``train.lr``
   (linear warm-up over ``train.warmup_steps``, then by default a cosine decay to
   ``train.final_lr_fraction × lr``, see :class:`LMTrainConfig`) on mini-batches of ``train.batch_size`` training
   problems, each written in the slow format with probability ``task.slow_fraction`` and in the
   fast one otherwise, so that one model knows both (the prompt's format token says which).
2. **Fine-tuning ("tuned")**: a copy continues for ``finetune.steps`` updates with a fresh
   optimiser at ``finetune.lr`` on sequences that are slow with probability
   ``finetune.slow_fraction`` (default: slow only).

The loss is the masked cross-entropy on response tokens only, averaged over each sequence's
response tokens and then over the batch (:func:`analysis_lib.gradstats.sequence_losses`): a mean
of per-sequence losses, so every sequence weighs the same whatever its format's length, and the
per-sample gradient-noise probe applies. Steps count on through both phases: 1..train.steps are
pre-training updates, train.steps + 1 .. train.steps + finetune.steps fine-tuning ones; "step t"
is the state after t updates (as in :mod:`analysis_lib.training`).

Recorded (tidy ``step, layer, metric, value``; ``layer = "model"`` for whole-model metrics):
``batch_loss`` every update; with the ``eval`` probe, at every probe step,
``{train,test}_loss_{fast,slow}`` (teacher-forced, the training loss) and
``{train,test}_seq_acc_{fast,slow}`` (whole-response exact match: the teacher-forced argmax is
the target at every response token, which is exactly when greedy decoding reproduces the
response), and at the end of each phase ``test_acc_{fast,slow}``, the greedy-decoding answer
exact-match (the answer digits are the right sum, whatever the steps); with ``grad_norm``
per-matrix gradient norms (``layer = "blocks.0.attn.q"`` ...); with ``grad_noise`` the per-layer
noise statistics of :mod:`analysis_lib.gradnoise`. ``TrainResult.tables`` holds the checkpoints
``base`` and ``tuned`` (state dicts; rebuild a model with :func:`build_lm`). A non-finite loss
ends the run as ``diverged`` at that step, keeping what was recorded.

Budget (the defaults of :class:`LMRunConfig`): 2-digit addition (4000 training and 500
held-out problems); 4 layers (so that early / middle / late thirds of the layer differences
exist), d_model 48, 4 heads, d_mlp 192, pre-LN; Adam at 3e-3, batch 32, 50 warm-up steps, cosine
decay to 3e-4 at step 800; fine-tuning 300 steps at 3e-4 with 80% slow sequences. Measured with
one torch thread per process on a 2-core machine shared with other work (load average 3-6):
seeds 0-4 all reached >= 0.995 greedy answer accuracy on both formats at the end of pre-training
(>= 0.95 on both first at step 600-700) and kept >= 0.995 after fine-tuning; a whole run takes
38-40 CPU-seconds including probes (39 s wall when it ran alone, 28 s of it pre-training); three
seeds through :func:`analysis_lib.grid.run_grid` on a 3-worker Dask LocalCluster took 264 s wall
from an empty cache at load average 5 (about 3 × 39 / 2 ≈ 60 s of compute on an idle machine),
and 0.04 s from a warm cache. Smaller models were not reliable: d_model 32 left the fast format
at 0.90-0.93 on some seeds after 700-1200 steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from . import probes as P
from .gradnoise import GradientNoiseProbe
from .gradstats import sequence_losses
from .lm_config import (FinetuneConfig, LMProbeConfig, LMRunConfig, LMTrainConfig,  # noqa: F401 (re-export)
                        TaskConfig, TransformerConfig)
from .tasks import (VOCAB_SIZE, Batch, Problems, encode, greedy_accuracy, response_exact_match, sequence_length,
                    task_splits)
from .training import TrainResult, _Recorder, batches, make_optimizer
from .transformer import TinyTransformer, build_transformer

FORMATS = ("fast", "slow")


def build_lm(config: LMRunConfig, state_dict: dict | None = None) -> TinyTransformer:
    """The run's model: initialised from ``config.seed``, or loaded from a checkpoint state dict."""
    max_len = sequence_length(config.task.n_digits, "slow") - 1
    model = build_transformer(config.model, VOCAB_SIZE, max_len, config.seed)
    model.to(getattr(torch, config.train.dtype))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def batch_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean over sequences of each sequence's mean cross-entropy on its masked (response) tokens."""
    return sequence_losses(model(batch.tokens), batch.targets, batch.mask, "mean").mean()


@dataclass(frozen=True)
class _Phase:
    """One optimisation phase; ``offset`` is the global step before its first update."""

    name: str
    steps: int
    lr: float
    warmup_steps: int
    slow_fraction: float
    offset: int
    stream: int  # seed of the phase's data order
    final_lr_fraction: float = 1.0  # cosine decay to this share of lr; 1 = constant

    def lr_at(self, step: int) -> float:
        """Learning rate of the phase's update ``step`` (1-based): linear warm-up, then cosine decay."""
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        f = self.final_lr_fraction
        return self.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))


class _Pool:
    """Every training problem encoded in both formats, padded alike, on the run's device."""

    def __init__(self, problems: Problems, device: torch.device):
        length = sequence_length(problems.n_digits, "slow") - 1
        self.fast, self.slow = (_to(encode(problems, f, length), device) for f in FORMATS)

    def sample(self, idx: torch.Tensor, slow: torch.Tensor) -> Batch:
        """Rows ``idx`` (B,), each in the slow format where ``slow`` (B,) bool is True."""
        pick = slow[:, None]  # (B, 1)
        return Batch(*(torch.where(pick, getattr(self.slow, f)[idx], getattr(self.fast, f)[idx])
                       for f in ("tokens", "targets", "mask", "answer_mask")))


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(t.to(device) for t in (batch.tokens, batch.targets, batch.mask, batch.answer_mask)))


def train_lm(config: LMRunConfig) -> TrainResult:
    """Pre-train, then fine-tune, the tiny transformer as ``config`` says (see the module docstring).

    Returns:
        TrainResult with tidy metrics, status ``finished`` or ``diverged``, timings (seconds of
        pre-training, fine-tuning and probes) and the checkpoints ``base`` and ``tuned`` (the
        ones reached before a divergence).
    """
    tc, ft, device = config.train, config.finetune, torch.device(config.train.device)
    train_set, test_set = task_splits(config.task)
    model = build_lm(config).to(device)
    model.train()
    pool, evals = _Pool(train_set, device), _eval_sets(train_set, test_set, config.probes, device)
    rec, tables, timings = _Recorder(), {}, {"probe_seconds": 0.0}
    phases = [_Phase("pretrain", tc.steps, tc.lr, tc.warmup_steps, config.task.slow_fraction, 0,
                     1_000_003 * config.seed + 17, tc.final_lr_fraction if tc.decay == "cosine" else 1.0),
              _Phase("finetune", ft.steps, ft.lr, ft.warmup_steps, ft.slow_fraction, tc.steps,
                     1_000_003 * config.seed + 29)]
    if "eval" in config.probes.names:
        timings["probe_seconds"] += _probe_eval(0, model, evals, rec, greedy=False)
    status, diverged_step = "finished", None
    for phase, checkpoint in zip(phases, ("base", "tuned")):
        start = time.perf_counter()
        diverged_step = _run_phase(model, phase, config, pool, evals, rec, timings)
        timings[f"{phase.name}_seconds"] = time.perf_counter() - start
        if diverged_step is not None:
            status = "diverged"
            break
        tables[checkpoint] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    total = sum(timings.get(f"{p.name}_seconds", 0.0) for p in phases)
    timings["train_seconds"] = total - timings["probe_seconds"]
    return TrainResult(rec.frame(), status, diverged_step, timings, tables)


def _run_phase(model, phase: _Phase, config: LMRunConfig, pool: _Pool, evals, rec, timings) -> int | None:
    """Run one phase's updates; return the global step of a divergence, or None."""
    names, every = set(config.probes.names), config.probes.every
    schedule = set(range(every, phase.steps + 1, every)) | {phase.steps}
    opt = make_optimizer(model, dataclasses.replace(config.train, lr=phase.lr))
    params = dict(model.named_parameters())
    order = batches(len(pool.fast.tokens), config.train.batch_size, phase.stream, pool.fast.tokens.device)
    formats = torch.Generator().manual_seed(phase.stream + 1)  # its own stream: format of each row
    for local in range(1, phase.steps + 1):
        step, idx = phase.offset + local, next(order)
        slow = (torch.rand(len(idx), generator=formats) < phase.slow_fraction).to(idx.device)
        for group in opt.param_groups:
            group["lr"] = phase.lr_at(local)
        opt.zero_grad(set_to_none=True)
        probing = local in schedule
        noise = GradientNoiseProbe(model) if probing and "grad_noise" in names else None
        with noise if noise is not None else contextlib.nullcontext():
            loss = batch_loss(model, pool.sample(idx, slow))
            value = loss.item()
            rec.add(step, "model", "batch_loss", value)
            if not math.isfinite(value):
                return step
            loss.backward()
        if probing:
            start = time.perf_counter()
            if "grad_norm" in names:
                grads = {k: v.grad if v.grad is not None else torch.zeros_like(v) for k, v in params.items()}
                rec.add_layers(step, "grad_norm", P.layer_gradient_norms(grads))
            if noise is not None:
                for layer, metric, stat in noise.statistics():
                    rec.add(step, layer, metric, stat)
            timings["probe_seconds"] += time.perf_counter() - start
        opt.step()
        if probing and "eval" in names:
            timings["probe_seconds"] += _probe_eval(step, model, evals, rec, greedy=local == phase.steps)
    return None


def _eval_sets(train_set: Problems, test_set: Problems, probes: LMProbeConfig, device) -> dict:
    """Teacher-forced batches per split and format, and the held-out problems for greedy decoding."""
    n = probes.eval_problems or None
    out = {"problems": test_set.subset(slice(0, n))}
    for split, problems in (("train", train_set), ("test", test_set)):
        for fmt in FORMATS:
            out[split, fmt] = _to(encode(problems.subset(slice(0, n)), fmt), device)
    return out


@torch.no_grad()
def _probe_eval(step: int, model, evals: dict, rec, greedy: bool) -> float:
    """Record loss and whole-response exact match per split and format (teacher-forced), and with
    ``greedy`` the greedy answer accuracy per format on the held-out problems; return seconds."""
    start, was_training = time.perf_counter(), model.training
    model.eval()
    for split in ("train", "test"):
        for fmt in FORMATS:
            batch = evals[split, fmt]
            logits = model(batch.tokens)  # (N, T, V)
            loss = sequence_losses(logits, batch.targets, batch.mask, "mean").mean()
            rec.add(step, "model", f"{split}_loss_{fmt}", loss.item())
            rec.add(step, "model", f"{split}_seq_acc_{fmt}", response_exact_match(logits, batch).double().mean().item())
    if greedy:
        for fmt in FORMATS:
            rec.add(step, "model", f"test_acc_{fmt}", greedy_accuracy(model, evals["problems"], fmt)["answer"])
    model.train(was_training)
    return time.perf_counter() - start
