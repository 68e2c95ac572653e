"""Frozen, validated configuration of a tiny-language-model run.

An :class:`LMRunConfig` fully describes one run: the synthetic arithmetic task
(:class:`TaskConfig`, see :mod:`analysis_lib.lm.tasks`), the decoder-only transformer
(:class:`TransformerConfig`, see :mod:`analysis_lib.lm.transformer`), the pre-training optimiser
loop (:class:`LMTrainConfig`), the fine-tuning phase (:class:`FinetuneConfig`), the probes
(:class:`LMProbeConfig`) and the seed. Build one from nested dicts (YAML, papermill parameters)
with ``config_from_dict(spec, LMRunConfig)`` and vary it with ``with_overrides`` or
``expand_grid`` exactly as a :class:`analysis_lib.training.config.RunConfig`.

The defaults are a budget configuration that learns both formats on every seed tried
(2-digit addition, 4 layers, d_model 48, Adam with warm-up and cosine decay, 800 pre-training
steps; its cost is measured in ``benchmarks/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..training.config import ProbeConfig, RunConfigBase, TrainConfig
from ..validation import check_bool, check_choice, check_int, check_number, check_subset, fail

NORM_PLACEMENTS = ("pre", "post", "peri")
ADAPTER_PROJECTIONS = ("q", "k", "v", "o", "up", "down")  # = transformer.PROJECTIONS (which imports this module)
# probes that read the model (hooks), not its parameter table: the ones that may run with adapters
ADAPTER_PROBES = ("eval", "activation_stats", "attention_stats", "logit_stats")
LR_DECAYS = ("constant", "cosine")
MAX_DIGITS = 6


@dataclass(frozen=True)
class TaskConfig:
    """The n-digit addition task: which problems exist and how training mixes formats.

    ``n_train`` training and ``n_test`` held-out problems are distinct operand pairs drawn from
    ``split_seed`` (shared by every run seed, so replicate seeds differ only in initialisation
    and data order). ``slow_fraction`` is the share of pre-training sequences in the slow (worked
    steps) format, the rest fast (answer only). ``corrupt_fraction`` is the share of steps made
    wrong in a ``corrupted`` response: ceil(corrupt_fraction × n_digits) steps per problem.
    """

    n_digits: int = 2
    n_train: int = 4000
    n_test: int = 500
    slow_fraction: float = 0.5
    corrupt_fraction: float = 1.0
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_int("task.n_digits", self.n_digits, 1)
        if self.n_digits > MAX_DIGITS:
            fail("task.n_digits", self.n_digits, f"must be <= {MAX_DIGITS}")
        check_int("task.n_train", self.n_train, 2)
        check_int("task.n_test", self.n_test, 2)
        check_number("task.slow_fraction", self.slow_fraction, lo=0.0, hi=1.0)
        check_number("task.corrupt_fraction", self.corrupt_fraction, lo=0.0, hi=1.0)
        if self.corrupt_fraction == 0:
            fail("task.corrupt_fraction", self.corrupt_fraction, "must be in (0, 1]: a corrupted "
                  "response has at least one wrong step (the clean one is 'slow')")
        check_int("task.split_seed", self.split_seed, 0)
        pairs = 10 ** (2 * self.n_digits)
        if self.n_train + self.n_test > pairs:
            fail("task.n_train", self.n_train, f"n_train + n_test (= {self.n_train + self.n_test}) "
                  f"must be <= {pairs}, the number of distinct {self.n_digits}-digit problems")


@dataclass(frozen=True)
class TransformerConfig:
    """Decoder-only transformer shape.

    ``norm`` is the LayerNorm placement; ``qk_norm`` adds a LayerNorm on each head's queries and keys.
    """

    n_layers: int = 4
    d_model: int = 48
    n_heads: int = 4
    d_mlp: int = 192
    norm: str = "pre"
    qk_norm: bool = False

    def __post_init__(self) -> None:
        check_int("model.n_layers", self.n_layers, 1)
        check_int("model.d_model", self.d_model, 1)
        check_int("model.n_heads", self.n_heads, 1)
        check_int("model.d_mlp", self.d_mlp, 1)
        check_choice("model.norm", self.norm, NORM_PLACEMENTS)
        check_bool("model.qk_norm", self.qk_norm)
        if self.d_model % self.n_heads:
            fail("model.n_heads", self.n_heads, f"must divide model.d_model (= {self.d_model})")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of a copy of the pre-trained ("base") model into the "tuned" one.

    A fresh optimiser of the pre-training kind (``train.optimizer``, ``train.batch_size``,
    ``train.weight_decay``) runs ``steps`` more updates at ``lr`` (linear warm-up over
    ``warmup_steps``, then constant) on sequences that are slow-format with probability
    ``slow_fraction``. ``steps = 0`` stores the base weights as the tuned ones. The default keeps
    some fast sequences so that the tuned model still knows both formats: slow-only fine-tuning
    (``slow_fraction = 1``) for 300 steps at 3e-4 dropped fast-format accuracy from >= 0.995 to
    0.95 on two of five seeds, and statistics of a model that lost a format are not comparable.

    ``adapter_layers`` (block indices; empty: full fine-tuning) fine-tunes only low-rank adapters
    of rank ``adapter_rank`` (α = rank, so scale 1) on the ``adapter_projections`` of those
    blocks, everything else frozen (LoRA: Hu et al. 2021; :mod:`analysis_lib.lm.adapters`); the
    ``tuned`` checkpoint holds the merged weights W + BA under the model's usual names. Only the
    probes in :data:`ADAPTER_PROBES` may run with adapters (the others read the run's parameter
    table, whose adapted weights stay frozen at W while the adapters train).

    ``from_run`` (a run id; empty: pre-train here) skips pre-training: fine-tuning starts from the
    ``base`` checkpoint of that finished run in the run store, which must have the same ``task``,
    ``model``, ``train`` and ``seed`` (checked when the run starts; see
    :mod:`analysis_lib.runs.sources`). Its weights are then exactly the ones this run would have
    pre-trained (probes never change training), so the fine-tuning is the same at a fraction of
    the cost; the run records fine-tuning only (steps ``train.steps`` ..) and stores ``tuned``.
    """

    steps: int = 300
    lr: float = 3e-4
    warmup_steps: int = 0
    slow_fraction: float = 0.8
    adapter_layers: tuple[int, ...] = ()
    adapter_rank: int = 4
    adapter_projections: tuple[str, ...] = ADAPTER_PROJECTIONS
    from_run: str = ""

    # left out of the run id while at their default (see LMProbeConfig.LATE_FIELDS)
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ("adapter_layers", "adapter_rank", "adapter_projections", "from_run")

    def __post_init__(self) -> None:
        check_int("finetune.steps", self.steps, 0)
        check_number("finetune.lr", self.lr, positive=True)
        check_int("finetune.warmup_steps", self.warmup_steps, 0)
        check_number("finetune.slow_fraction", self.slow_fraction, lo=0.0, hi=1.0)
        for name in ("adapter_layers", "adapter_projections"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                fail(f"finetune.{name}", value, "must be a list")
            object.__setattr__(self, name, tuple(value))
        for i in self.adapter_layers:
            check_int("finetune.adapter_layers", i, 0)
        if len(set(self.adapter_layers)) != len(self.adapter_layers):
            fail("finetune.adapter_layers", list(self.adapter_layers), "block indices must be distinct")
        check_int("finetune.adapter_rank", self.adapter_rank, 1)
        check_subset("finetune.adapter_projections", list(self.adapter_projections), ADAPTER_PROJECTIONS)
        if not isinstance(self.from_run, str):
            fail("finetune.from_run", self.from_run, "must be a run id (a string), or empty to pre-train here")


@dataclass(frozen=True)
class LMProbeConfig(ProbeConfig):
    """Which probes run, and when: :class:`~analysis_lib.training.config.ProbeConfig` with LM defaults.

    Probes run at steps 0, every, 2*every, ... of each phase (pre-training, fine-tuning) and at
    each phase's end; every registered probe applies to the transformer. ``eval`` records the
    teacher-forced loss and whole-response exact match per format on ``eval_problems`` training
    and held-out problems at every probe step, and the greedy answer exact-match per format on
    the held-out ones at the end of each phase (see :mod:`analysis_lib.lm.training`). The
    curvature probes measure the Hessian of the training loss over the first
    ``curvature_samples`` training problems (all when 0), each written in both formats.
    """

    names: tuple[str, ...] = ("eval", "grad_norm")
    every: int = 100
    eval_problems: int = 200  # the first n of each split; 0 = all

    # ProbeConfig's other options, which LM runs gained when they moved onto the shared training
    # loop: left out of the run id while at their default, so earlier runs keep their ids.
    LATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "schedule", "points", "curvature_samples", "sharpness_tol", "sharpness_max_steps",
        "trace_matvecs", "overlap_k", "exact_max_dim", *ProbeConfig.LATE_FIELDS)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("probes.eval_problems", self.eval_problems, 0)


@dataclass(frozen=True)
class LMTrainConfig(TrainConfig):
    """The pre-training loop: a TrainConfig plus a decay of the learning rate after the warm-up.

    ``decay="cosine"`` lowers it from ``lr`` at the end of the warm-up to
    ``final_lr_fraction × lr`` at the last step (half a cosine); ``"constant"`` keeps ``lr``.
    The decay makes the accuracy reached at the end of pre-training reliable across seeds: at a
    constant rate it swings by several points from one evaluation to the next. The ``perturb_*``
    options perturb the weights after ``perturb_step`` pre-training updates, as for any run.
    ``z_loss`` > 0 adds ``z_loss × (log Z)²`` (log Z = logsumexp of the output logits, averaged
    over response tokens like the cross-entropy) to the objective of both phases
    (:func:`analysis_lib.training.losses.z_loss_terms`; Chowdhery et al. 2022, Wortsman et al.
    2023 use 1e-4); ``batch_loss`` stays the cross-entropy and the added term is recorded as
    ``batch_z_loss``.
    """

    optimizer: str = "adam"
    lr: float = 3e-3
    batch_size: int = 32
    steps: int = 800
    warmup_steps: int = 50
    decay: str = "cosine"
    final_lr_fraction: float = 0.1
    z_loss: float = 0.0

    # left out of the run id while at their default (see LMProbeConfig.LATE_FIELDS)
    LATE_FIELDS: ClassVar[tuple[str, ...]] = (*TrainConfig.LATE_FIELDS, "z_loss")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("train.decay", self.decay, LR_DECAYS)
        check_number("train.final_lr_fraction", self.final_lr_fraction, lo=0.0, hi=1.0)
        check_number("train.z_loss", self.z_loss)


@dataclass(frozen=True)
class LMRunConfig(RunConfigBase):
    """Everything that determines one language-model run; equal configs give identical results.

    ``conditions`` labels the run for tables and is not part of its identity. ``train`` is the
    pre-training loop.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    probes: LMProbeConfig = field(default_factory=LMProbeConfig)
    seed: int = 0
    conditions: tuple[tuple[str, Any], ...] = ()

    KIND: ClassVar[str | None] = "lm"  # run ids never collide with a RunConfig's

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.train, LMTrainConfig):
            fail("train", self.train, "must be an LMTrainConfig (a TrainConfig with a learning-rate decay)")
        if self.finetune.adapter_layers:
            self._check_adapters()

    def _check_adapters(self) -> None:
        ft, model = self.finetune, self.model
        for i in ft.adapter_layers:
            if i >= model.n_layers:
                fail("finetune.adapter_layers", list(ft.adapter_layers),
                     f"{i} is not a block index in [0, model.n_layers = {model.n_layers})")
        d_mlp = model.d_mlp if {"up", "down"} & set(ft.adapter_projections) else model.d_model
        if ft.adapter_rank > min(model.d_model, d_mlp):
            fail("finetune.adapter_rank", ft.adapter_rank, f"must be <= {min(model.d_model, d_mlp)}, the smallest "
                 "dimension of the adapted matrices")
        for name in self.probes.names:
            if name not in ADAPTER_PROBES:
                fail("probes.names", list(self.probes.names), f"{name!r} cannot run with finetune.adapter_layers "
                     f"(it reads the parameters, frozen under the adapters); allowed: {list(ADAPTER_PROBES)}")

    def run(self):
        """Pre-train and fine-tune this run (:func:`analysis_lib.lm.training.train_lm`)."""
        from .training import train_lm

        return train_lm(self)

    def build_model(self, state_dict: Mapping | None = None):
        """The run's transformer: initialised from ``seed``, or holding ``state_dict``."""
        from .training import build_lm

        return build_lm(self, state_dict)
