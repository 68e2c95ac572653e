"""The run config of your own model, data and loss: :class:`CustomRunConfig`.

Written like every run config, as nested dicts (YAML, papermill parameters)::

    config_from_dict({"model": {"name": "student", "width": 64},
                      "data": {"name": "teacher", "n_train": 256},
                      "loss": {"name": "mse"},
                      "train": {"optimizer": "sgd", "lr": 0.05, "batch_size": 0, "steps": 500},
                      "probes": {"names": ["eval", "grad_norm", "sharpness"]}, "seed": 0},
                     CustomRunConfig)

``model``, ``data`` and ``loss`` each name a registered component
(:mod:`analysis_lib.custom.registry`); the other keys of a section are the keyword arguments of
its factory, checked against the factory's signature, so ``expand_grid`` overrides such as
``{"model.width": [32, 64]}`` work as for the built-in families. ``train`` and ``probes`` are the
sections of the MLP family (:class:`~analysis_lib.training.config.TrainConfig`,
:class:`~analysis_lib.training.config.ProbeConfig`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from ..training.config import ProbeConfig, RunConfigBase, TrainConfig
from ..validation import fail
from .registry import Component, lookup


@dataclass(frozen=True)
class ComponentConfig:
    """One section naming a registered component: its kind, name and parameter values.

    ``params`` holds every keyword parameter of the factory (defaults filled in), as sorted
    pairs; ``component`` is the registered callable (not part of the run id: its ``version``
    is).
    """

    kind: str
    name: str = ""
    params: tuple[tuple[str, Any], ...] = ()
    component: Component | None = field(default=None, compare=False, repr=False)

    def with_values(self, section: str, values: Mapping[str, Any]) -> "ComponentConfig":
        """This section with ``values`` (``name`` and parameters) applied, checked against the registry."""
        name = values.get("name", self.name)
        if not name:
            fail(f"{section}.name", name, f"must name a registered {self.kind}")
        component = lookup(self.kind, name, f"{section}.name")
        given = {k: v for k, v in values.items() if k != "name"}
        for key, value in given.items():
            if key not in component.defaults:
                allowed = ", ".join(["name", *component.defaults]) or "name"
                fail(f"{section}.{key}", value, f"unknown parameter of {self.kind} {name!r}; allowed: {allowed}")
            try:
                json.dumps(value)
            except TypeError:
                fail(f"{section}.{key}", value, "must be a plain value (number, string, bool, list, None)")
        params = {**component.defaults, **given}
        missing = [k for k, v in params.items() if v is inspect.Parameter.empty]
        if missing:
            fail(f"{section}.{missing[0]}", None, f"required by {self.kind} {name!r}; give it a value")
        return ComponentConfig(self.kind, name, tuple(sorted(params.items())), component)

    def spec(self) -> dict:
        """``{"name": ..., **params}``: the section as nested-dict parameters."""
        return {"name": self.name, **dict(self.params)}

    def identity(self) -> dict:
        """What the run id hashes: the name, the registered version and every parameter value."""
        return {"name": self.name, "version": self.component.version if self.component else None,
                "params": dict(self.params)}

    def kwargs(self) -> dict:
        """The factory's keyword arguments."""
        return dict(self.params)


@dataclass(frozen=True)
class CustomRunConfig(RunConfigBase):
    """A run of a registered model on a registered dataset under a registered loss.

    Build it with ``config_from_dict(spec, CustomRunConfig)`` (see the module docstring).
    """

    KIND: ClassVar[str] = "custom"

    model: ComponentConfig = field(default_factory=lambda: ComponentConfig("model"))
    data: ComponentConfig = field(default_factory=lambda: ComponentConfig("data"))
    loss: ComponentConfig = field(default_factory=lambda: ComponentConfig("loss", "mse"))
    train: TrainConfig = field(default_factory=TrainConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    conditions: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for section in ("model", "data", "loss"):
            value = getattr(self, section)
            if not isinstance(value, ComponentConfig) or value.kind != section:
                fail(section, value, f"must be a {section} section; build the config with "
                                     "config_from_dict(spec, CustomRunConfig)")
            if value.component is None:
                resolved = value.with_values(section, {"name": value.name, **dict(value.params)})
                object.__setattr__(self, section, resolved)

    def run(self):
        """Train this run (:func:`analysis_lib.custom.training.train_custom`)."""
        from .training import train_custom

        return train_custom(self)

    def build_model(self, state_dict: Mapping | None = None):
        """The run's model in its dtype: built by the factory under ``seed``, or holding ``state_dict``."""
        from .training import custom_model

        return custom_model(self, state_dict)

    def splits(self) -> dict:
        """The registered dataset's splits, on CPU in the run's dtype."""
        from .training import custom_splits

        return custom_splits(self)

    def loss_unit(self) -> str | None:
        """The registered loss's unit (``LossSpec.unit``: nats, squared error), None when unknown."""
        from ..training.problem import loss_spec

        return loss_spec(self.loss.component.fn).unit

    def problem(self):
        """The run's loss, splits and metrics (:class:`~analysis_lib.training.problem.Problem`)."""
        from ..training.problem import Problem

        return Problem(self.loss.component.fn, self.splits(), dict(self.loss.component.metrics))
