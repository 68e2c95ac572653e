"""Running grids: reuse stored runs, train the rest in-process or on an executor.

Tidy labelled metrics, a run shared by two arms trained once and relabelled, an executor giving the in-process
results and getting each missing run once, run ids computed once per config (in run_grid, never again further
down), store_on validated, and the task an executor runs (run_task) storing on the worker or returning the run
to the client.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

import analysis_lib.runs.execute as execute
from analysis_lib.runs.execute import compute_run, ensure_run, run_grid, run_task
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.validation import ConfigError


def test_metrics_are_tidy_and_labelled(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"train.optimizer": ["sgd", "adam"]}, [0, 1])
    result = run_grid(configs, store_root=store_root, progress=False)
    assert list(result.metrics.columns) == ["run_id", "optimizer", "seed", "step", "layer", "metric", "value"]
    assert result.metrics.groupby("optimizer")["run_id"].nunique().to_dict() == {"adam": 2, "sgd": 2}
    assert set(result.metrics["layer"]) == {"model", "fc1", "fc2", "out"}
    assert len(result.runs) == 4 and (result.runs["status"] == "finished").all()


def test_shared_run_is_trained_once_and_relabelled(tiny_config, store_root):
    first = run_grid(expand_grid(tiny_config, {"train.lr": [0.1]}, [0]), store_root=store_root, progress=False)
    second = run_grid(expand_grid(tiny_config, {"a": {"train.lr": [0.1]}, "b": {"train.lr": [0.1]}}, [0]),
                      store_root=store_root, progress=False)
    assert second.runs["cached"].all()
    assert second.runs["arm"].tolist() == ["a", "b"]
    values = second.metrics[second.metrics["arm"] == "a"]["value"].to_numpy()
    assert (values == first.metrics["value"].to_numpy()).all()


def test_executor_gives_the_same_results_as_in_process(tiny_config, tmp_path):
    configs = expand_grid(tiny_config, {"train.lr": [0.05, 0.1]}, [0, 1])
    local = run_grid(configs, store_root=str(tmp_path / "a"), progress=False)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = run_grid(configs, store_root=str(tmp_path / "b"), executor=pool, progress=False)
    pd.testing.assert_frame_equal(local.metrics, pooled.metrics, check_exact=True)


class CountingExecutor:
    """A thread pool that records what it was asked to run."""

    def __init__(self, pool):
        self.pool, self.submitted = pool, []

    def submit(self, fn, config, *args):
        self.submitted.append(config)
        return self.pool.submit(fn, config, *args)


def test_executor_gets_each_missing_run_once(tiny_config, store_root):
    arms = {"a": {"train.lr": [0.1, 0.05]}, "b": {"train.lr": [0.1]}}  # lr 0.1 is in both arms
    configs = expand_grid(tiny_config, arms, [0, 1])
    run_grid(configs[:1], store_root=store_root, progress=False)  # one run already stored
    with ThreadPoolExecutor(max_workers=2) as pool:
        counting = CountingExecutor(pool)
        result = run_grid(configs, store_root=store_root, executor=counting, progress=False)
    ids = [c.seed for c in counting.submitted]
    assert len(counting.submitted) == 3 and sorted(ids) == [0, 1, 1]  # 4 distinct runs, 1 stored
    assert result.runs["cached"].sum() == 2  # the stored run, reported under both arms
    assert (result.runs["status"] == "finished").all() and len(result.runs) == 6


@pytest.mark.parametrize("workers", [None, 2], ids=["in-process", "thread-pool"])
def test_run_grid_computes_each_run_id_exactly_once(tiny_config, store_root, monkeypatch, workers):
    """N grid positions (one config in two arms) cost N run_id calls, all in run_grid; none below it."""
    configs = expand_grid(tiny_config, {"a": {"train.lr": [0.1, 0.05]}, "b": {"train.lr": [0.1]}}, [0])
    assert len(configs) == 3 and len({run_id(c) for c in configs}) == 2  # one duplicate
    callers = []
    real = execute.run_id

    def counting(config):
        frame = sys._getframe(1)
        if frame.f_code.co_name == "<listcomp>":  # Python < 3.12 runs a comprehension in its own frame
            frame = frame.f_back
        callers.append(frame.f_code.co_name)
        return real(config)

    monkeypatch.setattr(execute, "run_id", counting)
    if workers is None:
        result = run_grid(configs, store_root=store_root, progress=False)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            result = run_grid(configs, store_root=store_root, executor=pool, progress=False)
    assert (result.runs["status"] == "finished").all() and not result.runs["cached"].any()
    assert callers == ["run_grid"] * 3
    callers.clear()
    again = run_grid(configs, store_root=store_root, progress=False)  # all stored: only the lookups
    assert again.runs["cached"].all() and callers == ["run_grid"] * 3


def test_store_on_is_validated(tiny_config, store_root):
    with pytest.raises(ConfigError, match="store_on='nfs': must be 'auto', 'worker' or 'client'"):
        run_grid([tiny_config], store_root=store_root, store_on="nfs")


def test_ensure_run_takes_a_store_or_its_folder_and_the_given_run_id(tiny_config, store_root):
    meta = ensure_run(tiny_config, RunStore(store_root))
    assert not meta["cached"] and meta["run_id"] == run_id(tiny_config)
    assert ensure_run(tiny_config, store_root)["cached"]
    other = ensure_run(tiny_config, store_root, rid="given0123456789a")  # the caller's id is the key
    assert not other["cached"] and RunStore(store_root).is_complete("given0123456789a")


def test_compute_run_touches_no_store_and_labels_its_metrics(tiny_config, store_root):
    config = expand_grid(tiny_config, {"train.lr": [0.1]}, [0])[0]
    metrics, meta, tables = compute_run(config, "abc")
    assert RunStore(store_root).run_ids() == [] and tables == {}
    assert meta["run_id"] == "abc" and meta["status"] == "finished" and meta["config"] == config.identity()
    assert list(metrics.columns[:3]) == ["run_id", "lr", "seed"] and (metrics["run_id"] == "abc").all()
    stored = ensure_run(config, store_root)
    assert stored["run_id"] == run_id(config)
    pd.testing.assert_frame_equal(metrics.drop(columns="run_id"),
                                  RunStore(store_root).load_metrics(run_id(config)).drop(columns="run_id"),
                                  check_exact=True)


def test_run_task_stores_on_the_worker_or_returns_the_run(tiny_config, store_root, tmp_path):
    rid = run_id(tiny_config)
    meta, payload = run_task(tiny_config, rid, store_root, False, "")  # "" never exists: the client stores
    assert payload is not None and not meta["cached"] and RunStore(store_root).run_ids() == []
    metrics, tables = payload
    assert (metrics["run_id"] == rid).all() and tables == {}
    marker = tmp_path / "marker"
    marker.write_text("")
    meta, payload = run_task(tiny_config, rid, store_root, False, str(marker))  # the worker sees the store
    assert payload is None and not meta["cached"] and RunStore(store_root).is_complete(rid)
    meta, payload = run_task(tiny_config, rid, store_root, False, None)  # None: always store on the worker
    assert payload is None and meta["cached"]
    meta, payload = run_task(tiny_config, rid, store_root, True, None)
    assert payload is None and not meta["cached"]
