"""Validation of user input: one error type and the checks every config and study parameter uses.

A bad parameter stops a study before any training with one :class:`ConfigError` whose message
names the parameter, the value given and what is allowed::

    invalid parameter train.lr=-0.1: must be a finite number > 0

Config dataclasses call these checks in ``__post_init__``; study modules (``analysis_lib.studies``)
call them on notebook parameters. :func:`read_yaml` turns a missing or malformed user file into
the same kind of error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence


class ConfigError(ValueError):
    """A parameter value that is not allowed; the message names parameter, value and what is allowed."""


def fail(name: str, value: Any, allowed: str) -> NoReturn:
    """Raise the ConfigError ``invalid parameter <name>=<value>: <allowed>``."""
    raise ConfigError(f"invalid parameter {name}={value!r}: {allowed}")


def check_choice(name: str, value: Any, choices: tuple | list) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        fail(name, value, f"must be one of {', '.join(repr(c) for c in choices)}")


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ConfigError unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(name, value, f"must be an integer >= {minimum}")


def check_number(name: str, value: Any, *, positive: bool = False, lo: float = 0.0,
                 hi: float = math.inf) -> None:
    """Raise ConfigError unless ``value`` is a finite number > ``lo`` (``positive``) or in [lo, hi]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > lo if positive else lo <= value <= hi
    if not ok:
        bound = f"> {lo}" if positive else f"in [{lo}, {hi}]"
        fail(name, value, f"must be a finite number {bound}")


def check_bool(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        fail(name, value, "must be true or false")


def check_subset(name: str, values: Any, allowed: Mapping | tuple | list) -> None:
    """Raise ConfigError unless ``values`` is a non-empty list drawn from ``allowed``."""
    options = list(allowed)
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        fail(name, values, f"must be a non-empty list drawn from {options}")
    for value in values:
        if value not in options:
            fail(name, values, f"{value!r} is not one of {options}")


def check_includes(name: str, present: Any, required: tuple | list) -> None:
    """Raise ConfigError unless ``present`` (e.g. a study's arm names) includes every ``required`` value.

    The message shows what was given and what is missing, e.g. ``invalid parameter
    arms=['gd', 'sgd']: must include 'gd', 'sgd', 'warmup' (missing 'warmup')``.
    """
    given = list(present)
    missing = [r for r in required if r not in given]
    if missing:
        fail(name, given, f"must include {', '.join(map(repr, required))} (missing {', '.join(map(repr, missing))})")


def check_fraction(name: str, value: Any) -> None:
    """Raise ConfigError unless 0 < value < 1 (a significance level, a coverage)."""
    check_number(name, value, lo=0.0, hi=1.0)
    if value in (0, 1):
        fail(name, value, "must lie strictly between 0 and 1")


def check_seeds(name: str, seeds: Any) -> None:
    """Raise ConfigError unless ``seeds`` is a non-empty list of distinct integers >= 0."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        fail(name, seeds, "must be a non-empty list of integers >= 0")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        fail(name, seeds, "must be a non-empty list of integers >= 0")
    if len(set(seeds)) != len(seeds):
        fail(name, seeds, "seeds must be distinct")


def read_yaml(path: str | Path, context: str) -> Any:
    """The YAML document in ``path``.

    A missing file or bad YAML is a ConfigError starting with ``context`` (e.g.
    ``"invalid sweep file 'x.yaml'"``).
    """
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{context}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{context}: not valid YAML ({exc})") from None
