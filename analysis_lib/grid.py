"""Run grids: expand conditions × seeds into run configs and run them through an executor.

``run_grid`` is the one entry point for running many runs. It runs in-process by default; any
object with ``submit(fn, *args) -> future`` (``concurrent.futures`` executors, a
``dask.distributed.Client``) can be passed as ``executor``. Each run goes through
:func:`ensure_run`, which reuses a complete run from the store or trains and stores it; a run
that raises is stored as ``failed`` with its traceback and the grid goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import pandas as pd

from .config import ConfigError, RunConfig, config_from_dict, with_overrides
from .runstore import COMPLETE, RunStore, run_id
from .training import train

# Short column names for common grid keys; others use their last dotted component.
_SHORT_NAMES = {"model.kind": "model", "data.name": "dataset", "train.optimizer": "optimizer"}

RUN_COLUMNS = ["run_id", "seed", "status", "diverged_step", "seconds", "cached", "error"]


def condition_name(key: str) -> str:
    """Column name for a dotted config key: ``"train.lr"`` -> ``"lr"``."""
    return _SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def expand_grid(base: RunConfig | Mapping[str, Any],
                conditions: Mapping[str, Sequence] | Sequence[Mapping[str, Sequence]],
                seeds: Sequence[int]) -> list[RunConfig]:
    """All combinations of condition values × seeds, as labelled RunConfigs.

    Args:
        base: the shared config (a RunConfig or nested dict as in YAML).
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
    base = base if isinstance(base, RunConfig) else config_from_dict(base)
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
                labels.update({condition_name(k): _lookup(cfg, k) for k in keys})
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


def _lookup(config: RunConfig, key: str) -> Any:
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name) if name else getattr(config, section)


def ensure_run(config: RunConfig, store_root: str | None = None, force: bool = False) -> dict:
    """Return the meta of a complete run for ``config``, training and storing it if needed."""
    from .provenance import git_commit, package_versions

    store, rid = RunStore(store_root), run_id(config)
    if not force and store.is_complete(rid):
        return {**store.load_meta(rid), "cached": True}
    start = time.perf_counter()
    meta = {"run_id": rid, "config": config.identity(), "seed": config.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(), "git": git_commit(), "pid": os.getpid(),
            "threads": int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))}
    try:
        with torch_threads(int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))):
            result = train(config)
        metrics, timings = result.metrics, result.timings
        meta.update(status=result.status, diverged_step=result.diverged_step, error=None)
    except Exception:  # a failed run is data for the grid, not a crash of the study
        metrics, timings = pd.DataFrame(columns=["step", "layer", "metric", "value"]), {}
        meta.update(status="failed", diverged_step=None, error=traceback.format_exc())
    meta["timings"] = {**timings, "total_seconds": time.perf_counter() - start}
    store.save(rid, _label(metrics, config, rid), meta)
    return {**meta, "cached": False}


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


def _worker_init() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def local_executor(workers: int = 1):
    """``None`` (in-process) for one worker, else a process pool of ``workers`` one-thread processes.

    Processes are started with ``spawn`` so no OpenMP or torch state is inherited from the parent.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid parameter workers={workers!r}: must be an integer >= 1")
    if workers == 1:
        yield None
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        yield pool


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


def run_grid(configs: Sequence[RunConfig], *, store_root: str | None = None, executor=None,
             progress: bool | None = None, force: bool = False) -> GridResult:
    """Run (or reuse) every config and collect tidy metrics.

    Args:
        configs: from :func:`expand_grid`.
        store_root: run store folder (default ``data/runs``).
        executor: None for in-process, or anything with ``submit(fn, *args)`` returning futures.
        progress: show a progress bar; default on unless ``$CI`` or ``ANALYSIS_LIB_PROGRESS=0``.
        force: recompute complete runs instead of reusing them.

    Returns:
        GridResult; failed runs appear in ``runs`` with their error and contribute no metrics.
    """
    tqdm = _progress_bar_class()
    if progress is None:
        progress = not os.environ.get("CI") and os.environ.get("ANALYSIS_LIB_PROGRESS", "1") != "0"
    store = RunStore(store_root)
    metas: list[dict | None] = [None] * len(configs)
    if not force:  # complete runs are read here; only the rest goes to the executor
        for i, cfg in enumerate(configs):
            meta = store.load_meta(run_id(cfg))
            if meta is not None and meta.get("status") in COMPLETE:
                metas[i] = {**meta, "cached": True}
    todo = [i for i, meta in enumerate(metas) if meta is None]
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc="runs", disable=not progress)
    if executor is None:
        for i in todo:
            metas[i] = ensure_run(configs[i], store_root, force)
            bar.update()
    else:
        futures = {i: executor.submit(ensure_run, configs[i], store_root, force) for i in todo}
        for i, fut in futures.items():
            metas[i] = fut.result()
            bar.update()
    bar.close()
    return _collect(configs, metas, store)


def _progress_bar_class():
    """Notebook widget bars where ipywidgets exists (JupyterLab), plain text bars otherwise."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm


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
