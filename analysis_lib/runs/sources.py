"""Runs that start from another stored run: which store a run reads, and the stored run it reads.

A run can continue from a checkpoint of a run already in the store (e.g. fine-tuning that starts
from a source run's pre-trained weights instead of pre-training again: ``finetune.from_run`` of
:class:`~analysis_lib.lm.config.LMRunConfig`). The run names the source by its run id, which is a
hash of the source's config, so the new run's own id pins exactly which weights it starts from.

While a run trains, :func:`analysis_lib.runs.execute.compute_run` makes the store it will be
written to the one it reads sources from (:func:`reading_runs_from`); a run trained outside the
grid machinery (``config.run()`` by hand) reads the default store (``data/runs``). A worker that
cannot see the client's store (``store_on="client"``, no shared filesystem) has none, and such a
run fails with an error saying so, recorded like any failed run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from typing import Iterator, Sequence

from .store import RunStore

_DEFAULT = object()  # no store set: read the default one
_SOURCE_STORE: contextvars.ContextVar = contextvars.ContextVar("analysis_lib_source_store", default=_DEFAULT)


@contextlib.contextmanager
def reading_runs_from(store: RunStore | None) -> Iterator[None]:
    """Within the block, source runs are read from ``store`` (None: no store is visible here)."""
    token = _SOURCE_STORE.set(store)
    try:
        yield
    finally:
        _SOURCE_STORE.reset(token)


def source_checkpoint(rid: str, name: str, *, parameter: str, identity: dict,
                      same: Sequence[str]) -> dict:
    """The checkpoint ``name`` of the complete stored run ``rid``, checked to be the one asked for.

    Args:
        rid: the source's run id. name: the checkpoint (e.g. ``"base"``).
        parameter: the config field that named the source, for error messages.
        identity: the reading run's ``config.identity()``.
        same: keys of the identity that must equal the source's (e.g. the pre-training fields),
            so that the run cannot silently start from weights trained otherwise than it says.

    Raises:
        ValueError naming ``parameter``: no store is visible, the source is not a complete run
        there, it was trained with other ``same`` fields, or it has no such checkpoint.
    """
    store = _SOURCE_STORE.get()
    if store is None:
        raise ValueError(f"{parameter}={rid!r}: this worker cannot see the client's run store (store_on='client' or "
                         "no shared filesystem), so it cannot read the source run; use a store the workers share")
    store = RunStore() if store is _DEFAULT else store
    meta = store.load_complete(rid)
    if meta is None:
        raise ValueError(f"{parameter}={rid!r}: no complete run with this id in the run store {store.root}; "
                         "train the source run first (e.g. run_grid of its config)")
    if meta.get("status") != "finished":
        raise ValueError(f"{parameter}={rid!r}: the source run {meta.get('status')} (only a finished run can be "
                         "continued)")
    source, mine = meta.get("config") or {}, json.loads(json.dumps(identity))
    differ = [key for key in same if source.get(key) != mine.get(key)]
    if differ:
        raise ValueError(f"{parameter}={rid!r}: the source run was trained with other {', '.join(differ)} than "
                         f"this run's (they must be equal: {', '.join(same)})")
    state = store.load_checkpoint(rid, name)
    if state is None:
        raise ValueError(f"{parameter}={rid!r}: the source run has no {name!r} checkpoint")
    return state
