"""Frozen, validated configuration objects for one training run.

A run is fully described by a :class:`RunConfig` (data, model, training, probes, seed). Every
config validates itself on construction, so a bad parameter stops a study before any training
with one message naming the parameter, the value given and what is allowed.

``config_from_dict`` builds a ``RunConfig`` (or another run-config class of the same shape, such as
:class:`analysis_lib.lm_config.LMRunConfig`) from nested plain dicts (YAML, papermill parameters);
``with_overrides`` applies dotted-key overrides such as ``{"train.lr": 0.1}`` (what run grids use).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

DATASETS = ("mnist1d", "digits", "gaussian_mixture")
MODELS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "gelu")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")
PROBES = ("eval", "grad_norm", "weight_norm", "update_ratio", "rotation", "dist_init",
          "sharpness", "hessian_trace", "grad_overlap", "spectrum", "weights", "grad_noise")
DEFAULT_PROBES = PROBES[:6]  # the curvature probes cost Hessian-vector products: opt in
SCHEDULES = ("every", "log")


class ConfigError(ValueError):
    """A parameter value that is not allowed; the message names parameter, value and what is allowed."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"invalid parameter {name}={value!r}: {allowed}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(name, value, f"must be one of {', '.join(repr(c) for c in choices)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"must be an integer >= {minimum}")


def _check_number(name: str, value: Any, *, positive: bool = False, lo: float = 0.0,
                  hi: float = math.inf) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > lo if positive else lo <= value <= hi
    if not ok:
        bound = f"> {lo}" if positive else f"in [{lo}, {hi}]"
        _fail(name, value, f"must be a finite number {bound}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how big, and how it is split.

    ``split_seed`` fixes the generated data and the train/test split for every run seed, so
    replicate seeds differ only in initialisation and data order.
    """

    name: str = "mnist1d"
    n_train: int = 4000
    n_test: int = 1000
    n_classes: int = 10  # used by gaussian_mixture; mnist1d and digits have 10
    n_features: int = 20  # used by gaussian_mixture
    noise: float = 1.0  # gaussian_mixture: within-class standard deviation
    split_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("data.name", self.name, DATASETS)
        _check_int("data.n_train", self.n_train, 1)
        _check_int("data.n_test", self.n_test, 1)
        _check_int("data.n_classes", self.n_classes, 2)
        _check_int("data.n_features", self.n_features, 1)
        _check_number("data.noise", self.noise, positive=True)
        _check_int("data.split_seed", self.split_seed, 0)
        if self.name == "digits" and self.n_train + self.n_test > 1797:
            _fail("data.n_train", self.n_train,
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

    def __post_init__(self) -> None:
        _check_choice("model.kind", self.kind, MODELS)
        _check_int("model.depth", self.depth, 1)
        _check_int("model.width", self.width, 1)
        _check_choice("model.activation", self.activation, ACTIVATIONS)
        _check_choice("model.norm", self.norm, NORMS)
        _check_int("model.kernel_size", self.kernel_size, 1)
        if not isinstance(self.residual, bool):
            _fail("model.residual", self.residual, "must be true or false")


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

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_number("train.lr", self.lr, positive=True)
        _check_number("train.momentum", self.momentum, lo=0.0, hi=0.999999)
        _check_number("train.weight_decay", self.weight_decay, lo=0.0)
        _check_int("train.batch_size", self.batch_size, 0)
        _check_int("train.steps", self.steps, 1)
        _check_int("train.warmup_steps", self.warmup_steps, 0)
        _check_choice("train.device", self.device, DEVICES)
        _check_choice("train.dtype", self.dtype, DTYPES)
        _check_int("train.perturb_step", self.perturb_step, 0)
        _check_number("train.perturb_scale", self.perturb_scale, lo=0.0)
        _check_int("train.perturb_seed", self.perturb_seed, 0)
        if self.perturb_step > self.steps:
            _fail("train.perturb_step", self.perturb_step,
                  f"must be <= train.steps (= {self.steps}), the number of updates")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                _fail("train.device", self.device, "no CUDA device is available here; use 'cpu'")


@dataclass(frozen=True)
class ProbeConfig:
    """Which probes run, and when.

    The default probes are the cheap per-layer ones; ``sharpness`` (λ_max of the training-loss
    Hessian by Lanczos, warm-started from the previous probe's eigenvector) and ``hessian_trace``
    (Hutch++) cost Hessian-vector products and are switched on by naming them, as are
    ``grad_overlap`` (‖V_kᵀg‖²/‖g‖² of the full-batch gradient with the top-k eigenvectors, and the
    overlap of consecutive top-k subspaces) and ``spectrum`` (the full spectrum at the first and
    last step: exact up to ``exact_max_dim`` parameters, SLQ beyond; stored as a separate table).
    ``weights`` stores the flattened weights at every probe step as the checkpoint ``trajectory``
    (``steps`` (S,), ``weights`` (S, P) float32, in ``named_parameters`` order) and the final
    weights as the checkpoint ``final`` (a state dict), for landscapes, interpolation and
    trajectory PCA; it costs S × P × 4 bytes of disk per run.
    ``grad_noise`` records per-layer gradient noise of the probe step's mini-batch (tr Σ, SNR,
    noise scale from per-sample gradient norms; see :mod:`analysis_lib.gradnoise`).
    ``schedule="every"`` probes at steps 0, every, 2*every, ... ; ``"log"`` probes at ``points``
    log-spaced steps. The final step is always probed.
    """

    names: tuple[str, ...] = DEFAULT_PROBES
    schedule: str = "every"
    every: int = 25
    points: int = 30
    curvature_samples: int = 0  # training samples the curvature probes use (the first n; 0 = all)
    sharpness_tol: float = 1e-3  # relative residual tolerance of λ_max (Lanczos)
    sharpness_max_steps: int = 60  # Hessian-vector products allowed per λ_max
    trace_matvecs: int = 30  # Hutch++ products per trace estimate
    overlap_k: int = 0  # grad_overlap: top-k Hessian eigenvectors (0 = number of classes)
    exact_max_dim: int = 3000  # spectrum: exact (dense) up to this many parameters, else SLQ

    def __post_init__(self) -> None:
        _check_probe_names(self, PROBES)
        _check_choice("probes.schedule", self.schedule, SCHEDULES)
        _check_int("probes.every", self.every, 1)
        _check_int("probes.points", self.points, 2)
        _check_int("probes.curvature_samples", self.curvature_samples, 0)
        _check_number("probes.sharpness_tol", self.sharpness_tol, positive=True)
        _check_int("probes.sharpness_max_steps", self.sharpness_max_steps, 2)
        _check_int("probes.trace_matvecs", self.trace_matvecs, 6)
        _check_int("probes.overlap_k", self.overlap_k, 0)
        _check_int("probes.exact_max_dim", self.exact_max_dim, 1)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Two equal RunConfigs give identical results.

    ``conditions`` labels the run for tables (e.g. ``{"optimizer": "adam"}``); it does not take
    part in the run's identity (see :func:`analysis_lib.runstore.run_id`).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    conditions: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        check_run_fields(self)

    def identity(self) -> dict:
        """The config as a plain dict without the ``conditions`` labels (hashed into the run id)."""
        return run_identity(self)


def _check_probe_names(probes, allowed: tuple[str, ...]) -> None:
    """Validate a probe config's ``names`` against ``allowed`` and store them as a tuple."""
    if isinstance(probes.names, str) or not isinstance(probes.names, (tuple, list)):
        _fail("probes.names", probes.names, f"must be a list drawn from {list(allowed)}")
    object.__setattr__(probes, "names", tuple(probes.names))
    for name in probes.names:
        _check_choice("probes.names", name, allowed)


def check_run_fields(config) -> None:
    """Validate the ``seed`` of a run config and store its ``conditions`` as a tuple of pairs."""
    _check_int("seed", config.seed, 0)
    if isinstance(config.conditions, Mapping):
        object.__setattr__(config, "conditions", tuple(config.conditions.items()))


def run_identity(config, kind: str | None = None) -> dict:
    """A run config as a plain dict without its ``conditions`` labels (hashed into the run id);
    ``kind`` tags run configs of other classes so their ids never collide with a RunConfig's."""
    out = dataclasses.asdict(config)
    out.pop("conditions")
    return out if kind is None else {"kind": kind, **out}


def _sections(cls: type) -> dict[str, Any]:
    """Section name -> default section of a run-config class (its dataclass-valued fields)."""
    default = cls()
    return {f.name: getattr(default, f.name) for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(getattr(default, f.name))}


def config_from_dict(spec: Mapping[str, Any], cls: type = RunConfig):
    """Build a run config from nested dicts, rejecting unknown sections and keys by name.

    Args:
        spec: ``{"section": {"parameter": value}, "seed": 0}``.
        cls: the run-config class: ``RunConfig``, or another with the same shape (sections,
            ``seed``, ``conditions``), e.g. :class:`analysis_lib.lm_config.LMRunConfig`.
            Parameters a section leaves out take that class's defaults.
    """
    sections = _sections(cls)
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key in sections:
            if not isinstance(value, Mapping):
                _fail(key, value, "must be a mapping of parameters")
            kwargs[key] = _section(key, value, sections[key])
        elif key in ("seed", "conditions"):
            kwargs[key] = value
        else:
            _fail(key, value, f"unknown section; allowed: {', '.join([*sections, 'seed'])}")
    return cls(**kwargs)


def _section(name: str, values: Mapping[str, Any], default):
    known = {f.name for f in dataclasses.fields(default)}
    for key in values:
        if key not in known:
            _fail(f"{name}.{key}", values[key], f"unknown parameter; allowed: {', '.join(sorted(known))}")
    return dataclasses.replace(default, **values)


def with_overrides(config, overrides: Mapping[str, Any]):
    """Return ``config`` (of any run-config class) with dotted-key overrides applied, e.g.
    ``{"train.lr": 0.1, "seed": 3}``."""
    sections = _sections(type(config))
    spec = {k: dataclasses.asdict(getattr(config, k)) for k in sections}
    spec["seed"] = config.seed
    spec["conditions"] = dict(config.conditions)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name and section == "seed":
            spec["seed"] = value
        elif section in sections and name:
            spec[section][name] = value
        else:
            _fail(key, value, f"override keys look like 'section.parameter' with a section in "
                              f"{', '.join(sections)}, or 'seed'")
    return config_from_dict(spec, type(config))


def check_subset(name: str, values: Any, allowed: Mapping | tuple | list) -> None:
    """Raise ConfigError unless ``values`` is a non-empty list drawn from ``allowed``."""
    options = list(allowed)
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        _fail(name, values, f"must be a non-empty list drawn from {options}")
    for value in values:
        if value not in options:
            _fail(name, values, f"{value!r} is not one of {options}")


def check_fraction(name: str, value: Any) -> None:
    """Raise ConfigError unless 0 < value < 1 (a significance level, a coverage)."""
    _check_number(name, value, lo=0.0, hi=1.0)
    if value in (0, 1):
        _fail(name, value, "must lie strictly between 0 and 1")
