"""Analyses of stored runs as cached tasks: computed once, recomputed on a change, the same everywhere.

The analysis here is deliberately cheap and transparent (each run's last test loss, scaled; the
difference of two runs' for pairs), and every call is counted in a file, so "a second call does
no work" is checked by counting calls, in this process and on Dask workers alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis_lib.runs.derived import Analysis, derive, derived_path
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.executors import grid_executor
from analysis_lib.runs.grid import expand_grid
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _count(counter: str) -> None:
    with open(counter, "a") as f:
        f.write("x")


def last_loss(runs, run_ids, counter, scale=1.0):
    """Last test loss of each run × scale; one mark in ``counter`` per call."""
    _count(counter)
    rows = []
    for rid in run_ids:
        m = runs.store.load_metrics(rid)
        m = m[m["metric"] == "test_loss"]
        rows.append({"run_id": rid, "seed": runs.configs[rid].seed, "labels_seen": len(runs.configs[rid].conditions),
                     "value": scale * float(m.sort_values("step")["value"].iloc[-1])})
    return pd.DataFrame(rows)


def loss_gap(runs, run_ids, counter):
    """Last test loss of the first run minus the second's (a pair analysis, no run_id column)."""
    a, b = (last_loss(runs, [rid], counter)["value"].iloc[0] for rid in run_ids)
    return pd.DataFrame([{"run_a": run_ids[0], "run_b": run_ids[1], "gap": a - b}])


LAST_LOSS = Analysis("last_loss", "tests.runs.test_derived:last_loss")


def calls(counter) -> int:
    return len(Path(counter).read_text()) if Path(counter).exists() else 0


@pytest.fixture
def grid(tiny_config, store_root):
    configs = expand_grid(tiny_config, {"train.lr": [0.05, 0.1]}, [0, 1])
    return run_grid(configs, store_root=store_root, progress=False)


def expected_last_loss(result, scale=1.0) -> pd.Series:
    m = result.metrics[result.metrics["metric"] == "test_loss"].sort_values("step")
    return scale * m.groupby("run_id", sort=False)["value"].last()


def matches(table: pd.DataFrame, expected: pd.Series) -> bool:
    return table["value"].tolist() == expected[table["run_id"]].tolist()


def test_computed_once_then_read(grid, tmp_path):
    counter = str(tmp_path / "calls")
    first = derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    assert calls(counter) == 4
    again = derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    assert calls(counter) == 4  # no work the second time
    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns) == ["run_id", "lr", "seed", "labels_seen", "value"]
    assert first["run_id"].tolist() == grid.run_ids()
    assert matches(first, expected_last_loss(grid))
    assert (first["labels_seen"] == 0).all()  # tasks see configs without the grid's labels


def test_recomputed_when_params_or_version_change(grid, tmp_path):
    counter = str(tmp_path / "calls")
    derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    doubled = derive(LAST_LOSS, grid, params={"counter": counter, "scale": 2.0}, progress=False)
    assert calls(counter) == 8
    assert matches(doubled, expected_last_loss(grid, 2.0))
    derive(Analysis("last_loss", last_loss, version=2), grid, params={"counter": counter}, progress=False)
    assert calls(counter) == 12
    derive(LAST_LOSS, grid, params={"counter": counter}, progress=False, force=True)
    assert calls(counter) == 16
    derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    assert calls(counter) == 16


def test_only_missing_tasks_are_computed(grid, tmp_path):
    counter = str(tmp_path / "calls")
    derive(LAST_LOSS, grid, [grid.run_ids()[:1]], params={"counter": counter}, progress=False)
    derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    assert calls(counter) == 4  # 1, then the 3 others


def test_pairs_are_tasks_of_their_own(grid, tmp_path):
    counter = str(tmp_path / "calls")
    ids = grid.run_ids()
    pairs = [(ids[0], ids[1]), (ids[2], ids[3]), (ids[1], ids[0])]
    gaps = derive(Analysis("loss_gap", loss_gap), grid, pairs, params={"counter": counter}, progress=False)
    losses = expected_last_loss(grid)
    assert gaps["gap"].tolist() == pytest.approx([losses[a] - losses[b] for a, b in pairs], abs=0)
    assert list(gaps.columns) == ["run_a", "run_b", "gap"]  # no run_id column: no labels added
    assert calls(counter) == 6
    assert derived_path(grid.store, Analysis("loss_gap", loss_gap), pairs[0], {"counter": counter}) != \
        derived_path(grid.store, Analysis("loss_gap", loss_gap), pairs[2], {"counter": counter})


def test_another_grid_reads_the_tables_under_its_own_labels(grid, tiny_config, tmp_path):
    counter = str(tmp_path / "calls")
    derive(LAST_LOSS, grid, params={"counter": counter}, progress=False)
    other = run_grid(expand_grid(with_overrides(tiny_config, {"train.lr": 0.05}), {"a": {"train.optimizer": ["sgd"]}},
                                 [0, 1]), store_root=str(grid.store.root), progress=False)
    relabelled = derive(LAST_LOSS, other, params={"counter": counter}, progress=False)
    assert calls(counter) == 4  # stored by the first grid
    assert list(relabelled.columns) == ["run_id", "arm", "optimizer", "seed", "labels_seen", "value"]
    assert set(relabelled["arm"]) == {"a"}


def test_bad_groups_and_params_are_refused_before_any_work(grid, tmp_path):
    counter = str(tmp_path / "calls")
    with pytest.raises(ConfigError, match=r"invalid parameter groups: \['nope'\] are not complete runs"):
        derive(LAST_LOSS, grid, [["nope"]], params={"counter": counter})
    with pytest.raises(ConfigError, match="must be JSON-serialisable"):
        derive(LAST_LOSS, grid, params={"counter": counter, "scale": object()})
    with pytest.raises(ValueError, match="must be an identifier"):
        Analysis("last loss", last_loss)
    assert calls(counter) == 0


def test_the_same_tables_in_process_and_on_a_dask_cluster(tiny_config, tmp_path):
    configs = expand_grid(tiny_config, {"train.lr": [0.05, 0.1]}, [0, 1])
    local = run_grid(configs, store_root=str(tmp_path / "a"), progress=False)
    counter = str(tmp_path / "calls")
    here = derive(LAST_LOSS, local, params={"counter": counter}, progress=False)
    with grid_executor(2) as client:
        remote = run_grid(configs, store_root=str(tmp_path / "b"), executor=client, progress=False)
        there = derive(LAST_LOSS, remote, params={"counter": counter}, executor=client, progress=False)
        assert calls(counter) == 8  # computed on the workers, counted there
        derive(LAST_LOSS, remote, params={"counter": counter}, executor=client, progress=False)
        assert calls(counter) == 8
    pd.testing.assert_frame_equal(here, there, check_exact=True)


KILLED = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import pandas as pd
    from analysis_lib.runs.derived import derive
    from analysis_lib.runs.execute import run_grid
    from analysis_lib.runs.grid import expand_grid
    from tests.cases import tiny_config
    from tests.runs.test_derived import LAST_LOSS

    real = pd.DataFrame.to_parquet
    def half_then_die(self, path, *args, **kwargs):  # write part of the file, then the process dies
        real(self, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    pd.DataFrame.to_parquet = half_then_die
    result = run_grid(expand_grid(tiny_config(), {"train.lr": [0.05]}, [0]), store_root=sys.argv[2], progress=False)
    derive(LAST_LOSS, result, params={"counter": sys.argv[3]}, progress=False)
""")


def test_a_killed_analysis_leaves_nothing_half_written(tiny_config, store_root, tmp_path):
    counter = str(tmp_path / "calls")
    result = run_grid(expand_grid(tiny_config, {"train.lr": [0.05]}, [0]), store_root=store_root, progress=False)
    proc = subprocess.run([sys.executable, "-c", KILLED, str(ROOT), store_root, counter], capture_output=True,
                          env={**os.environ, "ANALYSIS_LIB_PROGRESS": "0"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    path = derived_path(result.store, LAST_LOSS, result.run_ids(), {"counter": counter})
    leftovers = list(path.parent.glob(".tmp-*"))
    assert not path.exists() and len(leftovers) == 1  # the half file has a temporary name only
    table = derive(LAST_LOSS, result, params={"counter": counter}, progress=False)
    assert calls(counter) == 2 and matches(table, expected_last_loss(result))
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    derive(LAST_LOSS, result, params={"counter": counter}, progress=False, force=True)
    assert not leftovers[0].exists()  # a stale temporary is removed by the next write
