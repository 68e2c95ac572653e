"""Guards before training: a run that cannot fit in this machine's memory is refused by name.

A run config may say how big it is (``config.size_estimate()`` -> ``{"parameter": dotted key,
"n_params": int, "bytes": int}``, an upper-bound estimate of its peak memory); the MLP / CNN
family does. :func:`check_memory` compares each run still to train with the memory limit: the
machine's physical memory times :data:`MEMORY_FRACTION`, or ``ANALYSIS_LIB_MEMORY_GB`` when set
(set it higher on purpose to try anyway). Runs train one at a time per process, so the limit
applies per run.
"""

from __future__ import annotations

import os
from typing import Iterable

from ..validation import ConfigError

MEMORY_FRACTION = 0.8  # of physical memory one run may plan to use
MEMORY_VARIABLE = "ANALYSIS_LIB_MEMORY_GB"


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


def check_memory(configs: Iterable) -> None:
    """Raise ConfigError for the first run whose estimate exceeds :func:`memory_limit`, before training."""
    limit = memory_limit()
    for config in configs:
        if not hasattr(config, "size_estimate"):
            continue
        size = config.size_estimate()
        if size["bytes"] > limit:
            raise ConfigError(
                f"invalid parameter {size['parameter']}={size['value']!r}: the run has about "
                f"{size['n_params']:.3g} parameters and needs about {size['bytes'] / 2**30:.3g} GB, more than the "
                f"{limit / 2**30:.3g} GB one run may use here (set {MEMORY_VARIABLE} to raise the limit on purpose)")
