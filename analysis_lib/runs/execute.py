"""Running a grid: reuse complete runs from the store, train the rest in-process or on an executor.

``run_grid`` is the one entry point for running many runs: in-process by default, or through any
object with ``submit(fn, *args) -> future`` (see :mod:`analysis_lib.runs.executors` for Dask).
The path of one config is short: ``run_grid`` computes its run id once and looks it up in the
store; a missing run becomes one task, :func:`run_task` (on a worker) -> :func:`ensure_run` ->
:func:`compute_run` -> ``config.run()`` (the config says how it trains) -> the store. A run that
raises, or whose worker dies too often, is stored as ``failed`` with the reason and the grid goes
on.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from datetime import datetime, timezone
from typing import Sequence

import pandas as pd

from ..validation import ConfigError
from .executors import as_completed, shared_store_marker
from .grid import RUN_COLUMNS, GridResult, label_runs
from .guards import check_disk, check_memory
from .progress import progress_bar
from .reader import check_names, complete_metas
from .sources import reading_runs_from
from .store import DamagedRun, RunStore, run_id

_EMPTY_METRICS = pd.DataFrame(columns=["step", "layer", "metric", "value"])
STORE_ON = ("auto", "worker", "client")


def run_grid(configs: Sequence, *, store_root: str | None = None, executor=None,
             progress: bool | None = None, force: bool = False, store_on: str = "auto",
             metrics: Sequence[str] | None = None) -> GridResult:
    """Run (or reuse) every config and collect tidy metrics.

    Complete runs are read from the store here, in the client; only the rest is sent to the
    executor, one task per distinct run, and collected as tasks finish, so an interrupted grid
    keeps every run that finished and the next call redoes only the others.

    Args:
        configs: from :func:`analysis_lib.runs.grid.expand_grid` (any run-config class).
        store_root: run store folder (default ``data/runs``).
        executor: None for in-process, or anything with ``submit(fn, *args)`` returning futures
            (``concurrent.futures`` executors, a ``dask.distributed.Client``, see
            :func:`analysis_lib.runs.executors.grid_executor`).
        progress: show a progress bar; default on unless ``$CI`` or ``ANALYSIS_LIB_PROGRESS=0``.
        force: recompute complete runs instead of reusing them.
        store_on: who writes runs into the store: ``"worker"`` (shared filesystem), ``"client"``
            (workers return metrics), or ``"auto"``: each worker writes when it can see the
            client's store, else returns the run to the client.
        metrics: read only these metric names into ``GridResult.metrics`` (default: all); the
            others stay in the store (:meth:`GridResult.read_metrics` reads any of them later).

    Returns:
        GridResult; failed runs (including runs whose worker died too often) appear in ``runs``
        with their error and contribute no metrics.
    """
    if store_on not in STORE_ON:
        raise ConfigError(f"invalid parameter store_on={store_on!r}: must be 'auto', 'worker' or 'client'")
    check_names("metrics", metrics)
    store = RunStore(store_root)
    store.clean_leftovers()
    rids = [run_id(c) for c in configs]  # the one place run ids are computed
    metas: list[dict | None] = [None] * len(configs)
    if not force:
        # A damaged run is set aside here and recomputed; of the others the grid keeps a summary.
        stored = {rid: _summary({**meta, "cached": True}) for rid, meta in complete_metas(store, rids)}
        for i, rid in enumerate(rids):
            metas[i] = stored.get(rid)
    todo: dict[str, list[int]] = {}  # run id -> grid positions; a run shared by arms runs once
    for i, meta in enumerate(metas):
        if meta is None:
            todo.setdefault(rids[i], []).append(i)
    if todo:
        store.check_writable()  # a read-only or full store stops here, before any training
        sizes = check_memory(configs[positions[0]] for positions in todo.values())  # a run that cannot fit
        check_disk(sizes, store.root)  # and a grid whose weights the store cannot hold
    with progress_bar(len(configs), "runs", initial=len(configs) - sum(map(len, todo.values())),
                      progress=progress) as bar:
        if executor is None:
            # Runs another writer holds are left for last, then waited for and read.
            deferred = {}
            for rid, positions in todo.items():
                meta = ensure_run(configs[positions[0]], store, force, rid=rid, wait=False)
                if meta is None:
                    deferred[rid] = positions
                else:
                    _place(metas, positions, meta, bar)
            for rid, positions in deferred.items():
                _place(metas, positions, ensure_run(configs[positions[0]], store, force, rid=rid), bar)
        else:
            _run_on_executor(executor, configs, todo, metas, bar, store, force, store_on)
    for _ in range(3):
        try:
            return _collect(configs, rids, metas, store, metrics)
        except DamagedRun as damage:  # pages damaged behind a good footer: set aside, train again
            store.set_aside(damage.rid, damage.problem)
            positions = [i for i, rid in enumerate(rids) if rid == damage.rid]
            _place(metas, positions, ensure_run(configs[positions[0]], store, rid=damage.rid), None)
    return _collect(configs, rids, metas, store, metrics)


_SUMMARY_KEYS = ("status", "diverged_step", "cached", "error")


def _summary(meta: dict) -> dict:
    """What the grid keeps of a run's meta (the rest stays in the store): its row of ``runs``."""
    return {**{k: meta.get(k) for k in _SUMMARY_KEYS},
            "seconds": (meta.get("timings") or {}).get("total_seconds")}


def _place(metas: list, positions: list[int], meta: dict, bar) -> None:
    meta = _summary(meta)
    for i in positions:
        metas[i] = meta
    if bar is not None:
        bar.update(len(positions))


def ensure_run(config, store: RunStore | str | None = None, force: bool = False, *, rid: str | None = None,
               wait: bool = True) -> dict | None:
    """The meta of a complete run for ``config``, training and storing it if needed.

    The run is claimed first (:meth:`RunStore.claim`), so two writers sharing the store never
    train it twice: the second waits and then reads what the first stored.

    Args:
        config: one run. store: the run store, or its folder (default ``data/runs``).
        force: train again even when a complete run is stored.
        rid: the config's run id when the caller has it.
        wait: when another writer holds the run, wait for it (default) or return None at once.

    Returns:
        The run's meta.json contents plus ``cached`` (True when reused from the store), or None
        (``wait=False`` and the run is another writer's).
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    rid = rid or run_id(config)
    if not force and (meta := store.load_complete(rid)) is not None:
        return {**meta, "cached": True}
    with store.claim(rid, blocking=wait) as held:
        if not held:
            return None
        if not force and (meta := store.load_complete(rid)) is not None:  # stored while we waited
            return {**meta, "cached": True}
        metrics, meta, tables = compute_run(config, rid, store)
        store.save(rid, metrics, meta, tables)
    return {**meta, "cached": False}


def compute_run(config, rid: str | None = None, store: RunStore | None = None) -> tuple[pd.DataFrame, dict, dict]:
    """Train one run without writing to the store; an exception becomes a ``failed`` run.

    Args:
        config, rid: the run and its id (computed when None).
        store: where a run that continues another stored run reads it
            (:mod:`analysis_lib.runs.sources`); None: no store is visible here.

    Returns:
        (labelled tidy metrics, meta, extra tables) as :meth:`RunStore.save` takes them.
    """
    from .provenance import git_commit, package_versions

    rid, start = rid or run_id(config), time.perf_counter()
    threads = int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))
    meta = {"run_id": rid, "config": config.identity(), "seed": config.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(), "git": git_commit(), "pid": os.getpid(), "threads": threads}
    try:
        with torch_threads(threads), reading_runs_from(store):
            result = config.run()
        metrics, timings, tables = result.metrics, result.timings, result.tables
        meta.update(status=result.status, diverged_step=result.diverged_step, error=None)
    except Exception:  # a failed run is data for the grid, not a crash of the study
        metrics, timings, tables = _EMPTY_METRICS, {}, {}
        meta.update(status="failed", diverged_step=None, error=traceback.format_exc())
    meta["timings"] = {**timings, "total_seconds": time.perf_counter() - start}
    return label_runs(metrics, config, rid), meta, tables


def run_task(config, rid: str, store_root: str, force: bool, marker: str | None = None):
    """What an executor runs for one config: store the run where the client's store is visible.

    Args:
        config, rid, force: the run, its id, and whether to retrain a stored run.
        store_root: the client's run store (absolute: a worker's working directory may differ).
        marker: None to always store on the worker; else a file the client created in the
            store; a worker that cannot see it (no shared filesystem) returns the metrics so
            the client stores them. ``""`` never exists: the client always stores.

    Returns:
        (meta with ``cached``, (metrics, tables) or None when the worker stored the run itself).
    """
    if marker is None or os.path.exists(marker):
        return ensure_run(config, RunStore(store_root), force, rid=rid), None
    metrics, meta, tables = compute_run(config, rid)
    return {**meta, "cached": False}, (metrics, tables)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous setting.

    Runs train with one thread by default: on small models it is faster than two on a 2-core
    machine (OpenMP threads spin while waiting) and it keeps the floating-point reduction
    order, hence the numbers, the same whether a run executes in-process or in a worker.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_on_executor(executor, configs, todo, metas, bar, store: RunStore, force, store_on) -> None:
    """Submit one task per run, store results as they complete; on interrupt cancel the rest."""
    root = str(store.root.resolve())  # absolute: a worker's working directory may differ
    marker = {"worker": contextlib.nullcontext(None), "client": contextlib.nullcontext("")}.get(
        store_on) or shared_store_marker(store.root)
    with marker as marker_path:
        futures = {executor.submit(run_task, configs[positions[0]], rid, root, force, marker_path): rid
                   for rid, positions in todo.items()}
        try:
            for fut in as_completed(futures):
                rid = futures[fut]
                _place(metas, todo[rid], _task_outcome(fut, configs[todo[rid][0]], rid, store), bar)
        except BaseException:  # Ctrl-C or a client error: stop queued runs; finished ones are stored
            for fut in futures:
                fut.cancel()
            raise


def _task_outcome(fut, config, rid: str, store: RunStore) -> dict:
    """The meta of a finished task, storing it here when the worker returned it."""
    try:
        meta, payload = fut.result()
    except Exception as exc:  # KilledWorker after Dask's retries, BrokenProcessPool, lost cluster
        return _record_lost_run(config, rid, store, exc)
    if payload is not None:
        metrics, tables = payload
        meta = {**meta, "stored_by": "client"}
        with store.claim(rid):
            store.save(rid, metrics, {k: v for k, v in meta.items() if k != "cached"}, tables)
    return meta


def _record_lost_run(config, rid: str, store: RunStore, exc: Exception) -> dict:
    """Store a run whose task never returned as ``failed`` with the reason (retried next call).

    A worker can die after writing its run; that run is complete and is kept, not overwritten.
    """
    with store.claim(rid):
        if (done := store.load_complete(rid)) is not None:
            return {**done, "cached": False}
        meta = {"run_id": rid, "config": config.identity(), "seed": config.seed,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "status": "failed", "diverged_step": None, "timings": {}, "stored_by": "client",
                "error": f"the run's task did not complete ({type(exc).__name__}: {exc})"}
        store.save(rid, label_runs(_EMPTY_METRICS, config, rid), meta)
    return {**meta, "cached": False}


def _collect(configs, rids: list[str], metas: list[dict], store: RunStore,
             metrics: Sequence[str] | None = None) -> GridResult:
    rows = [{"run_id": rid, **dict(cfg.conditions), "seed": cfg.seed, "status": meta["status"],
             "diverged_step": meta.get("diverged_step"), "seconds": meta.get("seconds"),
             "cached": bool(meta.get("cached")), "error": meta.get("error")}
            for cfg, rid, meta in zip(configs, rids, metas)]
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_COLUMNS)
    result = GridResult(pd.DataFrame(), runs, dict(zip(rids, configs)), store)
    # Labels come from this grid, so a run cached by another study is labelled correctly.
    result.metrics = result.read_metrics(metrics) if rows else pd.DataFrame()
    return result
