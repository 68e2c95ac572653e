"""Probes: quantities measured on the training schedule, as objects the training loop calls.

The split follows cockpit's: a *quantity* (a pure function in a subject package, e.g.
:func:`analysis_lib.weights.movement.layer_rotations`), a *schedule* (which steps are probed:
:func:`analysis_lib.training.schedules.probe_steps`) and a *probe*, the object that computes the
quantity from the training state at the moments it needs and records tidy rows. The loop
(:func:`analysis_lib.training.loop.train_phases`) knows no probe by name: it calls every probe's
hooks, in ascending :attr:`Probe.order`, at these moments of a probed update t:

- :meth:`Probe.capture`: a context manager around the forward and backward pass (hooks);
- :meth:`Probe.after_backward`: the gradient of update t is in ``.grad``, the weights are θ(t−1);
- :meth:`Probe.after_update`: the weights are θ(t); also called once at step 0, before training.

Adding a probe is one class in the ``probes.py`` module of its subject package, decorated with
:func:`register` (every ``analysis_lib.<subject>.probes`` module is imported on first use of the
registry), plus its test. A probe declares what it ``needs`` from the training objective
(:class:`~analysis_lib.training.objective.Objective` capabilities); a run whose objective lacks
it is refused before training. Probes never change training: they read tensors, evaluate in
``eval()`` mode, use their own seeded generators and restore any state they touch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

_REGISTRY: dict[str, type["Probe"]] = {}
_DISCOVERED = False


class Probe:
    """Base class of every probe: override the hooks it needs; the others do nothing.

    Attributes:
        name: the name in ``probes.names`` that switches it on.
        order: probes run in ascending order at each moment; it fixes the row order of a
            run's metrics table, so keep it when refactoring.
        needs: objective capabilities required (e.g. ``{"curvature"}``).
    """

    name: ClassVar[str]
    order: ClassVar[int]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config) -> None:
        self.config = config  # the run's ProbeConfig

    def start(self, ctx: "ProbeContext") -> None:
        """Once, before step 0 is observed (after any step-0 intervention)."""

    def capture(self, ctx: "ProbeContext") -> contextlib.AbstractContextManager | None:
        """A context manager entered around the forward and backward pass of a probed update."""
        return None

    def after_backward(self, ctx: "ProbeContext") -> None:
        """After the backward pass of a probed update: ``.grad`` holds its gradient."""

    def after_update(self, ctx: "ProbeContext") -> None:
        """After a probed update (and at step 0): the parameters are θ(step)."""

    def tables(self) -> dict:
        """Extra tables (DataFrames) and checkpoints (dicts of tensors) stored with the run."""
        return {}


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two probes are registered as {cls.name!r}: {_REGISTRY[cls.name]} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every ``analysis_lib.<subject>.probes`` module once, so their probes register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import analysis_lib

    for info in pkgutil.iter_modules(analysis_lib.__path__):
        if info.ispkg and importlib.util.find_spec(f"analysis_lib.{info.name}.probes") is not None:
            importlib.import_module(f"analysis_lib.{info.name}.probes")
    _DISCOVERED = True


def probe_names() -> tuple[str, ...]:
    """Every registered probe name, in the order probes run."""
    _discover()
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n)))


def build_probes(config, capabilities: frozenset[str] | set[str]) -> list[Probe]:
    """The probes ``config.names`` switches on, in run order.

    Raises:
        ConfigError: a probe needs something the run's objective does not provide.
    """
    from ..validation import fail

    explain = {"sample_mean": "a loss that is the mean of each sample's own loss (squared error, or a "
                              "cross-entropy counting the same number of targets in every sample)",
               "curvature": "curvature data", "evaluate": "an evaluation"}
    _discover()
    probes = [_REGISTRY[n](config) for n in probe_names() if n in config.names]
    for probe in probes:
        missing = set(probe.needs) - set(capabilities)
        if missing:
            fail("probes.names", list(config.names),
                 f"probe {probe.name!r} needs {', '.join(explain.get(m, m) for m in sorted(missing))}, "
                 "which this run's objective does not provide")
    return probes


@dataclass
class ProbeContext:
    """What a probe sees of the training state; the loop updates it before each hook.

    Attributes:
        model, params: the model and ``dict(model.named_parameters())``.
        objective: the run's objective (loss, evaluation, curvature data).
        record: ``record(step, layer, metric, value)`` appends one tidy row.
        step: global step (updates so far); phase: the current phase's name.
        phase_end: the probed update is the last of its phase; last_step: of the whole run.
        cache: values shared by the probes of one probed step (e.g. the Hessian operator);
            emptied before every probed step.
    """

    model: nn.Module
    params: dict[str, torch.Tensor]
    objective: Any
    record: Callable[[int, str, str, float], None]
    record_layers: Callable[[int, str, list], None]
    step: int = 0
    phase: str = ""
    phase_end: bool = False
    last_step: bool = False
    cache: dict = field(default_factory=dict)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per probed step, shared by every probe that asks for ``key``."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]
