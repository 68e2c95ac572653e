"""Run grids: expand conditions × seeds into run configs and run them through an executor.

``run_grid`` is the one entry point for running many runs: in-process by default, or through any
object with ``submit(fn, *args) -> future`` (see :mod:`analysis_lib.executors` for Dask). Each run
goes through :func:`ensure_run`, which reuses a complete run or trains and stores it; a run that
raises, or whose worker dies too often, is stored as ``failed`` with the reason and the grid goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import pandas as pd

from .config import ConfigError, RunConfig, config_from_dict, with_overrides
from .executors import as_completed, local_executor, shared_store_marker  # noqa: F401 (re-export)
from .progress import progress_bar
from .runstore import COMPLETE, RunStore, run_id
from .lm import LMRunConfig, train_lm
from .training import train

# Short column names for common grid keys; others use their last dotted component.
_SHORT_NAMES = {"model.kind": "model", "data.name": "dataset", "train.optimizer": "optimizer"}

_EMPTY_METRICS = pd.DataFrame(columns=["step", "layer", "metric", "value"])

RUN_COLUMNS = ["run_id", "seed", "status", "diverged_step", "seconds", "cached", "error"]


def condition_name(key: str) -> str:
    """Column name for a dotted config key: ``"train.lr"`` -> ``"lr"``."""
    return _SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def expand_grid(base: RunConfig | LMRunConfig | Mapping[str, Any],
                conditions: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]],
                seeds: Sequence[int]) -> list[RunConfig]:
    """All combinations of condition values × seeds, as labelled RunConfigs.

    Args:
        base: the shared config (a RunConfig, an LMRunConfig, or a RunConfig's nested dict as in YAML).
        conditions: ``{"train.optimizer": ["sgd", "adam"], ...}``; or a list of such dicts whose
            products are concatenated (like scikit-learn's ParameterGrid), for arms that vary
            different things; or a dict of named arms ``{"main": {...}, "sweep": {...}}``, which
            adds an ``arm`` column. Every run is labelled with the values of every key in any arm.
            A config that occurs in two arms is trained once and reported under both.
        seeds: replicate seeds; the same seed gives the same init and data order in every arm,
            so conditions can be compared paired by seed.

    Returns:
        Configs ordered by arm, then condition combination, then seed.
    """
    base = config_from_dict(base) if isinstance(base, Mapping) else base
    named = isinstance(conditions, Mapping) and bool(conditions) and all(
        isinstance(v, Mapping) for v in conditions.values())
    if named:
        names, arms = list(conditions), list(conditions.values())
    else:
        arms = [conditions] if isinstance(conditions, Mapping) else list(conditions)
        names = [None] * len(arms)
    _validate_grid(arms, seeds)
    keys = list(dict.fromkeys(k for arm in arms for k in arm))
    _check_names(keys)
    configs = []
    for name, arm in zip(names, arms):
        for values in itertools.product(*arm.values()):
            for seed in seeds:
                cfg = with_overrides(base, {**dict(zip(arm, values)), "seed": seed})
                labels = {"arm": name} if named else {}
                labels.update({condition_name(k): _label_value(_lookup(cfg, k)) for k in keys})
                configs.append(dataclasses.replace(cfg, conditions=tuple(labels.items())))
    return configs


def _validate_grid(arms: list, seeds: Sequence[int]) -> None:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise ConfigError(f"invalid parameter seeds={seeds!r}: must be a non-empty list of "
                          "integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"invalid parameter seeds={seeds!r}: seeds must be distinct")
    for arm in arms:
        if not isinstance(arm, Mapping):
            raise ConfigError(f"invalid parameter conditions={arm!r}: each arm must be a mapping "
                              "of 'section.parameter' to a list of values")
        for key, values in arm.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"invalid parameter conditions[{key!r}]={values!r}: must be a "
                                  "non-empty list of values")


def _check_names(keys: list[str]) -> None:
    names = [condition_name(k) for k in keys]
    reserved = ("run_id", "arm", "seed", "step", "layer", "metric", "value")
    clash = {n for n in names if names.count(n) > 1 or n in reserved}
    if clash:
        raise ConfigError(f"invalid parameter conditions={keys!r}: keys map to clashing column "
                          f"names {sorted(clash)}")


def _label_value(value: Any) -> Any:
    """Table-friendly label: sequences (e.g. probe names) become ``"a+b"`` strings."""
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _lookup(config: RunConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name) if name else getattr(config, section)


def ensure_run(config: RunConfig, store_root: str | None = None, force: bool = False) -> dict:
    """Return the meta of a complete run for ``config``, training and storing it if needed.

    Args:
        config: one run. store_root: run store folder (default ``data/runs``).
        force: train again even when a complete run is stored.

    Returns:
        The run's meta.json contents plus ``cached`` (True when reused from the store).
    """
    store, rid = RunStore(store_root), run_id(config)
    if not force and store.is_complete(rid):
        return {**store.load_meta(rid), "cached": True}
    metrics, meta, tables = compute_run(config)
    store.save(rid, metrics, meta, tables)
    return {**meta, "cached": False}


def compute_run(config: RunConfig) -> tuple[pd.DataFrame, dict, dict]:
    """Train one run without touching the store; an exception becomes a ``failed`` run.

    Returns:
        (labelled tidy metrics, meta, extra tables) as :meth:`RunStore.save` takes them.
    """
    from .provenance import git_commit, package_versions

    rid, start = run_id(config), time.perf_counter()
    meta = {"run_id": rid, "config": config.identity(), "seed": config.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(), "git": git_commit(), "pid": os.getpid(),
            "threads": int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))}
    try:
        with torch_threads(int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))):
            result = train_lm(config) if isinstance(config, LMRunConfig) else train(config)
        metrics, timings, tables = result.metrics, result.timings, result.tables
        meta.update(status=result.status, diverged_step=result.diverged_step, error=None)
    except Exception:  # a failed run is data for the grid, not a crash of the study
        metrics, timings, tables = _EMPTY_METRICS, {}, {}
        meta.update(status="failed", diverged_step=None, error=traceback.format_exc())
    meta["timings"] = {**timings, "total_seconds": time.perf_counter() - start}
    return _label(metrics, config, rid), meta, tables


def run_task(config: RunConfig, store_root: str, force: bool, marker: str | None = None):
    """What an executor runs for one config: store the run where the client's store is visible.

    Args:
        config, store_root, force: as for :func:`ensure_run` (``store_root`` absolute).
        marker: None to always store on the worker; else a file the client created in the
            store; a worker that cannot see it (no shared filesystem) returns the metrics so
            the client stores them. ``""`` never exists: the client always stores.

    Returns:
        (meta with ``cached``, (metrics, tables) or None when the worker stored the run itself).
    """
    if marker is None or os.path.exists(marker):
        return ensure_run(config, store_root, force), None
    metrics, meta, tables = compute_run(config)
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


def _label(metrics: pd.DataFrame, config: RunConfig, rid: str) -> pd.DataFrame:
    """Prefix the tidy columns with run_id, condition labels and seed."""
    front = {"run_id": rid, **dict(config.conditions), "seed": config.seed}
    out = metrics.copy()
    for i, (name, value) in enumerate(front.items()):
        out.insert(i, name, value)
    return out


@dataclass
class GridResult:
    """``metrics``: tidy long table of every complete run; ``runs``: one row per run."""

    metrics: pd.DataFrame
    runs: pd.DataFrame

    def status_counts(self) -> dict[str, int]:
        counts = self.runs["status"].value_counts()
        return {s: int(counts.get(s, 0)) for s in ("finished", "diverged", "failed")}

    def table(self, name: str, store_root: str | None = None) -> pd.DataFrame:
        """An extra per-run table (e.g. ``"spectrum"``) of every run that has one, labelled like
        ``metrics`` (``run_id, <conditions>, seed`` first)."""
        store, frames = RunStore(store_root), []
        id_cols = list(self.runs.columns[: list(self.runs.columns).index("seed") + 1])
        for row in self.runs[self.runs["status"] != "failed"][id_cols].itertuples(index=False):
            table = store.load_table(row.run_id, name)
            if table is not None:
                frames.append(table.assign(**dict(zip(id_cols, row)))[[*id_cols, *table.columns]])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=id_cols)

    def checkpoints(self, name: str, store_root: str | None = None) -> dict[str, dict]:
        """The checkpoint ``name`` (e.g. ``"final"``) of every run that stored one, by run id."""
        store, out = RunStore(store_root), {}
        for rid in self.runs.loc[self.runs["status"] != "failed", "run_id"].unique():
            checkpoint = store.load_checkpoint(rid, name)
            if checkpoint is not None:
                out[rid] = checkpoint
        return out


def run_grid(configs: Sequence[RunConfig], *, store_root: str | None = None, executor=None,
             progress: bool | None = None, force: bool = False, store_on: str = "auto") -> GridResult:
    """Run (or reuse) every config and collect tidy metrics.

    Complete runs are read from the store here, in the client; only the rest is sent to the
    executor, one task per distinct run, and collected as tasks finish, so an interrupted grid
    keeps every run that finished and the next call redoes only the others.

    Args:
        configs: from :func:`expand_grid`.
        store_root: run store folder (default ``data/runs``).
        executor: None for in-process, or anything with ``submit(fn, *args)`` returning futures
            (``concurrent.futures`` executors, a ``dask.distributed.Client``, see
            :func:`analysis_lib.executors.grid_executor`).
        progress: show a progress bar; default on unless ``$CI`` or ``ANALYSIS_LIB_PROGRESS=0``.
        force: recompute complete runs instead of reusing them.
        store_on: who writes runs into the store: ``"worker"`` (shared filesystem), ``"client"``
            (workers return metrics), or ``"auto"``: each worker writes when it can see the
            client's store, else returns the run to the client.

    Returns:
        GridResult; failed runs (including runs whose worker died too often) appear in ``runs``
        with their error and contribute no metrics.
    """
    if store_on not in ("auto", "worker", "client"):
        raise ConfigError(f"invalid parameter store_on={store_on!r}: must be 'auto', 'worker' or 'client'")
    store = RunStore(store_root)
    root = str(store.root.resolve())  # absolute: a worker's working directory may differ
    metas: list[dict | None] = [None] * len(configs)
    if not force:
        for i, cfg in enumerate(configs):
            meta = store.load_meta(run_id(cfg))
            if meta is not None and meta.get("status") in COMPLETE:
                metas[i] = {**meta, "cached": True}
    todo: dict[str, list[int]] = {}  # run id -> grid positions; a run shared by arms runs once
    for i, meta in enumerate(metas):
        if meta is None:
            todo.setdefault(run_id(configs[i]), []).append(i)
    with progress_bar(len(configs), "runs", initial=len(configs) - sum(map(len, todo.values())),
                      progress=progress) as bar:
        if executor is None:
            for positions in todo.values():
                meta = ensure_run(configs[positions[0]], root, force)
                _place(metas, positions, meta, bar)
        else:
            _run_on_executor(executor, configs, todo, metas, bar, store, force, store_on)
    return _collect(configs, metas, store)


def _place(metas: list, positions: list[int], meta: dict, bar) -> None:
    for i in positions:
        metas[i] = meta
    bar.update(len(positions))


def _run_on_executor(executor, configs, todo, metas, bar, store: RunStore, force, store_on) -> None:
    """Submit one task per run, store results as they complete; on interrupt cancel the rest."""
    root = str(store.root.resolve())
    marker = {"worker": contextlib.nullcontext(None), "client": contextlib.nullcontext("")}.get(
        store_on) or shared_store_marker(store.root)
    with marker as marker_path:
        futures = {executor.submit(run_task, configs[positions[0]], root, force, marker_path): rid
                   for rid, positions in todo.items()}
        try:
            for fut in as_completed(futures):
                positions = todo[futures[fut]]
                _place(metas, positions, _task_outcome(fut, configs[positions[0]], store), bar)
        except BaseException:  # Ctrl-C or a client error: stop queued runs; finished ones are stored
            for fut in futures:
                fut.cancel()
            raise


def _task_outcome(fut, config: RunConfig, store: RunStore) -> dict:
    """The meta of a finished task, storing it here when the worker returned it."""
    try:
        meta, payload = fut.result()
    except Exception as exc:  # KilledWorker after Dask's retries, BrokenProcessPool, lost cluster
        return _record_lost_run(config, store, exc)
    if payload is not None:
        metrics, tables = payload
        meta = {**meta, "stored_by": "client"}
        store.save(meta["run_id"], metrics, {k: v for k, v in meta.items() if k != "cached"}, tables)
    return meta


def _record_lost_run(config: RunConfig, store: RunStore, exc: Exception) -> dict:
    """Store a run whose task never returned as ``failed`` with the reason (retried next call).

    A worker can die after writing its run; that run is complete and is kept, not overwritten.
    """
    rid = run_id(config)
    if store.is_complete(rid):
        return {**store.load_meta(rid), "cached": False}
    meta = {"run_id": rid, "config": config.identity(), "seed": config.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": "failed", "diverged_step": None, "timings": {}, "stored_by": "client",
            "error": f"the run's task did not complete ({type(exc).__name__}: {exc})"}
    store.save(rid, _label(_EMPTY_METRICS, config, rid), meta)
    return {**meta, "cached": False}


def _collect(configs, metas, store: RunStore) -> GridResult:
    rows, frames = [], []
    for cfg, meta in zip(configs, metas):
        labels = dict(cfg.conditions)
        rows.append({"run_id": meta["run_id"], **labels, "seed": cfg.seed, "status": meta["status"],
                     "diverged_step": meta.get("diverged_step"),
                     "seconds": meta.get("timings", {}).get("total_seconds"),
                     "cached": meta.get("cached", False), "error": meta.get("error")})
        if meta["status"] != "failed":
            # Labels come from this grid, so a run cached by another study is labelled correctly.
            frames.append(_label(store.load_metrics(meta["run_id"])[["step", "layer", "metric", "value"]],
                                 cfg, meta["run_id"]))
    runs = pd.DataFrame(rows)
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return GridResult(metrics, runs)
