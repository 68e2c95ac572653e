"""Executors for run grids: Dask workers give the in-process results and survive dying workers.

A 2-process Dask LocalCluster gives the in-process results; a worker killed mid-grid is retried a bounded number
of times, then recorded as failed; an interrupted grid resumes without recomputing finished runs. One
LocalCluster (about 3 s to start) is shared by the module. Workers are killed with ``os._exit`` from inside a
task, so which run dies, and how often, is deterministic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import distributed  # noqa: F401  (required: a broken install fails here instead of skipping)
import pandas as pd
import pytest

import analysis_lib.training.classifier as classifier
from analysis_lib.runs.execute import run_grid, run_task
from analysis_lib.runs.executors import grid_executor
from analysis_lib.runs.grid import expand_grid
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError

RETRIES = 1  # a task may lose its worker once and be re-run; the second death is final


@pytest.fixture(scope="module")
def client():
    with grid_executor(2, retries=RETRIES) as dask_client:
        yield dask_client


def _grid(tiny_config, seeds=(0, 1, 2)):
    return expand_grid(tiny_config, {"train.lr": [0.05, 0.1]}, list(seeds))


def _killer(attempts_dir: str, seed: int, deaths: int):
    """A task that kills its worker process the first ``deaths`` times it runs ``seed``.

    Built in a function so cloudpickle ships it by value to the workers.
    """
    def task(config, rid, store_root, force, marker):
        if config.seed == seed:
            folder = Path(attempts_dir)
            folder.mkdir(exist_ok=True)
            n = len(list(folder.iterdir()))
            (folder / f"attempt-{n}-{os.getpid()}").write_text("")
            if n < deaths:
                os._exit(1)  # the worker process dies mid-task, as under kill -9 or the OOM killer
        return run_task(config, rid, store_root, force, marker)
    return task


class Sabotaged:
    """An executor that sends every run to ``task`` instead of ``run_task``."""

    def __init__(self, executor, task):
        self.executor, self.task = executor, task

    def submit(self, fn, *args):
        assert fn is run_task
        return self.executor.submit(self.task, *args)


def test_local_cluster_gives_the_in_process_results(tiny_config, tmp_path, client):
    configs = _grid(tiny_config, seeds=[0, 1])
    local = run_grid(configs, store_root=str(tmp_path / "a"), progress=False)
    dask = run_grid(configs, store_root=str(tmp_path / "b"), executor=client, progress=False)
    pd.testing.assert_frame_equal(local.metrics, dask.metrics, check_exact=True)
    pd.testing.assert_frame_equal(local.runs.drop(columns="seconds"), dask.runs.drop(columns="seconds"))
    pids = {RunStore(tmp_path / "b").load_meta(r)["pid"] for r in dask.runs["run_id"]}
    assert os.getpid() not in pids and len(pids) >= 1  # trained in the worker processes
    assert client.nthreads() and set(client.nthreads().values()) == {1}


def test_workers_keep_glibc_default_malloc_trimming(client):
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 made training in workers about 1.8x slower.
    environs = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert environs and set(environs.values()) == {None}


def test_client_can_store_the_runs(tiny_config, tmp_path, client):
    configs = _grid(tiny_config, seeds=[0])
    local = run_grid(configs, store_root=str(tmp_path / "a"), progress=False)
    dask = run_grid(configs, store_root=str(tmp_path / "b"), executor=client, progress=False,
                    store_on="client")
    pd.testing.assert_frame_equal(local.metrics, dask.metrics, check_exact=True)
    store = RunStore(tmp_path / "b")
    assert all(store.load_meta(r)["stored_by"] == "client" for r in dask.runs["run_id"])
    assert not list(store.root.glob(".client-*"))  # marker removed


def test_existing_cluster_by_address(tiny_config, tmp_path, client):
    with grid_executor(scheduler=client.scheduler.address) as remote:
        result = run_grid(_grid(tiny_config, seeds=[0]), store_root=str(tmp_path), executor=remote,
                          progress=False)
    assert result.status_counts() == {"finished": 2, "diverged": 0, "failed": 0}


def test_killed_worker_is_retried_and_the_study_completes(tiny_config, tmp_path, client):
    configs = _grid(tiny_config)
    expected = run_grid(configs, store_root=str(tmp_path / "ref"), progress=False)
    task = _killer(str(tmp_path / "attempts"), seed=1, deaths=RETRIES)
    result = run_grid(configs, store_root=str(tmp_path / "runs"), executor=Sabotaged(client, task),
                      progress=False)
    assert len(list((tmp_path / "attempts").iterdir())) >= RETRIES + 1  # died, then ran again
    assert result.status_counts() == {"finished": 6, "diverged": 0, "failed": 0}
    pd.testing.assert_frame_equal(expected.metrics, result.metrics, check_exact=True)


def test_worker_killed_every_time_is_recorded_failed_and_the_rest_kept(tiny_config, tmp_path, client):
    configs = expand_grid(tiny_config, {"train.lr": [0.1]}, [0, 1, 2, 3])
    store_root = str(tmp_path / "runs")
    task = _killer(str(tmp_path / "attempts"), seed=1, deaths=100)
    result = run_grid(configs, store_root=store_root, executor=Sabotaged(client, task), progress=False)
    # bounded: the first attempt plus RETRIES re-runs, then the scheduler gives up
    assert len(list((tmp_path / "attempts").iterdir())) == RETRIES + 1
    failed = result.runs[result.runs["status"] == "failed"]
    assert failed["seed"].tolist() == [1] and failed["error"].str.contains("KilledWorker").all()
    assert (result.runs[result.runs["seed"] != 1]["status"] == "finished").all()
    store = RunStore(store_root)
    assert store.load_meta(failed["run_id"].iloc[0])["status"] == "failed"  # reported, not lost
    again = run_grid(configs, store_root=store_root, progress=False)  # next call, in-process
    assert again.status_counts()["finished"] == 4  # failed runs are retried, finished ones reused
    assert again.runs.set_index("run_id")["cached"].to_dict() == {
        r: s != 1 for r, s in zip(result.runs["run_id"], result.runs["seed"])}


def test_lost_task_on_any_executor_is_recorded_with_its_reason(tiny_config, tmp_path):
    def task(config, *args):
        if config.seed == 2:
            raise RuntimeError("BrokenProcessPool: a process in the pool was terminated abruptly")
        return run_task(config, *args)

    with ThreadPoolExecutor(max_workers=2) as pool:
        result = run_grid(_grid(tiny_config), store_root=str(tmp_path), executor=Sabotaged(pool, task),
                          progress=False)
    assert result.status_counts() == {"finished": 4, "diverged": 0, "failed": 2}
    assert result.runs[result.runs["seed"] == 2]["error"].str.contains("terminated abruptly").all()


SCRIPT = """
import sys
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import expand_grid
from analysis_lib.training.config import config_from_dict
base = config_from_dict({base!r})
run_grid(expand_grid(base, {{"train.lr": [0.1]}}, [0, 1, 2, 3, 4]), store_root={root!r}, progress=False)
"""


def test_killed_client_resumes_without_recomputing_finished_runs(tiny_config, tmp_path, monkeypatch):
    slow = with_overrides(tiny_config, {"train.steps": 500, "probes.every": 100})  # ~0.3 s a run
    root = tmp_path / "runs"
    script = SCRIPT.format(base=slow.identity(), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stderr=subprocess.PIPE)
    store, deadline = RunStore(root), time.monotonic() + 60
    while len(store.run_ids()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the client dies mid-grid, possibly mid-write
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    done = set(store.run_ids())
    assert 2 <= len(done) < 5 and all(store.is_complete(r) for r in done)
    calls = []
    real_train = classifier.train_classifier
    monkeypatch.setattr(classifier, "train_classifier", lambda cfg: calls.append(run_id(cfg)) or real_train(cfg))
    configs = expand_grid(slow, {"train.lr": [0.1]}, [0, 1, 2, 3, 4])
    resumed = run_grid(configs, store_root=str(root), progress=False)
    assert set(calls) == {run_id(c) for c in configs} - done and len(calls) == len(set(calls))
    assert resumed.runs.set_index("run_id")["cached"].to_dict() == {
        run_id(c): run_id(c) in done for c in configs}
    fresh = run_grid(configs, store_root=str(tmp_path / "fresh"), progress=False)
    pd.testing.assert_frame_equal(fresh.metrics, resumed.metrics, check_exact=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 0}, "workers=0: must be an integer >= 1"),
    ({"workers": "2"}, "workers='2': must be an integer >= 1"),
    ({"scheduler": "localhost:8786"}, "scheduler='localhost:8786': must be ''"),
    ({"workers": 2, "retries": -1}, "retries=-1: must be an integer >= 0"),
])
def test_bad_executor_parameters_name_the_parameter(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        with grid_executor(**kwargs):
            pass


def test_a_batch_scheduler_without_dask_jobqueue_is_refused_at_once(monkeypatch):
    """The cluster starts lazily, but a scheduler it could never start is refused when the block opens."""
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if not installed
    with pytest.raises(ConfigError, match="scheduler='slurm': needs dask-jobqueue"):
        with grid_executor(4, "slurm"):
            pass


def test_one_worker_is_in_process():
    with grid_executor(1) as executor:
        assert executor is None


def test_slurm_workers_get_one_thread_each():
    """The SLURM path builds a job script from Dask's jobqueue config (no SLURM needed)."""
    import dask

    from analysis_lib.runs.executors import batch_cluster_class

    pytest.importorskip("dask_jobqueue", reason="dask_jobqueue is the optional 'cluster' extra")
    cls = batch_cluster_class("slurm")
    settings = {"jobqueue.slurm.cores": 4, "jobqueue.slurm.processes": 4, "jobqueue.slurm.memory": "8GB"}
    with dask.config.set(settings):
        cluster = cls()
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert "#SBATCH --cpus-per-task=4" in script and "--nthreads 1" in script and "--nworkers 4" in script


def test_a_local_cluster_starts_only_when_a_task_is_submitted(tiny_config, tmp_path):
    """A grid whose runs are all stored (and an analysis with nothing to compute) starts no cluster."""
    from analysis_lib.runs.derived import Analysis, derive

    configs = _grid(tiny_config, seeds=(0,))
    root = str(tmp_path / "store")
    stored = run_grid(configs, store_root=root, progress=False)
    last = Analysis("last_loss_lazy", lambda runs, ids: runs.metrics.groupby("run_id").tail(1), version=1)
    derive(last, stored, progress=False)
    with grid_executor(2) as executor:
        again = run_grid(configs, store_root=root, executor=executor, progress=False)
        derive(last, again, executor=executor, progress=False)
        assert not executor.started  # nothing to run: no cluster, no workers
    with grid_executor(2) as executor:
        fresh = run_grid(configs, store_root=str(tmp_path / "other"), executor=executor, progress=False)
        assert executor.started and len(executor.scheduler_info()["workers"]) == 2
    pd.testing.assert_frame_equal(stored.metrics, fresh.metrics, check_exact=True)
    pd.testing.assert_frame_equal(stored.metrics, again.metrics, check_exact=True)
