"""finetune.from_run: fine-tuning that starts from a stored run's ``base`` checkpoint.

A continued run fine-tunes exactly as a run that pre-trains again (same metrics from step
``train.steps`` on, same ``tuned`` weights), in-process and on a worker; it refuses, as a failed
run naming the parameter, a source that is missing, was trained otherwise or cannot be seen; its
run id depends on the source's and is unchanged at the default.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from analysis_lib.lm.training import train_lm
from analysis_lib.runs.execute import compute_run, ensure_run, run_grid, torch_threads
from analysis_lib.runs.sources import reading_runs_from
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError
from tests.cases import tiny_lm_config

PRETRAIN = 8  # tiny_lm_config's train.steps


def _source(**train):
    return tiny_lm_config(train={"dtype": "float64", **train}, probes={"names": ["eval", "grad_norm"], "every": 3},
                          finetune={"steps": 6, "lr": 0.01})


def _continued(source, **finetune):
    return with_overrides(source, {"probes.names": ["eval"], "finetune.adapter_layers": [1],
                                   "finetune.adapter_rank": 2, **{f"finetune.{k}": v for k, v in finetune.items()}})


def _finetune_rows(metrics):
    m = metrics[metrics["step"] >= PRETRAIN].sort_values(["step", "layer", "metric"])
    return m[["step", "layer", "metric", "value"]].reset_index(drop=True)


def test_continued_run_equals_the_run_that_pretrains_again(tmp_path):
    store = RunStore(tmp_path)
    source = _source()
    assert ensure_run(source, store)["status"] == "finished"
    again = _continued(source)
    continued = _continued(source, from_run=run_id(source))
    with torch_threads(1), reading_runs_from(store):  # one thread, as the source was trained
        warm, cold = train_lm(continued), train_lm(again)
    assert warm.status == cold.status == "finished"
    assert warm.metrics["step"].min() == PRETRAIN  # fine-tuning only, from step train.steps
    assert "pretrain_seconds" not in warm.timings and "base" not in warm.tables
    expected = _finetune_rows(cold.metrics)
    # at step train.steps the continued run has the probes' records of its start, not those of
    # pre-training's last update (its batch loss, and the greedy accuracy at the phase's end)
    pretraining = (expected["step"] == PRETRAIN) & expected["metric"].isin(
        ["batch_loss", "test_acc_fast", "test_acc_slow"])
    assert _finetune_rows(warm.metrics).equals(expected[~pretraining].reset_index(drop=True))
    for name, value in cold.tables["tuned"].items():
        assert torch.equal(value, warm.tables["tuned"][name]), name


def test_continued_run_through_the_grid_in_process_and_on_a_worker(tmp_path):
    source = _source()
    run_grid([source], store_root=str(tmp_path), progress=False)
    continued = _continued(source, from_run=run_id(source))
    here = run_grid([continued], store_root=str(tmp_path / "copy"), progress=False)  # another store: no source
    assert here.runs["status"].tolist() == ["failed"]
    assert "finetune.from_run" in here.runs["error"].iloc[0] and "no complete run" in here.runs["error"].iloc[0]
    inproc = run_grid([continued], store_root=str(tmp_path), progress=False)
    assert inproc.runs["status"].tolist() == ["finished"]
    with ThreadPoolExecutor(1) as pool:
        worker = run_grid([continued], store_root=str(tmp_path), executor=pool, progress=False, force=True,
                          store_on="worker")
    assert worker.runs["status"].tolist() == ["finished"]
    cols = ["step", "layer", "metric", "value"]
    assert worker.metrics[cols].reset_index(drop=True).equals(inproc.metrics[cols].reset_index(drop=True))


def test_a_worker_without_the_store_fails_the_run_with_the_reason(tmp_path):
    source = _source()
    ensure_run(source, RunStore(tmp_path))
    _, meta, _ = compute_run(_continued(source, from_run=run_id(source)), "abc", None)
    assert meta["status"] == "failed"
    assert "finetune.from_run" in meta["error"] and "cannot see the client's run store" in meta["error"]


@pytest.mark.parametrize("change,text", [
    ({"train.lr": 0.02}, "trained with other train than this run's"),
    ({"seed": 1}, "trained with other seed"),
    ({"task.slow_fraction": 0.0}, "trained with other task"),
])
def test_a_source_trained_otherwise_is_refused(tmp_path, change, text):
    store = RunStore(tmp_path)
    source = _source()
    ensure_run(source, store)
    mismatched = _continued(with_overrides(source, change), from_run=run_id(source))
    _, meta, _ = compute_run(mismatched, "abc", store)
    assert meta["status"] == "failed" and text in meta["error"], meta["error"]


@pytest.mark.parametrize("status,tables,text", [
    ("diverged", True, "the source run diverged"),
    ("finished", False, "the source run has no 'base' checkpoint"),
])
def test_a_source_that_diverged_or_lacks_the_checkpoint_is_refused(tmp_path, status, tables, text):
    store, source = RunStore(tmp_path), _source()
    rid = run_id(source)
    metrics, meta, stored = compute_run(source, rid)
    store.save(rid, metrics, {**meta, "status": status}, stored if tables else {})
    _, meta, _ = compute_run(_continued(source, from_run=rid), "abc", store)
    assert meta["status"] == "failed" and text in meta["error"], meta["error"]


def test_a_run_started_by_hand_has_no_store_to_read():
    with pytest.raises(ValueError, match=r"finetune.from_run='abc': no run store to read the source run from"):
        train_lm(_continued(_source(), from_run="abc"))


def test_run_id_unchanged_at_the_default_and_pinned_to_the_source():
    source = _source()
    assert run_id(dataclasses.replace(source, finetune=dataclasses.replace(source.finetune, from_run=""))) \
        == run_id(source)
    one, other = _continued(source, from_run="a" * 16), _continued(source, from_run="b" * 16)
    assert len({run_id(one), run_id(other), run_id(_continued(source))}) == 3


def test_from_run_must_be_a_string():
    with pytest.raises(ConfigError, match=r"finetune.from_run=3: must be a run id"):
        _continued(_source(), from_run=3)
