"""When things happen in a training phase: probe steps, the learning rate of each update, the data order.

Step convention: "step t" is the state after t optimiser updates; update t is the one that
produces θ(t). Within a phase, steps are counted from 1 (its first update).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch


def probe_steps(config, steps: int) -> list[int]:
    """Steps 0..``steps`` at which probes run under a probe config; always includes 0 and ``steps``.

    Args:
        config: a :class:`~analysis_lib.training.config.ProbeConfig` (``schedule``, ``every``,
            ``points``).
        steps: updates in the phase.
    """
    if steps == 0:
        return [0]
    if config.schedule == "every":
        chosen = set(range(0, steps + 1, config.every))
    else:
        chosen = set(np.unique(np.round(np.geomspace(1, steps, config.points - 1))).astype(int))
        chosen.add(0)
    chosen.add(steps)
    return sorted(int(s) for s in chosen)


def warmup_cosine(lr: float, warmup_steps: int, steps: int,
                  final_fraction: float = 1.0) -> Callable[[int], float]:
    """The learning rate of update ``step`` (1-based) of a phase of ``steps`` updates.

    Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` updates,
    then half a cosine from ``lr`` down to ``final_fraction × lr`` at the last update;
    ``final_fraction = 1`` keeps ``lr`` constant after the warm-up (exactly: ``lr × 1.0``).
    """
    def lr_at(step: int) -> float:
        if warmup_steps and step <= warmup_steps:
            return lr * step / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        f = final_fraction
        return lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))
    return lr_at


def batches(n: int, batch_size: int, seed: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Endless index batches: a fresh seeded permutation per epoch; full batch when batch_size is 0.

    The ragged last batch of an epoch is dropped, so every update sees ``batch_size`` samples.
    """
    if batch_size == 0 or batch_size >= n:
        full = torch.arange(n, device=device)
        while True:
            yield full
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch
            yield order[start: start + batch_size]


def order_seed(seed: int, phase: int = 0) -> int:
    """Seed of a phase's data-order stream, derived from the run seed but distinct from the init stream."""
    return 1_000_003 * seed + (17, 29)[phase]
