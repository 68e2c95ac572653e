"""Frozen, validated configuration of a tiny-language-model run (the fast-vs-slow-thinking study).

An :class:`LMRunConfig` fully describes one run: the synthetic arithmetic task
(:class:`TaskConfig`, see :mod:`analysis_lib.tasks`), the decoder-only transformer
(:class:`TransformerConfig`, see :mod:`analysis_lib.transformer`), the pre-training optimiser loop
(:class:`analysis_lib.config.TrainConfig`), the fine-tuning phase (:class:`FinetuneConfig`), the
probes (:class:`LMProbeConfig`) and the seed. Build one from nested dicts (YAML, papermill
parameters) with ``config_from_dict(spec, LMRunConfig)`` and vary it with ``with_overrides`` or
``expand_grid`` exactly as a :class:`analysis_lib.config.RunConfig`.

The defaults are the measured budget configuration (see :mod:`analysis_lib.lm`): 2-digit
addition, 4 layers, d_model 48, Adam with warm-up and cosine decay, 800 pre-training steps, which
learns both formats on every seed tried, in about 40 CPU-seconds per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import (TrainConfig, _check_choice, _check_int, _check_number, _check_probe_names, _fail,
                     check_run_fields, run_identity)

NORM_PLACEMENTS = ("pre", "post", "peri")
LM_PROBES = ("eval", "grad_norm", "grad_noise")
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
        _check_int("task.n_digits", self.n_digits, 1)
        if self.n_digits > MAX_DIGITS:
            _fail("task.n_digits", self.n_digits, f"must be <= {MAX_DIGITS}")
        _check_int("task.n_train", self.n_train, 2)
        _check_int("task.n_test", self.n_test, 2)
        _check_number("task.slow_fraction", self.slow_fraction, lo=0.0, hi=1.0)
        _check_number("task.corrupt_fraction", self.corrupt_fraction, lo=0.0, hi=1.0)
        if self.corrupt_fraction == 0:
            _fail("task.corrupt_fraction", self.corrupt_fraction, "must be in (0, 1]: a corrupted "
                  "response has at least one wrong step (the clean one is 'slow')")
        _check_int("task.split_seed", self.split_seed, 0)
        pairs = 10 ** (2 * self.n_digits)
        if self.n_train + self.n_test > pairs:
            _fail("task.n_train", self.n_train, f"n_train + n_test (= {self.n_train + self.n_test}) "
                  f"must be <= {pairs}, the number of distinct {self.n_digits}-digit problems")


@dataclass(frozen=True)
class TransformerConfig:
    """Decoder-only transformer shape; ``norm`` is the LayerNorm placement, ``qk_norm`` adds a
    LayerNorm on each head's queries and keys."""

    n_layers: int = 4
    d_model: int = 48
    n_heads: int = 4
    d_mlp: int = 192
    norm: str = "pre"
    qk_norm: bool = False

    def __post_init__(self) -> None:
        _check_int("model.n_layers", self.n_layers, 1)
        _check_int("model.d_model", self.d_model, 1)
        _check_int("model.n_heads", self.n_heads, 1)
        _check_int("model.d_mlp", self.d_mlp, 1)
        _check_choice("model.norm", self.norm, NORM_PLACEMENTS)
        if not isinstance(self.qk_norm, bool):
            _fail("model.qk_norm", self.qk_norm, "must be true or false")
        if self.d_model % self.n_heads:
            _fail("model.n_heads", self.n_heads, f"must divide model.d_model (= {self.d_model})")


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
    """

    steps: int = 300
    lr: float = 3e-4
    warmup_steps: int = 0
    slow_fraction: float = 0.8

    def __post_init__(self) -> None:
        _check_int("finetune.steps", self.steps, 0)
        _check_number("finetune.lr", self.lr, positive=True)
        _check_int("finetune.warmup_steps", self.warmup_steps, 0)
        _check_number("finetune.slow_fraction", self.slow_fraction, lo=0.0, hi=1.0)


@dataclass(frozen=True)
class LMProbeConfig:
    """Which probes run, at steps 0, every, 2*every, ... of each phase and at each phase's end.

    ``eval``: teacher-forced loss and whole-response exact match per format on ``eval_problems``
    training and held-out problems at every probe step, and greedy answer exact-match per format
    on the held-out ones at the end of each phase (see :mod:`analysis_lib.lm`); ``grad_norm``:
    per-matrix gradient norms of the probe step's mini-batch; ``grad_noise``: per-layer gradient
    noise of that mini-batch (:class:`analysis_lib.gradnoise.GradientNoiseProbe`).
    """

    names: tuple[str, ...] = ("eval", "grad_norm")
    every: int = 100
    eval_problems: int = 200  # the first n of each split; 0 = all

    def __post_init__(self) -> None:
        _check_probe_names(self, LM_PROBES)
        _check_int("probes.every", self.every, 1)
        _check_int("probes.eval_problems", self.eval_problems, 0)


@dataclass(frozen=True)
class LMTrainConfig(TrainConfig):
    """The pre-training loop: :class:`~analysis_lib.config.TrainConfig` plus a decay of the
    learning rate after the warm-up.

    ``decay="cosine"`` lowers it from ``lr`` at the end of the warm-up to
    ``final_lr_fraction × lr`` at the last step (half a cosine); ``"constant"`` keeps ``lr``.
    The decay makes the accuracy reached at the end of pre-training reliable across seeds: at a
    constant rate it swings by several points from one evaluation to the next. The ``perturb_*``
    options of TrainConfig are not supported here and must stay 0.
    """

    optimizer: str = "adam"
    lr: float = 3e-3
    batch_size: int = 32
    steps: int = 800
    warmup_steps: int = 50
    decay: str = "cosine"
    final_lr_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("train.decay", self.decay, LR_DECAYS)
        _check_number("train.final_lr_fraction", self.final_lr_fraction, lo=0.0, hi=1.0)
        if self.perturb_scale:
            _fail("train.perturb_scale", self.perturb_scale,
                  "must be 0: weight perturbations are not supported for language-model runs")


@dataclass(frozen=True)
class LMRunConfig:
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

    def __post_init__(self) -> None:
        check_run_fields(self)
        if not isinstance(self.train, LMTrainConfig):
            _fail("train", self.train, "must be an LMTrainConfig (a TrainConfig with a learning-rate decay)")

    def identity(self) -> dict:
        """The config as a plain dict without ``conditions``, tagged ``kind = "lm"`` so that its
        run id never collides with a :class:`~analysis_lib.config.RunConfig`'s."""
        return run_identity(self, kind="lm")
