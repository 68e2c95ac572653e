"""Run grids: labelled configs and the GridResult that reads the runs back from their store.

Expansion into labelled configs, named arms, condition names, selecting configs by label, and the GridResult
accessors (run ids by label, config parameters, extra tables, checkpoints and models of the runs), which read
the runs from the store the grid ran in, also when it is not the default one.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import condition_name, expand_grid, select
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.config import with_overrides
from tests.cases import fail_seed


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
    assert condition_name("data.name") == "dataset" and condition_name("train.optimizer") == "optimizer"


def test_select_keeps_the_configs_whose_labels_match(tiny_config):
    arms = {"a": {"train.lr": [0.1, 0.05]}, "b": {"train.lr": [0.1]}}
    configs = expand_grid(tiny_config, arms, [0, 1])
    in_a = select(configs, arm="a")
    assert [(c.train.lr, c.seed) for c in in_a] == [(0.1, 0), (0.1, 1), (0.05, 0), (0.05, 1)]
    assert [c.label("arm") for c in select(configs, lr=0.1)] == ["a", "a", "b", "b"]
    assert select(configs, arm="b", lr=0.1) == configs[4:6]
    assert select(configs, arm="c") == [] and select(configs) == configs


@pytest.fixture
def stored_grid(tiny_config, tmp_path):
    """A 2 lr × 2 seed grid with the weights and spectrum probes in a store outside the default one."""
    base = with_overrides(tiny_config, {"probes.names": ["eval", "weights", "spectrum"]})
    configs = expand_grid(base, {"train.lr": [0.05, 0.1]}, [0, 1])
    root = tmp_path / "elsewhere" / "runs"
    return configs, root, run_grid(configs, store_root=str(root), progress=False)


def test_run_ids_select_runs_by_label_in_grid_order(stored_grid):
    configs, _, result = stored_grid
    ids = [run_id(c) for c in configs]
    assert result.run_ids() == ids
    assert result.run_ids(lr=0.1) == ids[2:]
    assert result.run_ids(lr=0.1, seed=0) == [ids[2]]
    assert result.run_ids(lr=0.5) == []
    with pytest.raises(ValueError, match="arm=.*not a column of the run table"):
        result.run_ids(arm="a")


def test_run_ids_list_a_run_shared_by_two_arms_once(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"a": {"train.lr": [0.1]}, "b": {"train.lr": [0.1]}}, [0])
    result = run_grid(configs, store_root=store_root, progress=False)
    assert len(result.runs) == 2 and result.run_ids() == [run_id(configs[0])]
    assert result.run_ids(arm="b") == [run_id(configs[0])]


def test_parameter_reads_a_config_value_of_every_run(stored_grid):
    configs, _, result = stored_grid
    lrs = result.parameter("train.lr")
    assert lrs.name == "train.lr" and lrs.to_dict() == {run_id(c): c.train.lr for c in configs}
    assert set(result.parameter("seed").to_dict().values()) == {0, 1}
    assert result.configs == {run_id(c): c for c in configs}


def test_table_labels_each_runs_stored_table(stored_grid):
    configs, root, result = stored_grid
    spectra = result.table("spectrum")
    store = RunStore(root)
    stored = store.load_table(run_id(configs[0]), "spectrum")
    assert list(spectra.columns) == ["run_id", "lr", "seed", *stored.columns]
    assert spectra.groupby("run_id")["lr"].first().to_dict() == {run_id(c): c.train.lr for c in configs}
    for c in configs:
        rows = spectra[spectra["run_id"] == run_id(c)]
        assert (rows["seed"] == c.seed).all()
        pd.testing.assert_frame_equal(rows[stored.columns].reset_index(drop=True),
                                      store.load_table(run_id(c), "spectrum"))
    missing = result.table("no_such_table")
    assert missing.empty and list(missing.columns) == ["run_id", "lr", "seed"]


def test_checkpoints_and_models_come_from_the_store(stored_grid):
    configs, root, result = stored_grid
    finals = result.checkpoints("final")
    assert list(finals) == [run_id(c) for c in configs]
    store = RunStore(root)
    for rid, state in finals.items():
        stored = store.load_checkpoint(rid, "final")
        assert state.keys() == stored.keys() and all(torch.equal(state[k], stored[k]) for k in state)
    trajectories = result.checkpoints("trajectory")
    assert set(trajectories) == set(finals)
    assert trajectories[run_id(configs[0])]["steps"].tolist() == [0, 3, 6, 9, 12]
    assert result.checkpoints("missing") == {}
    rid = run_id(configs[3])
    model = result.model(rid)
    assert not model.training
    assert all(torch.equal(v, finals[rid][k]) for k, v in model.state_dict().items())
    untrained = configs[3].build_model()
    assert not all(torch.equal(v, finals[rid][k]) for k, v in untrained.state_dict().items())
    with pytest.raises(ValueError, match="has no 'base' checkpoint"):
        result.model(rid, "base")


def test_model_without_the_weights_probe_says_how_to_get_one(tiny_config, store_root):
    result = run_grid([tiny_config], store_root=store_root, progress=False)
    with pytest.raises(ValueError, match="no 'final' checkpoint: add 'weights' to probes.names"):
        result.model(run_id(tiny_config))


def test_grid_result_remembers_its_store(stored_grid, tmp_path, monkeypatch):
    """Tables and checkpoints are read from the grid's own (non-default) store, without naming it again."""
    configs, root, result = stored_grid
    monkeypatch.setenv("ANALYSIS_LIB_DATA", str(tmp_path / "empty-default"))  # the default store is empty
    assert RunStore().run_ids() == [] and result.store.root == root
    assert set(result.checkpoints("final")) == {run_id(c) for c in configs}
    assert result.table("spectrum")["run_id"].nunique() == 4
    assert result.model(run_id(configs[0])) is not None


def test_failed_runs_have_no_tables_or_checkpoints(tiny_config, store_root, monkeypatch):
    fail_seed(monkeypatch, 1)
    configs = expand_grid(with_overrides(tiny_config, {"probes.names": ["weights", "spectrum"]}),
                          {"train.lr": [0.1]}, [0, 1])
    result = run_grid(configs, store_root=store_root, progress=False)
    assert result.status_counts() == {"finished": 1, "diverged": 0, "failed": 1}
    assert list(result.checkpoints("final")) == [run_id(configs[0])]
    assert set(result.table("spectrum")["seed"]) == {0}
