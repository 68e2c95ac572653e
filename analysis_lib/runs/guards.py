"""Guards before training: a run that cannot fit in memory, or a grid that cannot fit on disk, is refused.

Every run still to train gets a size estimate (:func:`size_estimate`): the config's own
``size_estimate()`` when its class has one (the MLP / CNN family: parameters, optimizer state,
probe copies and activations, ``{"parameter": dotted key, "value", "n_params", "bytes"}``), else
its model built on PyTorch's ``meta`` device, which allocates nothing, and counted: weights,
gradients, optimizer state and probe copies (activations unknown, so a lower bound of the peak).
A model that cannot be built that way gets no estimate and no guard.

:func:`check_memory` compares each estimate with the memory one run may use: the machine's
physical memory times :data:`MEMORY_FRACTION`, or ``ANALYSIS_LIB_MEMORY_GB`` when set (set it
higher on purpose to try anyway); runs train one at a time per process, so the limit applies per
run. :func:`check_disk` compares the grid's total, the weights every run stores as checkpoints,
with the free space of the run store.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Iterable

from ..validation import ConfigError

MEMORY_FRACTION = 0.8  # of physical memory one run may plan to use
MEMORY_VARIABLE = "ANALYSIS_LIB_MEMORY_GB"
CHECKPOINT_COPIES = 2  # weight copies a run stores (final, or base and tuned): the disk estimate
PROBE_COPIES = 2  # initial and previous weights kept by the probes


def memory_limit() -> float:
    """Bytes one run may use: ``$ANALYSIS_LIB_MEMORY_GB``, else a fraction of physical memory."""
    if os.environ.get(MEMORY_VARIABLE):
        try:
            return float(os.environ[MEMORY_VARIABLE]) * 2**30
        except ValueError:
            value = os.environ[MEMORY_VARIABLE]
            raise ConfigError(f"invalid {MEMORY_VARIABLE}={value!r}: must be a number of GB") from None
    try:
        return MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no guard
        return float("inf")


def size_estimate(config) -> dict | None:
    """The run's size: ``config.size_estimate()``, else its model counted on the meta device; None if unknown.

    Returns:
        ``{"parameter", "value", "n_params", "bytes", "itemsize"}``; ``parameter`` names what to
        change (``model.width``, or ``model`` for a model section as a whole).
    """
    if hasattr(config, "size_estimate"):
        size = config.size_estimate()
        itemsize = 8 if getattr(getattr(config, "train", None), "dtype", "float32") == "float64" else 4
        return {"itemsize": itemsize, **size}
    return _meta_estimate(config)


def _meta_estimate(config) -> dict | None:
    import torch

    if not hasattr(config, "build_model"):
        return None
    try:
        with torch.device("meta"):
            params = list(config.build_model().parameters())
    except Exception:  # a factory that needs real data or memory: no estimate, no guard
        return None
    n_params = sum(p.numel() for p in params)
    itemsize = max((p.element_size() for p in params), default=4)
    train = getattr(config, "train", None)
    states = 2 if getattr(train, "optimizer", "") in ("adam", "adamw") else int(getattr(train, "momentum", 0) > 0)
    section = getattr(config, "model", None)
    if hasattr(section, "spec"):
        value = section.spec()
    elif dataclasses.is_dataclass(section):
        value = dataclasses.asdict(section)
    else:
        value = section
    return {"parameter": "model", "value": value, "n_params": n_params, "itemsize": itemsize,
            "bytes": itemsize * n_params * (2 + PROBE_COPIES + states)}


def check_memory(configs: Iterable) -> list[dict]:
    """Raise ConfigError for the first run whose estimate exceeds :func:`memory_limit`, before training.

    Returns:
        The estimates of the runs that have one (for :func:`check_disk`).
    """
    limit = memory_limit()
    sizes = []
    for config in configs:
        size = size_estimate(config)
        if size is None:
            continue
        if size["bytes"] > limit:
            raise ConfigError(
                f"invalid parameter {size['parameter']}={size['value']!r}: the run has about "
                f"{size['n_params']:.3g} parameters and needs about {size['bytes'] / 2**30:.3g} GB, more than the "
                f"{limit / 2**30:.3g} GB one run may use here (set {MEMORY_VARIABLE} to raise the limit on purpose)")
        sizes.append(size)
    return sizes


def check_disk(sizes: Iterable[dict], root: Path) -> None:
    """Raise ConfigError when the grid's checkpoints would not fit in the free space of the store at ``root``."""
    sizes = list(sizes)
    needed = sum(CHECKPOINT_COPIES * s["n_params"] * s["itemsize"] for s in sizes)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise ConfigError(
            f"invalid grid: its {len(sizes)} runs to train would store about {needed / 2**30:.3g} GB of weights, "
            f"more than the {free / 2**30:.3g} GB free in the run store {root}; point ANALYSIS_LIB_DATA "
            "(or --store) at a larger disk, or train fewer or smaller runs")
