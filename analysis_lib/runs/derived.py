"""Analyses of stored runs as cached tasks: computed once, through the runs' executor, read back tidy.

An :class:`Analysis` is a named, versioned function of stored runs (a loss surface of one run,
the interpolation between the two runs of a pair, a spectrum of a group)::

    fn(runs: GridResult, run_ids: list[str], **params) -> pd.DataFrame

where ``runs`` holds just the task's runs (their configs, rows of the run table, metrics and the
store, so :meth:`GridResult.model`, checkpoints and tables work as usual). :func:`derive` runs it once
per task (one run, a pair or a group), keyed in the run store by the task's run ids, its
parameters and the analysis's version:

    ``<store>/<first run>/derived/<name>-<sha256 of name, version, run ids, params>.parquet``

so the same call reads the stored tables, a changed parameter or version computes new ones, and
a run that is trained again (a new folder) takes its analyses with it. Missing tasks go to the
same executor as the runs (None: in-process; a Dask client of a LocalCluster, an existing
cluster, SLURM/PBS), are written atomically as they complete (a temporary name, then a rename:
a killed analysis leaves no table, only a temporary file that is removed once stale) and the
next call computes only what is still missing.

**Labels.** Tasks see their runs' configs without the grid's condition labels, so a stored table
is the same whichever study computed it; when it has a ``run_id`` column, the reading grid's
labels (``arm``, learning rate, ...) are inserted after it, as :class:`GridResult` labels
metrics. Workers read the runs from the store, so a cluster needs the store on a shared
filesystem; a worker that cannot see it hands the task back and the client computes it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from ..validation import ConfigError
from .executors import as_completed, shared_store_marker
from .grid import GridResult
from .progress import progress_bar
from .store import STORE_VERSION, RunStore, write_table_atomic


@dataclass(frozen=True)
class Analysis:
    """A named, versioned analysis of stored runs.

    Attributes:
        name: an identifier, part of the stored file's name.
        function: ``"package.module:function"`` (resolved where the task runs, so tasks pickle
            small) or the callable itself; called as ``fn(runs, run_ids, **params)``.
        version: bump it when a change of the code alters what the analysis computes, so stored
            tables of the old version are not reused.
        parts: for an analysis that returns several tables, their names: the function returns
            ``{part: DataFrame}`` and :func:`derive` returns ``{part: table}``. Each part is its
            own file beside the task's; the task's file, written last, lists them, so a task
            killed between parts counts as not done.
    """

    name: str
    function: str | Callable
    version: int = 1
    parts: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"invalid analysis name {self.name!r}: must be an identifier")

    def resolve(self) -> Callable:
        """The function to call."""
        if callable(self.function):
            return self.function
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)


def derived_path(store: RunStore, analysis: Analysis, run_ids: Sequence[str], params: Mapping) -> Path:
    """Where the table of ``analysis`` over ``run_ids`` with ``params`` is kept."""
    key = {"analysis": analysis.name, "version": analysis.version, "runs": list(run_ids), "params": dict(params),
           "store_version": STORE_VERSION}
    return store.derived_path(run_ids[0], analysis.name, key)


def derive(analysis: Analysis, result: GridResult, groups: Sequence[Sequence[str]] | None = None, *,
           params: Mapping | None = None, executor=None, progress: bool | None = None,
           force: bool = False, labels: bool = True) -> pd.DataFrame:
    """The table of ``analysis`` over each task's runs, from the store or computed once.

    Args:
        analysis: what to compute.
        result: the grid the runs belong to (its configs, run table and store).
        groups: one entry per task: the run ids it reads (one run, a pair, a group). Default:
            one task per complete run of the grid, in grid order.
        params: keyword arguments of the analysis, JSON-serialisable; part of the key.
        executor: None (in-process) or anything with ``submit`` (a Dask client, see
            :func:`analysis_lib.runs.executors.grid_executor`).
        progress: progress bar over tasks; default as for :func:`run_grid`.
        force: compute again even when stored.
        labels: insert the reading grid's condition labels after a ``run_id`` column.

    Returns:
        The tasks' tables concatenated in task order (``{part: table}`` for an analysis with
        parts); with ``labels`` and a ``run_id`` column, each run's condition labels (of its
        config in ``result.configs``) follow ``run_id``.

    Raises:
        ConfigError: a group names a run that is not a complete run of ``result``, or ``params``
            is not JSON-serialisable.
    """
    params = dict(params or {})
    complete = result.runs.loc[result.runs["status"] != "failed", "run_id"]
    if groups is None:
        groups = [[rid] for rid in dict.fromkeys(complete)]
    groups = [list(g) for g in groups]
    _check(analysis, groups, params, set(complete))
    store = result.store
    paths = [derived_path(store, analysis, g, params) for g in groups]
    todo = {i: g for i, (g, path) in enumerate(zip(groups, paths)) if force or not path.exists()}
    with progress_bar(len(groups), f"{analysis.name} tasks", initial=len(groups) - len(todo), progress=progress) as bar:
        _compute(analysis, result, todo, paths, params, executor, bar)
    if analysis.parts:
        return {part: _read(result, [part_path(p, part) for p in paths], labels) for part in analysis.parts}
    return _read(result, paths, labels)


def part_path(path: Path, part: str) -> Path:
    """The file of one part of a several-table analysis whose task file is ``path``."""
    return path.with_name(f"{path.stem}.{part}.parquet")


def _read(result: GridResult, paths: list[Path], labels: bool) -> pd.DataFrame:
    frames = [pd.read_parquet(path) for path in paths]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return _labelled(table, result) if labels else table


def _store(analysis: Analysis, path: Path, output) -> None:
    """Write a task's output: its parts first, then the task's own file (which marks it done)."""
    if analysis.parts:
        for part in analysis.parts:
            write_table_atomic(part_path(path, part), output[part])
        output = pd.DataFrame({"part": list(analysis.parts)})
    write_table_atomic(path, output)


def _check(analysis: Analysis, groups: list[list[str]], params: dict, complete: set) -> None:
    for group in groups:
        if not group or any(not isinstance(r, str) for r in group):
            raise ConfigError(f"invalid parameter groups: {group!r} must be a non-empty list of run ids")
        if unknown := [r for r in group if r not in complete]:
            raise ConfigError(f"invalid parameter groups: {unknown} are not complete runs of the grid "
                              f"(analysis {analysis.name!r} reads stored runs)")
    try:
        json.dumps(params, sort_keys=True)
    except TypeError as err:
        raise ConfigError(f"invalid parameter params of analysis {analysis.name!r}: must be JSON-serialisable "
                          f"({err})") from None


def _compute(analysis, result, todo: dict, paths: list[Path], params: dict, executor, bar) -> None:
    if not todo:
        return
    store = result.store
    if executor is None:
        for i, group in todo.items():
            _store(analysis, paths[i], compute_task(analysis, _task_runs(result, group), group, params))
            bar.update(1)
        return
    with shared_store_marker(store.root) as marker:
        futures = {executor.submit(derive_task, analysis, _task_runs(result, group), group, params, marker): i
                   for i, group in todo.items()}
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                table = fut.result()
                if table is None:  # the worker cannot see the store: compute it here
                    table = compute_task(analysis, _task_runs(result, todo[i]), todo[i], params)
                _store(analysis, paths[i], table)
                bar.update(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _task_runs(result: GridResult, group: list[str]) -> GridResult:
    """The grid restricted to ``group``, configs stripped of condition labels."""
    configs = {rid: dataclasses.replace(result.configs[rid], conditions=()) for rid in dict.fromkeys(group)}
    rows = result.runs.drop_duplicates("run_id").set_index("run_id").loc[list(configs)].reset_index()
    keep = [c for c in rows.columns if c not in _labels(result)]
    runs = GridResult(pd.DataFrame(), rows[keep], configs, RunStore(result.store.root.resolve()))
    runs.metrics = runs.read_metrics()  # the task's runs' metrics, unlabelled (run_id, seed, ...)
    return runs


def compute_task(analysis: Analysis, runs: GridResult, group: list[str], params: dict):
    """Run one task of ``analysis`` here: its table, or ``{part: table}`` for an analysis with parts."""
    output = analysis.resolve()(runs, list(group), **params)
    if analysis.parts:
        if not isinstance(output, dict) or set(output) != set(analysis.parts) or not all(
                isinstance(t, pd.DataFrame) for t in output.values()):
            raise TypeError(f"analysis {analysis.name!r} must return a dict of DataFrames with keys "
                            f"{list(analysis.parts)}, not {type(output).__name__}")
    elif not isinstance(output, pd.DataFrame):
        raise TypeError(f"analysis {analysis.name!r} returned {type(output).__name__}, not a DataFrame")
    return output


def derive_task(analysis: Analysis, runs: GridResult, group: list[str], params: dict, marker: str):
    """What an executor runs for one task: its table, or None when this worker cannot see the store."""
    if not os.path.exists(marker):
        return None
    return compute_task(analysis, runs, group, params)


def _labels(result: GridResult) -> list[str]:
    """The grid's condition label columns (between ``run_id`` and ``seed`` in its run table)."""
    columns = list(result.runs.columns)
    return columns[1: columns.index("seed")] if "seed" in columns else []


def _labelled(table: pd.DataFrame, result: GridResult) -> pd.DataFrame:
    """``table`` with each run's condition labels after ``run_id`` (those of its config in the grid)."""
    labels = [c for c in _labels(result) if c not in table.columns]
    if "run_id" not in table.columns or not labels:
        return table
    by_run = pd.DataFrame([{"run_id": rid, **dict(c.conditions)} for rid, c in result.configs.items()])
    out = table.join(by_run.set_index("run_id")[labels], on="run_id")
    at = list(table.columns).index("run_id") + 1
    return out[[*table.columns[:at], *labels, *table.columns[at:]]]
