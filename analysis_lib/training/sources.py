"""Runs that start from a checkpoint of another stored run: the hook through which they read it.

A run config may name a source run by its run id (e.g. ``finetune.from_run`` of
:class:`~analysis_lib.lm.config.LMRunConfig`: fine-tuning from the source's pre-trained weights).
Training code asks :func:`source_checkpoint` for the checkpoint; the run machinery installs the
reader while it trains a run (:func:`analysis_lib.runs.sources.reading_runs_from`, which reads the
store the run is written to), so the training code never depends on the run store itself.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator, Sequence

Reader = Callable[..., dict]  # reader(rid, name, *, parameter, identity, same) -> state dict
_READER: contextvars.ContextVar = contextvars.ContextVar("analysis_lib_source_reader", default=None)


@contextlib.contextmanager
def reading_sources(reader: Reader) -> Iterator[None]:
    """Within the block, :func:`source_checkpoint` reads through ``reader``."""
    token = _READER.set(reader)
    try:
        yield
    finally:
        _READER.reset(token)


def source_checkpoint(rid: str, name: str, *, parameter: str, identity: dict, same: Sequence[str]) -> dict:
    """The checkpoint ``name`` of the stored run ``rid``, checked by the installed reader.

    Args:
        rid: the source's run id. name: the checkpoint (e.g. ``"base"``).
        parameter: the config field that named the source, for error messages.
        identity: the reading run's ``config.identity()``.
        same: keys of the identity that must equal the source's (e.g. the pre-training fields).

    Raises:
        ValueError naming ``parameter`` when no reader is installed (the run was not started by
        the run machinery) or the reader refuses the source.
    """
    reader = _READER.get()
    if reader is None:
        raise ValueError(f"{parameter}={rid!r}: no run store to read the source run from; train this run "
                         "through analysis_lib.runs (run_grid, or ensure_run(config, store)), which reads "
                         "sources from the store the run is written to")
    return reader(rid, name, parameter=parameter, identity=identity, same=same)
