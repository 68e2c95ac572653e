"""Frozen, validated configuration objects for one training run of the MLP / CNN family.

A run is fully described by a :class:`RunConfig` (data, model, training, probes, seed). Every
config validates itself on construction, so a bad parameter stops a study before any training
with one message naming the parameter, the value given and what is allowed. A run config also
says how it trains (:meth:`RunConfig.run`), so the run grid and the run store need to know
nothing about model families (the tiny transformer's :class:`analysis_lib.lm.config.LMRunConfig`
has the same shape).

``config_from_dict`` builds a run config of any such class from nested plain dicts (YAML,
papermill parameters); ``with_overrides`` applies dotted-key overrides such as
``{"train.lr": 0.1}`` (what run grids use). :func:`run_identity` is what a run id hashes. These
live in :mod:`.config_dicts` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..validation import check_bool, check_choice, check_int, check_number, fail

DATASETS = ("mnist1d", "digits", "gaussian_mixture", "xor", "sparse_parity")
MODELS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "gelu")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")
DEFAULT_PROBES = ("eval", "grad_norm", "weight_norm", "update_ratio", "rotation", "dist_init")
SCHEDULES = ("every", "log")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how big, and how it is split.

    ``split_seed`` fixes the generated data and the train/test split for every run seed, so
    replicate seeds differ only in initialisation and data order.
    """

    name: str = "mnist1d"
    n_train: int = 4000
    n_test: int = 1000
    n_classes: int = 10  # used by gaussian_mixture; mnist1d and digits have 10, xor and sparse_parity 2
    n_features: int = 20  # used by gaussian_mixture, xor and sparse_parity
    noise: float = 1.0  # gaussian_mixture, xor: within-class standard deviation
    split_seed: int = 0
    parity_k: int = 3  # sparse_parity: the label is the parity of the first parity_k features

    # Fields added after run ids were first computed, left out of the identity while at their
    # default (see run_identity).
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ("parity_k",)

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASETS)
        check_int("data.n_train", self.n_train, 1)
        check_int("data.n_test", self.n_test, 1)
        check_int("data.n_classes", self.n_classes, 2)
        check_int("data.n_features", self.n_features, 1)
        check_number("data.noise", self.noise, positive=True)
        check_int("data.split_seed", self.split_seed, 0)
        check_int("data.parity_k", self.parity_k, 1)
        if self.name == "sparse_parity" and self.parity_k > self.n_features:
            fail("data.parity_k", self.parity_k, f"must be <= data.n_features (= {self.n_features})")
        if self.name == "xor" and self.n_features < 2:
            fail("data.n_features", self.n_features, "xor needs at least 2 features")
        if self.name == "digits" and self.n_train + self.n_test > 1797:
            fail("data.n_train", self.n_train,
                 f"digits has 1797 samples, so n_train + n_test (= {self.n_train + self.n_test}) "
                 "must be <= 1797")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``depth`` counts hidden layers (MLP) or conv layers (CNN)."""

    kind: str = "mlp"
    depth: int = 2
    width: int = 64  # MLP hidden units / CNN channels
    activation: str = "relu"
    residual: bool = False  # MLP only: x + f(x) between equal-width hidden layers
    norm: str = "none"
    kernel_size: int = 5  # CNN only
    # Multiplies the default initialisation of every linear and conv layer (weights and biases);
    # small values (1e-4 ... 1e-2) give the small-initialisation regime (Min, Mallada & Vidal 2024).
    init_scale: float = 1.0

    # Fields added after run ids were first computed, left out of the identity while at their
    # default (see run_identity).
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ("init_scale",)

    def __post_init__(self) -> None:
        check_choice("model.kind", self.kind, MODELS)
        check_int("model.depth", self.depth, 1)
        check_int("model.width", self.width, 1)
        check_choice("model.activation", self.activation, ACTIVATIONS)
        check_choice("model.norm", self.norm, NORMS)
        check_int("model.kernel_size", self.kernel_size, 1)
        check_bool("model.residual", self.residual)
        check_number("model.init_scale", self.init_scale, positive=True)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser loop. ``batch_size = 0`` means full-batch gradient descent."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    batch_size: int = 128
    steps: int = 500
    warmup_steps: int = 0  # linear lr warm-up from lr/warmup_steps to lr
    device: str = "cpu"
    dtype: str = "float32"
    # A one-off perturbation of the weights after ``perturb_step`` updates (0 = at init): Gaussian
    # noise from ``perturb_seed``, scaled to ``perturb_scale`` × ‖θ‖ over the whole model; 0 = none.
    perturb_step: int = 0
    perturb_scale: float = 0.0
    perturb_seed: int = 0
    # SAM around ``optimizer`` with this ρ (0 = the base optimiser alone); ASAM's scaled step with
    # ``sam_adaptive`` (analysis_lib.training.sam).
    sam_rho: float = 0.0
    sam_adaptive: bool = False

    # Fields added after run ids were first computed, left out of the identity while at their
    # default (see run_identity), so runs stored before them keep their ids.
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ("sam_rho", "sam_adaptive")

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_number("train.lr", self.lr, positive=True)
        check_number("train.momentum", self.momentum, lo=0.0, hi=0.999999)
        check_number("train.weight_decay", self.weight_decay, lo=0.0)
        check_int("train.batch_size", self.batch_size, 0)
        check_int("train.steps", self.steps, 1)
        check_int("train.warmup_steps", self.warmup_steps, 0)
        check_choice("train.device", self.device, DEVICES)
        check_choice("train.dtype", self.dtype, DTYPES)
        check_int("train.perturb_step", self.perturb_step, 0)
        check_number("train.perturb_scale", self.perturb_scale, lo=0.0)
        check_int("train.perturb_seed", self.perturb_seed, 0)
        check_number("train.sam_rho", self.sam_rho, lo=0.0)
        check_bool("train.sam_adaptive", self.sam_adaptive)
        if self.sam_adaptive and self.sam_rho == 0:
            fail("train.sam_adaptive", self.sam_adaptive, "needs train.sam_rho > 0 (adaptive SAM with ρ = 0 is no SAM)")
        if self.perturb_step > self.steps:
            fail("train.perturb_step", self.perturb_step,
                 f"must be <= train.steps (= {self.steps}), the number of updates")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                fail("train.device", self.device, "no CUDA device is available here; use 'cpu'")


@dataclass(frozen=True)
class ProbeConfig:
    """Which probes run, and when.

    ``names`` are registered probes (:func:`analysis_lib.training.probe.probe_names`; each is
    documented in its class). The default probes are the cheap per-layer ones; the curvature
    probes (``sharpness``, ``hessian_trace``, ``grad_overlap``, ``spectrum``,
    ``block_sharpness``) cost
    Hessian-vector products and ``weights`` costs S × P × 4 bytes of disk per run, so they are
    switched on by naming them.

    ``schedule="every"`` probes at steps 0, every, 2*every, ... of each training phase;
    ``"log"`` at ``points`` log-spaced steps. The last step of a phase is always probed.
    """

    names: tuple[str, ...] = DEFAULT_PROBES
    schedule: str = "every"
    every: int = 25
    points: int = 30
    curvature_samples: int = 0  # training samples the curvature probes use (the first n; 0 = all)
    sharpness_tol: float = 1e-3  # relative residual tolerance of λ_max (Lanczos)
    sharpness_max_steps: int = 60  # Hessian-vector products allowed per λ_max
    trace_matvecs: int = 30  # Hutch++ products per trace estimate
    overlap_k: int = 0  # grad_overlap: top-k Hessian eigenvectors (0 = the number of classes)
    exact_max_dim: int = 3000  # spectrum: exact (dense) up to this many parameters, else SLQ
    snr_batches: int = 16  # gradient_snr: mini-batches per probed step (K)
    snr_batch_size: int = 32  # gradient_snr: samples per mini-batch (B)

    # Fields added after run ids were first computed, left out of the identity while at their
    # default (see run_identity).
    LATE_FIELDS: ClassVar[tuple[str, ...]] = ("snr_batches", "snr_batch_size")

    def __post_init__(self) -> None:
        check_probe_names(self)
        check_choice("probes.schedule", self.schedule, SCHEDULES)
        check_int("probes.every", self.every, 1)
        check_int("probes.points", self.points, 2)
        check_int("probes.curvature_samples", self.curvature_samples, 0)
        check_number("probes.sharpness_tol", self.sharpness_tol, positive=True)
        check_int("probes.sharpness_max_steps", self.sharpness_max_steps, 2)
        check_int("probes.trace_matvecs", self.trace_matvecs, 6)
        check_int("probes.overlap_k", self.overlap_k, 0)
        check_int("probes.exact_max_dim", self.exact_max_dim, 1)
        check_int("probes.snr_batches", self.snr_batches, 2)
        check_int("probes.snr_batch_size", self.snr_batch_size, 1)


def check_probe_names(probes) -> None:
    """Validate a probe config's ``names`` against the probe registry and store them as a tuple."""
    from .probe import probe_names

    allowed = probe_names()
    if isinstance(probes.names, str) or not isinstance(probes.names, (tuple, list)):
        fail("probes.names", probes.names, f"must be a list drawn from {list(allowed)}")
    object.__setattr__(probes, "names", tuple(probes.names))
    for name in probes.names:
        check_choice("probes.names", name, allowed)


class RunConfigBase:
    """What every run-config class shares (:class:`RunConfig`, the LM's ``LMRunConfig``, yours).

    A run-config class is a frozen dataclass of sections (dataclasses), ``seed`` and
    ``conditions``, with a class attribute ``KIND`` (None, or a tag that keeps its run ids apart
    from other classes') and the methods ``run()`` (train, returning a
    :class:`~analysis_lib.training.loop.TrainResult`) and ``build_model(state_dict=None)``.
    The run grid, the store and the executors need nothing else.
    """

    KIND: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        check_run_fields(self)

    def identity(self) -> dict:
        """The config as a plain dict without the ``conditions`` labels (hashed into the run id)."""
        return run_identity(self)

    def label(self, name: str, default: Any = None) -> Any:
        """The value of the condition label ``name`` (e.g. ``"arm"``), or ``default``."""
        return dict(self.conditions).get(name, default)

    def loss_unit(self) -> str | None:
        """The training loss's unit for axis labels: nats (cross-entropy; CustomRunConfig overrides it)."""
        return "nats"


@dataclass(frozen=True)
class RunConfig(RunConfigBase):
    """Everything that determines one run of the MLP / CNN family; equal configs give identical results.

    ``conditions`` labels the run for tables (e.g. ``{"optimizer": "adam"}``); it does not take
    part in the run's identity (see :func:`run_identity`).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    conditions: tuple[tuple[str, Any], ...] = ()

    def run(self):
        """Train this run (:func:`analysis_lib.training.classifier.train_classifier`)."""
        from .classifier import train_classifier

        return train_classifier(self)

    def build_model(self, state_dict: Mapping | None = None):
        """The run's model in its dtype: initialised from ``seed``, or holding ``state_dict``."""
        from .classifier import run_model

        return run_model(self, state_dict)

    def dataset(self):
        """The run's dataset (:func:`analysis_lib.training.data.load_dataset`) in its dtype, on CPU."""
        import torch

        from .data import load_dataset

        return load_dataset(self.data).to("cpu", getattr(torch, self.train.dtype))

    def size_estimate(self) -> dict:
        """An upper bound of the run's parameters and peak memory (:func:`~analysis_lib.training.size.mlp_size`)."""
        from .size import mlp_size

        return mlp_size(self)

    def problem(self):
        """The run's loss (cross-entropy) and train / test splits, a :class:`~analysis_lib.training.problem.Problem`."""
        import torch.nn.functional as F

        from .problem import Problem

        d = self.dataset()
        return Problem(F.cross_entropy, {"train": (d.x_train, d.y_train), "test": (d.x_test, d.y_test)})


# Building, overriding and hashing run configs (any class of this shape) live in config_dicts.
from .config_dicts import (  # noqa: E402  (re-exported: imported from here throughout)
    check_run_fields,
    config_from_dict,
    lookup,
    run_identity,
    with_overrides,
)

__all__ = ["DataConfig", "ModelConfig", "ProbeConfig", "RunConfig", "RunConfigBase", "TrainConfig",
           "check_probe_names", "check_run_fields", "config_from_dict", "lookup", "run_identity",
           "with_overrides"]
