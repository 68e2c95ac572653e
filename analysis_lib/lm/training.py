"""Pre-training and fine-tuning the tiny transformer on the addition task, through the one training loop.

Protocol of :func:`train_lm` for one :class:`~analysis_lib.lm.config.LMRunConfig`, as two
phases of :func:`analysis_lib.training.loop.train_phases`:

1. **Pre-training ("base")**: ``train.steps`` updates of ``train.optimizer`` at ``train.lr``
   (linear warm-up over ``train.warmup_steps``, then by default a cosine decay to
   ``train.final_lr_fraction × lr``) on mini-batches of ``train.batch_size`` training problems,
   each written in the slow format with probability ``task.slow_fraction`` and in the fast one
   otherwise, so that one model knows both (the prompt's format token says which).
2. **Fine-tuning ("tuned")**: a fresh optimiser of the same kind continues for
   ``finetune.steps`` updates at ``finetune.lr`` on sequences that are slow with probability
   ``finetune.slow_fraction``; with ``finetune.adapter_layers`` only LoRA adapters on those
   blocks train (attached at the phase's start, merged into the weights at the end).

The loss (:class:`AdditionObjective`) is the masked cross-entropy on response tokens only,
averaged over each sequence's response tokens and then over the batch: a mean of per-sequence
losses, so every sequence weighs the same whatever its format's length, and the per-sample
probes apply. Steps count on through both phases: 1..train.steps are pre-training updates,
train.steps + 1 .. train.steps + finetune.steps fine-tuning ones.

With ``train.z_loss`` > 0 the objective adds ``z_loss × (log Z)²`` (averaged the same way; the
curvature probes still measure the cross-entropy alone). Recorded besides what the probes record:
``batch_loss`` (the cross-entropy) every update, and ``batch_z_loss`` (the added term) with
z-loss; with the ``eval`` probe, at every probe step, ``{train,test}_loss_{fast,slow}``
(teacher-forced, the training loss) and ``{train,test}_seq_acc_{fast,slow}`` (whole-response
exact match: the teacher-forced argmax is the target at every response token, which is exactly
when greedy decoding reproduces the response), and at the end of each phase
``test_acc_{fast,slow}``, the greedy-decoding answer exact-match (the answer digits are the right
sum, whatever the steps). ``TrainResult.tables``
holds the checkpoints ``base`` and ``tuned`` (state dicts; rebuild a model with :func:`build_lm`).

With ``finetune.from_run`` phase 1 is not run: the model is the ``base`` checkpoint of that stored
run (same task, model, pre-training and seed), probes first observe it at step ``train.steps``,
and only ``tuned`` is stored (the ``base`` weights are the source's).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..training.loop import Phase, TrainResult, make_optimizer, train_phases
from ..training.losses import masked_sequence_loss, sequence_losses, z_loss_terms
from ..training.objective import Objective
from ..training.probe import build_probes
from ..training.schedules import batches, order_seed, probe_steps, warmup_cosine
from ..training.sources import source_checkpoint
from ..weights.perturbation import perturbation
from .adapters import attach_adapters, merge_adapters, transformer_linear_names
from .config import LMRunConfig
from .tasks import (
    VOCAB_SIZE,
    Batch,
    Problems,
    encode,
    greedy_accuracy,
    response_exact_match,
    sequence_length,
    task_splits,
)
from .transformer import TinyTransformer, build_transformer

FORMATS = ("fast", "slow")
PRETRAINING = ("task", "model", "train", "seed")  # what a run continued by finetune.from_run must share


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

    def batches(self, batch_size: int, stream: int, slow_fraction: float) -> Iterator[Batch]:
        """Endless mini-batches: problem order from ``stream``, each row's format from ``stream + 1``."""
        order = batches(len(self.fast.tokens), batch_size, stream, self.fast.tokens.device)
        formats = torch.Generator().manual_seed(stream + 1)  # its own stream: the format of each row
        for idx in order:
            slow = (torch.rand(len(idx), generator=formats) < slow_fraction).to(idx.device)
            yield self.sample(idx, slow)


def _to(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(t.to(device) for t in (batch.tokens, batch.targets, batch.mask, batch.answer_mask)))


class AdditionObjective(Objective):
    """The tiny transformer on the addition task: masked response-token loss, both formats.

    ``eval`` records the metrics of the module docstring; the curvature probes use the first n
    training problems written in both formats (2n sequences; all problems when n is 0).
    """

    capabilities = frozenset({"evaluate", "curvature", "sample_mean"})  # a mean of per-sequence means
    output_dim = VOCAB_SIZE

    def __init__(self, pool: _Pool, evals: dict, z_loss: float = 0.0):
        self.pool, self.evals, self.z_loss = pool, evals, z_loss
        self._terms: tuple[torch.Tensor, torch.Tensor] | None = None

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """:func:`batch_loss`, plus ``z_loss`` × the mean over sequences of their mean (log Z)² when > 0.

        The z term is averaged like the cross-entropy (over each sequence's response tokens, then
        over sequences), so the objective stays a mean of per-sequence losses.
        """
        if not self.z_loss:
            return batch_loss(model, batch)
        logits = model(batch.tokens)
        ce = sequence_losses(logits, batch.targets, batch.mask, "mean").mean()
        z = self.z_loss * z_loss_terms(logits, batch.mask).mean()
        self._terms = (ce.detach(), z.detach())
        return ce + z

    def batch_metrics(self, loss: torch.Tensor) -> dict[str, float]:
        """``batch_loss`` (the cross-entropy) and, with z-loss, ``batch_z_loss`` (the added term)."""
        if not self.z_loss:
            return super().batch_metrics(loss)
        ce, z = self._terms
        return {"batch_loss": ce.item(), "batch_z_loss": z.item()}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, record: Callable, step: int, phase_end: bool) -> None:
        """Teacher-forced loss and exact match per split and format; greedy accuracy at a phase's end."""
        was_training = model.training
        model.eval()
        for split in ("train", "test"):
            for fmt in FORMATS:
                batch = self.evals[split, fmt]
                logits = model(batch.tokens)  # (N, T, V)
                loss = sequence_losses(logits, batch.targets, batch.mask, "mean").mean()
                record(step, "model", f"{split}_loss_{fmt}", loss.item())
                record(step, "model", f"{split}_seq_acc_{fmt}",
                       response_exact_match(logits, batch).double().mean().item())
        if phase_end:
            for fmt in FORMATS:
                record(step, "model", f"test_acc_{fmt}", greedy_accuracy(model, self.evals["problems"], fmt)["answer"])
        model.train(was_training)

    def curvature_problem(self, n_samples: int):
        """``(masked_sequence_loss, tokens (2n, T), (targets, mask))`` of the first n problems."""
        n = n_samples or len(self.pool.fast.tokens)
        fast, slow = self.pool.fast, self.pool.slow
        tokens = torch.cat([fast.tokens[:n], slow.tokens[:n]])
        return masked_sequence_loss, tokens, (torch.cat([fast.targets[:n], slow.targets[:n]]),
                                              torch.cat([fast.mask[:n], slow.mask[:n]]))


def _eval_sets(train_set: Problems, test_set: Problems, eval_problems: int, device) -> dict:
    """Teacher-forced batches per split and format, and the held-out problems for greedy decoding."""
    n = eval_problems or None
    out = {"problems": test_set.subset(slice(0, n))}
    for split, problems in (("train", train_set), ("test", test_set)):
        for fmt in FORMATS:
            out[split, fmt] = _to(encode(problems.subset(slice(0, n)), fmt), device)
    return out


def train_lm(config: LMRunConfig) -> TrainResult:
    """Pre-train, then fine-tune, the tiny transformer as ``config`` says (see the module docstring).

    Returns:
        TrainResult with tidy metrics, status ``finished`` or ``diverged``, timings (seconds of
        pre-training, fine-tuning and probes) and the checkpoints ``base`` and ``tuned`` (those
        reached before a divergence).
    """
    tc, ft, device = config.train, config.finetune, torch.device(config.train.device)
    source = source_checkpoint(ft.from_run, "base", parameter="finetune.from_run", identity=config.identity(),
                               same=PRETRAINING) if ft.from_run else None
    train_set, test_set = task_splits(config.task)
    model = build_lm(config, source).to(device)
    model.train()
    pool = _Pool(train_set, device)
    objective = AdditionObjective(pool, _eval_sets(train_set, test_set, config.probes.eval_problems, device),
                                  tc.z_loss)

    def optimizer(lr: float):
        return lambda m: make_optimizer(m, tc.optimizer, lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                                        sam_rho=tc.sam_rho, sam_adaptive=tc.sam_adaptive)

    hooks = []

    def finetune_optimizer(m: torch.nn.Module) -> torch.optim.Optimizer:
        if ft.adapter_layers:  # at the start of fine-tuning: freeze the model, train adapters only
            names = transformer_linear_names(config.model.n_layers, list(ft.adapter_layers), ft.adapter_projections)
            attach_adapters(m, names, ft.adapter_rank, seed=config.seed)
            # the frozen embedding's output still asks for a gradient, so that activation gradients
            # exist below the lowest adapter too (no parameter receives one)
            hooks.append(m.embed.register_forward_hook(lambda module, args, out: out.requires_grad_()))
        return optimizer(ft.lr)(m)

    final = tc.final_lr_fraction if tc.decay == "cosine" else 1.0
    phases = [
        Phase("pretrain", tc.steps, optimizer(tc.lr), warmup_cosine(tc.lr, tc.warmup_steps, tc.steps, final),
              pool.batches(tc.batch_size, order_seed(config.seed, 0), config.task.slow_fraction),
              set(probe_steps(config.probes, tc.steps)) - {0}, checkpoint="base"),
        Phase("finetune", ft.steps, finetune_optimizer, warmup_cosine(ft.lr, ft.warmup_steps, ft.steps),
              pool.batches(tc.batch_size, order_seed(config.seed, 1), ft.slow_fraction),
              set(probe_steps(config.probes, ft.steps)) - {0}, checkpoint="tuned"),
    ]
    if source is not None:  # pre-trained already: the source's base checkpoint
        phases = phases[1:]
    result = train_phases(model, objective, phases, build_probes(config.probes, objective.capabilities),
                          interventions=perturbation(tc), first_step=tc.steps if source is not None else 0)
    for hook in hooks:
        hook.remove()
    if merge_adapters(model) and "tuned" in result.tables:  # the checkpoint under the model's usual names
        result.tables["tuned"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return result
