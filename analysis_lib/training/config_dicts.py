"""Run configs as plain data: built from nested dicts, changed by dotted keys, and what a run id hashes.

These work on any run-config class of the same shape (dataclass sections, ``seed``,
``conditions``): :class:`analysis_lib.training.config.RunConfig`,
:class:`analysis_lib.lm.config.LMRunConfig`, :class:`analysis_lib.custom.config.CustomRunConfig`.
They are re-exported by :mod:`analysis_lib.training.config`, where they are usually imported from.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..validation import check_int, fail


def check_run_fields(config) -> None:
    """Validate the ``seed`` of a run config and store its ``conditions`` as a tuple of pairs."""
    check_int("seed", config.seed, 0)
    if isinstance(config.conditions, Mapping):
        object.__setattr__(config, "conditions", tuple(config.conditions.items()))


def run_identity(config) -> dict:
    """A run config as a plain dict without its ``conditions`` labels: what its run id hashes.

    A section's ``LATE_FIELDS`` (options added after run ids were first computed) are left out
    while they hold their default, so a run stored before such an option existed keeps its id:
    at its default the option changes nothing the run computes. A run-config class with a
    ``KIND`` is tagged with it, so its ids never collide with another class's.
    """
    out = {}
    for f in dataclasses.fields(config):
        if f.name == "conditions":
            continue
        value = getattr(config, f.name)
        out[f.name] = _section_identity(value) if dataclasses.is_dataclass(value) else value
    return out if config.KIND is None else {"kind": config.KIND, **out}


def _section_identity(section) -> dict:
    if hasattr(section, "identity"):  # a section that says what of it a run id hashes
        return section.identity()
    out = dataclasses.asdict(section)
    defaults = {f.name: f.default for f in dataclasses.fields(section)}
    for name in getattr(section, "LATE_FIELDS", ()):
        if getattr(section, name) == defaults[name]:
            out.pop(name)
    return out


def _sections(cls: type) -> dict[str, Any]:
    """Section name -> default section of a run-config class (its dataclass-valued fields)."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out[f.name] = default
    return out


def config_from_dict(spec: Mapping[str, Any], cls: type | None = None):
    """Build a run config from nested dicts, rejecting unknown sections and keys by name.

    Args:
        spec: ``{"section": {"parameter": value}, "seed": 0}``.
        cls: the run-config class: ``RunConfig`` (the default), or another with the same shape (sections,
            ``seed``, ``conditions``), e.g. :class:`analysis_lib.lm.config.LMRunConfig`.
            Parameters a section leaves out take that class's defaults.

    Returns:
        The validated config.
    """
    if cls is None:
        from .config import RunConfig

        cls = RunConfig
    sections = _sections(cls)
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key in sections:
            if not isinstance(value, Mapping):
                fail(key, value, "must be a mapping of parameters")
            kwargs[key] = _section(key, value, sections[key])
        elif key in ("seed", "conditions"):
            kwargs[key] = value
        else:
            fail(key, value, f"unknown section; allowed: {', '.join([*sections, 'seed'])}")
    return cls(**kwargs)


def _section(name: str, values: Mapping[str, Any], default):
    if hasattr(default, "with_values"):  # a section that checks its own keys (a registered component)
        return default.with_values(name, values)
    known = {f.name for f in dataclasses.fields(default)}
    for key in values:
        if key not in known:
            fail(f"{name}.{key}", values[key], f"unknown parameter; allowed: {', '.join(sorted(known))}")
    return dataclasses.replace(default, **values)


def with_overrides(config, overrides: Mapping[str, Any]):
    """Return ``config`` (of any run-config class) with dotted-key overrides applied.

    E.g. ``{"train.lr": 0.1, "seed": 3}``; the result is validated like a new config. A section
    naming a registered component (``model.name`` of :class:`~analysis_lib.custom.config.CustomRunConfig`)
    starts from the new component's defaults when its name is overridden.
    """
    sections = _sections(type(config))
    spec = {k: _section_spec(getattr(config, k)) for k in sections}
    spec["seed"] = config.seed
    spec["conditions"] = dict(config.conditions)
    renamed = {key.partition(".")[0] for key in overrides if key.endswith(".name")}
    for section in renamed & {k for k in sections if hasattr(getattr(config, k), "spec")}:
        spec[section] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name and section == "seed":
            spec["seed"] = value
        elif section in sections and name:
            spec[section][name] = value
        else:
            fail(key, value, f"override keys look like 'section.parameter' with a section in "
                             f"{', '.join(sections)}, or 'seed'")
    return config_from_dict(spec, type(config))


def _section_spec(section) -> dict:
    return section.spec() if hasattr(section, "spec") else dataclasses.asdict(section)


def lookup(config, key: str) -> Any:
    """The value of a dotted config key, e.g. ``lookup(config, "train.lr")``."""
    section, _, name = key.partition(".")
    try:
        value = getattr(config, section)
        if name and hasattr(value, "spec"):
            return value.spec()[name]
        return getattr(value, name) if name else value
    except (AttributeError, KeyError):
        fail("key", key, f"not a parameter of {type(config).__name__}")
