"""A warm local pool: started once, joined by every grid_executor of its size, in this process and in children."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.executors import POOL_ENV, grid_executor, local_pool
from analysis_lib.runs.grid import expand_grid

CHILD = """
import json, os, sys
from analysis_lib.runs.executors import grid_executor
with grid_executor(2) as client:
    print(json.dumps({"address": client.scheduler.address, "workers": len(client.scheduler_info()["workers"])}))
"""


def test_grids_join_the_pool_of_their_size_and_give_the_same_runs(tiny_config, tmp_path):
    configs = expand_grid(tiny_config, {"train.lr": [0.05, 0.1]}, [0, 1])
    local = run_grid(configs, store_root=str(tmp_path / "a"), progress=False)
    assert POOL_ENV not in os.environ
    with local_pool(2) as address:
        with grid_executor(2) as client:
            assert client.scheduler.address == address
            pooled = run_grid(configs, store_root=str(tmp_path / "b"), executor=client, progress=False)
        with grid_executor(2) as client:  # the pool outlives each grid
            assert client.scheduler.address == address
        with grid_executor(3) as client:  # another size: a cluster of its own
            assert client.scheduler.address != address and len(client.scheduler_info()["workers"]) == 3
        with grid_executor(1) as executor:  # in-process stays in-process
            assert executor is None
        child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert json.loads(child.stdout.strip().splitlines()[-1]) == {"address": address, "workers": 2}
    assert POOL_ENV not in os.environ
    pd.testing.assert_frame_equal(local.metrics, pooled.metrics, check_exact=True)


def test_a_pool_that_has_gone_is_replaced_by_a_cluster_of_its_own(monkeypatch):
    monkeypatch.setenv(POOL_ENV, json.dumps({"address": "tcp://127.0.0.1:9", "workers": 2, "retries": 2}))
    with grid_executor(2) as client:
        assert len(client.scheduler_info()["workers"]) == 2 and not client.scheduler.address.endswith(":9")
