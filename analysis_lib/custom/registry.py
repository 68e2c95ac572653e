"""Registered models, datasets and losses: what a :class:`~analysis_lib.custom.config.CustomRunConfig` names.

A researcher's code lives in a module of their own (e.g. ``notebooks/your_model.py``) and is
registered under a name and a version string::

    register_model("student", make_student, version="1")      # make_student(**params) -> nn.Module
    register_dataset("teacher", make_teacher_data, version="1")  # (**params) -> {"train": (x, y), ...}
    register_loss("huber", my_huber, version="1")             # loss_fn(outputs, targets) -> batch mean

The parameters a run config may set are the factory's keyword arguments (read from its
signature), so a misspelt one is refused before any training. A run's id hashes the registered
name, the version and every parameter value (defaults included): bump the version when the code
behind a name changes, and cached runs of the old code are not reused.

Built-in losses: ``"cross_entropy"`` (``F.cross_entropy``, with accuracy), ``"token_cross_entropy"``
(:class:`~analysis_lib.training.losses.CrossEntropy`: class axis last, ``ignore_index``, with
accuracy) and ``"mse"`` (:class:`~analysis_lib.training.losses.MSE`).

Registered callables travel with the run config to worker processes (spawned processes, Dask
workers on this machine or a cluster): a component pickles its callable with ``cloudpickle``, by
value when it comes from ``__main__`` or from a module outside the installed packages, so workers
need neither the registry nor the researcher's module on their path.
"""

from __future__ import annotations

import inspect
import json
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..validation import fail

KINDS = ("model", "data", "loss")
_REGISTRY: dict[str, dict[str, "Component"]] = {kind: {} for kind in KINDS}


@dataclass(frozen=True, eq=False)
class Component:
    """A registered callable: its kind, name, version, parameters (with defaults) and metrics.

    ``fn`` is the factory (model, data) or the loss itself; ``defaults`` maps every keyword
    parameter of a factory to its default (``inspect.Parameter.empty`` when required); a loss
    has none. ``metrics`` are further ``{name: fn(outputs, targets) -> batch mean}`` of a loss.
    """

    kind: str
    name: str
    fn: Callable
    version: str
    defaults: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __reduce__(self):
        return _load, (_dumps(self.kind, self.name, self.fn, self.version, self.defaults, self.metrics),)


def _by_value(fn: Any) -> list:
    """The modules of ``fn`` (and its metrics) that must travel by value: user files, not installed code."""
    name = getattr(fn, "__module__", None) or type(fn).__module__
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or name == "__main__" or name.split(".")[0] in ("analysis_lib", "torch") or file is None:
        return []
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib")}
    path = Path(file).resolve()
    return [] if any(p in path.parents for p in installed) else [module]


def _dumps(*fields) -> bytes:
    import cloudpickle

    modules = [m for f in (fields[2], *fields[5].values()) for m in _by_value(f)]
    registered = set(cloudpickle.list_registry_pickle_by_value())
    added = [m for m in dict.fromkeys(modules) if m.__name__ not in registered]
    for m in added:
        cloudpickle.register_pickle_by_value(m)
    try:
        return cloudpickle.dumps(fields)
    finally:
        for m in added:
            cloudpickle.unregister_pickle_by_value(m)


def _load(blob: bytes) -> Component:
    import cloudpickle

    return Component(*cloudpickle.loads(blob))


def _check_name(kind: str, name: Any, version: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        fail(f"{kind} name", name, "must be a non-empty string")
    if not isinstance(version, str) or not version.strip():
        fail(f"{kind} version", version, "must be a non-empty string you change whenever the code behind "
                                          f"{name!r} changes (it is part of every run id)")


def _defaults(kind: str, name: str, fn: Callable) -> dict:
    if not callable(fn):
        fail(f"{kind} {name!r}", fn, "must be callable")
    params = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            fail(f"{kind} {name!r}", fn, f"its parameters must be named; *{p.name} / **{p.name} cannot be checked")
        if p.default is not p.empty:
            try:
                json.dumps(p.default)
            except TypeError:
                fail(f"{kind} {name!r}", p.default, f"the default of {p.name} must be a plain value "
                                                    "(number, string, bool, list, None): it is part of the run id")
        params[p.name] = p.default
    return params


def register_model(name: str, factory: Callable[..., Any], *, version: str) -> Component:
    """Register ``factory(**params) -> nn.Module`` under ``name`` (re-registering replaces it)."""
    _check_name("model", name, version)
    component = Component("model", name, factory, version, _defaults("model", name, factory))
    _REGISTRY["model"][name] = component
    return component


def register_dataset(name: str, factory: Callable[..., Any], *, version: str) -> Component:
    """Register ``factory(**params) -> {"train": (inputs, targets), "test": (inputs, targets)}``.

    ``inputs`` is a tensor, a tuple of tensors or a dict of tensors; ``targets`` a tensor or a
    tuple of them; the first axis of every tensor is the sample axis. ``"test"`` is optional;
    any other named split is evaluated too. The factory must be deterministic in its parameters.
    """
    _check_name("data", name, version)
    component = Component("data", name, factory, version, _defaults("data", name, factory))
    _REGISTRY["data"][name] = component
    return component


def register_loss(name: str, loss_fn: Callable, *, version: str, metrics: dict | None = None) -> Component:
    """Register ``loss_fn(outputs, targets) -> mean loss of the batch`` and optional metrics."""
    _check_name("loss", name, version)
    if not callable(loss_fn):
        fail(f"loss {name!r}", loss_fn, "must be callable(outputs, targets)")
    for metric, fn in (metrics or {}).items():
        if not callable(fn) or metric == "loss":
            fail(f"loss {name!r} metric", metric, "metrics map names other than 'loss' to callables")
    component = Component("loss", name, loss_fn, version, {}, dict(metrics or {}))
    _REGISTRY["loss"][name] = component
    return component


def registered(kind: str) -> list[str]:
    """Registered names of one kind (``"model"``, ``"data"`` or ``"loss"``), sorted."""
    return sorted(_REGISTRY[kind])


def registered_table(names: dict[str, list[str]] | None = None):
    """A table of registered components: ``kind, name, version, defined_in, parameters``.

    Args:
        names: ``{kind: [name, ...]}`` to list (default: every registered component).
    """
    import pandas as pd

    rows = []
    for kind in KINDS:
        for name in names.get(kind, []) if names is not None else registered(kind):
            c = lookup(kind, name, f"{kind} name")
            where = getattr(c.fn, "__module__", None) or type(c.fn).__module__
            params = ", ".join(f"{k}={v!r}" if v is not inspect.Parameter.empty else k for k, v in c.defaults.items())
            rows.append({"kind": kind, "name": name, "version": c.version,
                         "defined_in": f"{where}.{getattr(c.fn, '__qualname__', type(c.fn).__name__)}",
                         "parameters": params})
    return pd.DataFrame(rows, columns=["kind", "name", "version", "defined_in", "parameters"])


def lookup(kind: str, name: Any, where: str) -> Component:
    """The component registered under ``name``; ``where`` names the parameter in the error."""
    if name not in _REGISTRY[kind]:
        known = registered(kind)
        hint = (f"registered: {', '.join(map(repr, known))}" if known
                else f"none is registered; call register_{'dataset' if kind == 'data' else kind}(...) first")
        fail(where, name, f"not a registered {kind}; {hint}")
    return _REGISTRY[kind][name]


def _builtin_losses() -> None:
    import torch.nn.functional as F

    from ..training.losses import MSE, CrossEntropy

    register_loss("cross_entropy", F.cross_entropy, version="1")
    register_loss("token_cross_entropy", CrossEntropy(), version="1")
    register_loss("mse", MSE(), version="1")


_builtin_losses()
