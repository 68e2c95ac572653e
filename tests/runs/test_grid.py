"""Run grids: expansion, labels, named arms, and the executor argument."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from analysis_lib.config import ConfigError
from analysis_lib.grid import condition_name, expand_grid, run_grid


def test_product_of_conditions_and_seeds(tiny_config):
    configs = expand_grid(tiny_config, {"train.optimizer": ["sgd", "adam"], "train.lr": [0.1, 0.01]}, [0, 1, 2])
    assert len(configs) == 12
    labels = [dict(c.conditions) for c in configs]
    assert labels[0] == {"optimizer": "sgd", "lr": 0.1}
    assert {(c.train.optimizer, c.train.lr, c.seed) for c in configs} == {
        (o, lr, s) for o in ("sgd", "adam") for lr in (0.1, 0.01) for s in (0, 1, 2)}


def test_named_arms_label_every_key(tiny_config):
    arms = {"main": {"train.optimizer": ["sgd"]}, "sweep": {"train.optimizer": ["adam"], "train.lr": [0.01, 0.02]}}
    configs = expand_grid(tiny_config, arms, [0])
    assert [dict(c.conditions) for c in configs] == [
        {"arm": "main", "optimizer": "sgd", "lr": 0.1},
        {"arm": "sweep", "optimizer": "adam", "lr": 0.01},
        {"arm": "sweep", "optimizer": "adam", "lr": 0.02},
    ]


def test_condition_names():
    assert condition_name("model.kind") == "model"
    assert condition_name("train.weight_decay") == "weight_decay"


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


def test_store_on_is_validated(tiny_config, store_root):
    with pytest.raises(ConfigError, match="store_on='nfs': must be 'auto', 'worker' or 'client'"):
        run_grid([tiny_config], store_root=store_root, store_on="nfs")


def test_progress_is_quiet_in_ci(monkeypatch):
    from analysis_lib.progress import progress_bar, progress_enabled

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ANALYSIS_LIB_PROGRESS", raising=False)
    assert progress_enabled() and not progress_enabled(False)
    monkeypatch.setenv("ANALYSIS_LIB_PROGRESS", "0")
    assert not progress_enabled() and progress_enabled(True)
    monkeypatch.delenv("ANALYSIS_LIB_PROGRESS")
    monkeypatch.setenv("CI", "true")
    with progress_bar(10, "lanczos") as bar:
        assert bar.disable
        bar.update(3)
