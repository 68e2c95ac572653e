"""Runs that start from another stored run: reading the source from the run store.

A run can continue from a checkpoint of a run already in the store (e.g. fine-tuning that starts
from a source run's pre-trained weights instead of pre-training again: ``finetune.from_run`` of
:class:`~analysis_lib.lm.config.LMRunConfig`). The run names the source by its run id, which is a
hash of the source's config, so the new run's own id pins exactly which weights it starts from.

While a run trains, :func:`analysis_lib.runs.execute.compute_run` installs a reader of the store
the run will be written to (:func:`reading_runs_from`, through the hook of
:mod:`analysis_lib.training.sources`). A worker that cannot see the client's store
(``store_on="client"``, no shared filesystem) has none, and such a run fails with an error saying
so, recorded like any failed run.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Sequence

from ..training.sources import reading_sources
from .store import RunStore


@contextlib.contextmanager
def reading_runs_from(store: RunStore | None) -> Iterator[None]:
    """Within the block, source runs are read from ``store`` (None: no store is visible here)."""
    with reading_sources(_reader(store)):
        yield


def _reader(store: RunStore | None):
    def read(rid: str, name: str, *, parameter: str, identity: dict, same: Sequence[str]) -> dict:
        if store is None:
            raise ValueError(f"{parameter}={rid!r}: this worker cannot see the client's run store (store_on='client' "
                             "or no shared filesystem), so it cannot read the source run; use a store the workers "
                             "share")
        return read_source(store, rid, name, parameter=parameter, identity=identity, same=same)
    return read


def read_source(store: RunStore, rid: str, name: str, *, parameter: str, identity: dict,
                same: Sequence[str]) -> dict:
    """The checkpoint ``name`` of the complete stored run ``rid``, checked to be the one asked for.

    Args:
        store: the run store. rid: the source's run id. name: the checkpoint (e.g. ``"base"``).
        parameter: the config field that named the source, for error messages.
        identity: the reading run's ``config.identity()``.
        same: keys of the identity that must equal the source's (e.g. the pre-training fields),
            so that the run cannot silently start from weights trained otherwise than it says.

    Raises:
        ValueError naming ``parameter``: the source is not a complete run in ``store``, did not
        finish, was trained with other ``same`` fields, or has no such checkpoint.
    """
    meta = store.load_complete(rid)
    if meta is None:
        raise ValueError(f"{parameter}={rid!r}: no complete run with this id in the run store; "
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
