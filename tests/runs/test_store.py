"""Run store: one atomic folder per run, keyed by a hash of its config.

Round trip, cache hits, failed runs retried, no half-written run ever read as finished, derived tables computed
once, and run ids unchanged by the move of the library into subject packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import analysis_lib.training.classifier as classifier
from analysis_lib.lm.config import LMRunConfig
from analysis_lib.runs.execute import ensure_run
from analysis_lib.runs.store import STORE_VERSION, RunStore, run_id
from analysis_lib.training.config import RunConfig, config_from_dict, with_overrides

# Run ids of the default configs at STORE_VERSION 3: they change only with a deliberate version bump.
DEFAULT_RUN_ID, DEFAULT_LM_RUN_ID = "d9dad723cd158633", "d897a1118879ccbb"


def test_round_trip(tiny_config, store_root):
    meta = ensure_run(tiny_config, store_root)
    store = RunStore(store_root)
    rid = run_id(tiny_config)
    assert meta["run_id"] == rid and meta["status"] == "finished" and not meta["cached"]
    stored = store.load_meta(rid)
    assert config_from_dict(stored["config"]) == tiny_config  # the stored config rebuilds the run
    assert stored["seed"] == 0
    for key in ("versions", "git", "timings", "created"):
        assert stored[key], key
    assert stored["versions"]["torch"].startswith("2.13")
    metrics = store.load_metrics(rid)
    assert list(metrics.columns) == ["run_id", "seed", "step", "layer", "metric", "value"]
    assert (metrics["run_id"] == rid).all()
    assert store.runs()["status"].tolist() == ["finished"]


def test_run_id_depends_on_config_not_labels(tiny_config):
    labelled = with_overrides(tiny_config, {})
    object.__setattr__(labelled, "conditions", (("optimizer", "sgd"),))
    assert run_id(labelled) == run_id(tiny_config)
    assert run_id(with_overrides(tiny_config, {"train.lr": 0.2})) != run_id(tiny_config)
    assert run_id(with_overrides(tiny_config, {"seed": 1})) != run_id(tiny_config)


def test_run_ids_change_only_with_the_store_version():
    assert STORE_VERSION == 3
    assert run_id(RunConfig()) == DEFAULT_RUN_ID
    assert run_id(LMRunConfig()) == DEFAULT_LM_RUN_ID


def test_cache_hit_does_not_train_again(tiny_config, store_root, monkeypatch):
    ensure_run(tiny_config, store_root)
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("a cached run was recomputed"))
    meta = ensure_run(tiny_config, store_root)
    assert meta["cached"] and meta["status"] == "finished"


def test_force_recomputes(tiny_config, store_root):
    ensure_run(tiny_config, store_root)
    assert not ensure_run(tiny_config, store_root, force=True)["cached"]


def test_failed_run_is_recorded_then_retried(tiny_config, store_root, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(classifier, "train_classifier", broken)
    meta = ensure_run(tiny_config, store_root)
    assert meta["status"] == "failed" and "simulated fault" in meta["error"]
    assert not RunStore(store_root).is_complete(run_id(tiny_config))
    monkeypatch.undo()
    meta = ensure_run(tiny_config, store_root)
    assert meta["status"] == "finished" and not meta["cached"]


def test_crash_mid_write_leaves_no_finished_run(tiny_config, store_root):
    """A process killed while writing a run leaves nothing that reads as a run."""
    script = textwrap.dedent(f"""
        import os, pandas as pd
        from analysis_lib.runs.store import RunStore
        real = pd.DataFrame.to_parquet
        def dying(self, path, **kw):
            real(self, path, **kw)   # metrics file complete ...
            os._exit(9)              # ... killed before meta.json and the rename
        pd.DataFrame.to_parquet = dying
        RunStore({store_root!r}).save("abc123", pd.DataFrame({{"value": [1.0]}}), {{"status": "finished"}})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    store = RunStore(store_root)
    assert store.run_ids() == []
    assert not store.is_complete("abc123")
    assert store.load_meta("abc123") is None


def test_meta_without_complete_status_is_not_reused(tiny_config, store_root):
    ensure_run(tiny_config, store_root)
    store, rid = RunStore(store_root), run_id(tiny_config)
    meta = store.load_meta(rid)
    (store.path(rid) / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    assert not store.is_complete(rid)
    assert not ensure_run(tiny_config, store_root)["cached"]


def test_clear(tiny_config, store_root):
    ensure_run(tiny_config, store_root)
    assert RunStore(store_root).clear() == 1
    assert RunStore(store_root).run_ids() == []


def test_checkpoints_and_tables_round_trip(store_root):
    import torch

    store = RunStore(store_root)
    weights = {"fc1.weight": torch.randn(3, 4, dtype=torch.float64), "steps": torch.arange(5)}
    table = pd.DataFrame({"alpha": [0.0, 1.0], "value": [2.0, 3.0]})
    metrics = pd.DataFrame({"step": [0], "layer": ["model"], "metric": ["m"], "value": [1.0]})
    store.save("abc", metrics, {"status": "finished"}, {"final": weights, "surface": table})
    loaded = store.load_checkpoint("abc", "final")
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    pd.testing.assert_frame_equal(store.load_table("abc", "surface"), table)
    assert store.load_checkpoint("abc", "missing") is None
    with pytest.raises(TypeError, match="'bad'"):
        store.save("abd", metrics, {"status": "finished"}, {"bad": [1, 2]})
    assert not store.path("abd").exists()


def test_derived_tables_are_computed_once_per_params_and_never_read_half_written(store_root, monkeypatch):
    store = RunStore(store_root)
    metrics = pd.DataFrame({"step": [0], "layer": ["model"], "metric": ["m"], "value": [1.0]})
    store.save("abc", metrics, {"status": "finished"})
    calls = []

    def compute(value):
        calls.append(value)
        return pd.DataFrame({"example": [0, 1], "value": [value, 2 * value]})

    first = store.ensure_derived("abc", "stats", {"n": 2, "version": 1}, lambda: compute(1.0))
    again = store.ensure_derived("abc", "stats", {"version": 1, "n": 2}, lambda: pytest.fail("recomputed"))
    pd.testing.assert_frame_equal(first, again)
    other = store.ensure_derived("abc", "stats", {"n": 3, "version": 1}, lambda: compute(5.0))
    assert calls == [1.0, 5.0] and other["value"].tolist() == [5.0, 10.0]
    assert store.derived_path("abc", "stats", {"n": 2, "version": 1}).parent == store.path("abc") / "derived"
    assert store.run_ids() == ["abc"]

    def dying(self, path, **kw):  # the write fails half-way: nothing may be left that reads as the table
        open(path, "wb").write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dying)
    with pytest.raises(OSError, match="disk full"):
        store.ensure_derived("abc", "stats", {"n": 4}, lambda: compute(7.0))
    monkeypatch.undo()
    assert not store.derived_path("abc", "stats", {"n": 4}).exists()
    kept = {store.derived_path("abc", "stats", p).name for p in ({"n": 2, "version": 1}, {"n": 3, "version": 1})}
    assert {p.name for p in (store.path("abc") / "derived").iterdir()} == kept  # no temporary file left
    with pytest.raises(FileNotFoundError, match="no stored run"):
        store.ensure_derived("missing", "stats", {}, lambda: compute(1.0))
    with pytest.raises(ValueError, match="identifier"):
        store.derived_path("abc", "bad/name", {})
