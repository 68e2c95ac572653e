"""The run store under many writers and damaged files.

Two processes run the same grid on one store at once (repeated, to catch races): both finish and no run is
trained twice. A writer killed while holding a claim gives the claim up. Truncated meta.json and
metrics.parquet are set aside and recomputed; leftovers of dead writers are cleaned; a store that cannot be
written is refused before any training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import RunStore
from analysis_lib.training import classifier
from analysis_lib.validation import ConfigError
from tests.cases import tiny_config

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import json, sys
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from tests.cases import tiny_config
configs = expand_grid(tiny_config(train={"steps": 2}), {"train.lr": [0.01 * i for i in range(1, 16)]}, seeds=[0, 1])
result = run_grid(configs, store_root=sys.argv[1], progress=False)
print(json.dumps({"trained": result.runs.loc[~result.runs["cached"], "run_id"].tolist(),
                  "status": result.status_counts()}))
"""


def _writer(store: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(store)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "ANALYSIS_LIB_PROGRESS": "0"})


@pytest.mark.parametrize("trial", range(3))
def test_two_writers_on_one_store_train_every_run_once(tmp_path, trial):
    store = tmp_path / "runs"
    writers = [_writer(store), _writer(store)]
    outputs = []
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    trained = [rid for o in outputs for rid in o["trained"]]
    assert len(trained) == len(set(trained)) == 30  # every run trained, none twice
    assert all(o["status"] == {"finished": 30, "diverged": 0, "failed": 0} for o in outputs)
    assert not list(store.glob(".tmp-*")) and not list(store.glob(".old-*"))


def test_a_writer_killed_while_holding_a_claim_gives_it_up(tmp_path):
    store = RunStore(tmp_path / "runs")
    code = ("import sys, time; from analysis_lib.runs.store import RunStore\n"
            "with RunStore(sys.argv[1]).claim('abc') as held:\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(store.root)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    with store.claim("abc", blocking=False) as held:
        assert not held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    start = time.perf_counter()
    with store.claim("abc", blocking=False) as held:
        assert held
    assert time.perf_counter() - start < 5


def _one_run(store_root: str):
    configs = [tiny_config()]
    result = run_grid(configs, store_root=store_root, progress=False)
    return result.run_ids()[0], result


@pytest.mark.parametrize("damage", ["truncated meta", "truncated metrics", "missing metrics", "missing meta"])
def test_a_damaged_run_is_set_aside_and_recomputed(tmp_path, damage):
    root = str(tmp_path / "runs")
    rid, first = _one_run(root)
    folder = Path(root) / rid
    if damage == "truncated meta":
        text = (folder / "meta.json").read_text()
        (folder / "meta.json").write_text(text[: len(text) // 3])
    elif damage == "truncated metrics":
        data = (folder / "metrics.parquet").read_bytes()
        (folder / "metrics.parquet").write_bytes(data[: len(data) // 2])
    elif damage == "missing metrics":
        (folder / "metrics.parquet").unlink()
    else:
        (folder / "meta.json").unlink()
    if "meta" in damage:
        assert RunStore(root).runs().set_index("run_id").loc[rid, "status"] == "damaged"
    with pytest.warns(RuntimeWarning, match=f"damaged run {rid}"):
        again = run_grid([tiny_config()], store_root=root, progress=False)
    assert not again.runs["cached"].iloc[0] and again.runs["status"].iloc[0] == "finished"
    assert len(list((Path(root) / ".damaged").iterdir())) == 1
    assert sorted(again.metrics["value"]) == sorted(first.metrics["value"])
    assert run_grid([tiny_config()], store_root=root, progress=False).runs["cached"].all()


def test_leftovers_of_dead_writers_are_cleaned_and_fresh_ones_kept(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    old, fresh = root / ".tmp-dead-1234", root / ".tmp-alive-5678"
    old.mkdir()
    fresh.mkdir()
    (root / ".client-0123").write_text("marker")
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(root / ".client-0123", (hours_ago, hours_ago))
    run_grid([tiny_config()], store_root=str(root), progress=False)
    assert not old.exists() and not (root / ".client-0123").exists() and fresh.exists()


def test_a_store_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained before the check"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="invalid run store .*cannot write there"):
        run_grid(expand_grid(tiny_config(), {"train.lr": [0.1]}, seeds=[0]), store_root=str(blocker / "runs"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained before the check"))
    root = tmp_path / "runs"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot write there"):
            run_grid([tiny_config()], store_root=str(root))
    finally:
        root.chmod(0o755)


def test_a_run_that_cannot_fit_is_refused_by_name_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained before the check"))
    huge = tiny_config(model={"width": 10**7})
    with pytest.raises(ConfigError, match=r"model\.width=10000000: the run has about 1e\+14 parameters"):
        run_grid([huge], store_root=str(tmp_path / "runs"))
    monkeypatch.setenv("ANALYSIS_LIB_MEMORY_GB", "0.000001")  # a tiny limit, set on purpose
    with pytest.raises(ConfigError, match="ANALYSIS_LIB_MEMORY_GB"):
        run_grid([tiny_config()], store_root=str(tmp_path / "runs"))
    monkeypatch.setenv("ANALYSIS_LIB_MEMORY_GB", "1e9")  # raised on purpose: the check lets it through
    from analysis_lib.runs.guards import check_memory
    check_memory([huge])


def test_the_size_estimate_counts_the_parameters_of_the_built_model():
    for model in ({"kind": "mlp", "depth": 3, "width": 16}, {"kind": "cnn", "depth": 2, "width": 6},
                  {"kind": "mlp", "depth": 2, "width": 8, "norm": "layer", "residual": True}):
        config = tiny_config(model=model)
        built = sum(p.numel() for p in config.build_model().parameters())
        estimate = config.size_estimate()["n_params"]
        assert built <= estimate <= 1.5 * built, (model, built, estimate)
