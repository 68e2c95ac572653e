"""Where a run grid executes: in-process, a Dask LocalCluster, an existing Dask cluster, or SLURM/PBS.

One notebook parameter pair chooses, and results do not depend on the choice (every run trains
with one torch thread in a fresh process, see ``analysis_lib.runs.execute.ensure_run``)::

    workers: 1, scheduler: ""                  in-process (no Dask)
    workers: 8, scheduler: ""                  LocalCluster of 8 one-thread worker processes
    workers: 1, scheduler: "local"             LocalCluster even for one worker (keeps a crashing
                                               run out of the notebook's kernel)
    scheduler: "tcp://host:8786"               an existing Dask cluster (workers is ignored)
    workers: 40, scheduler: "slurm" | "pbs"    dask-jobqueue, 40 workers; queue, cores, memory
                                               and walltime come from Dask's jobqueue config

A worker that dies while running a task (killed, out of memory, node lost) makes Dask re-run the
task elsewhere; after ``retries`` such deaths the scheduler gives up with ``KilledWorker`` and
:func:`analysis_lib.runs.execute.run_grid` records the run as failed with that reason. We use
Dask's own bookkeeping (``distributed.scheduler.allowed-failures``) rather than counting attempts
ourselves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from ..validation import ConfigError

DEFAULT_RETRIES = 2  # re-runs of a task whose worker died before it is recorded as failed
BATCH_SCHEDULERS = ("slurm", "pbs")
LOCAL = ("", "local")
CONNECT_SECONDS = 5  # an unreachable scheduler address fails this fast
_ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://")
POOL_ENV = "ANALYSIS_LIB_LOCAL_POOL"  # set by local_pool for this process and the kernels it starts
# Background work of Dask's own that competes with training when every core runs a worker: the
# statistical profiler samples each worker's threads every 10 ms, the memory and system monitors
# poll every 0.1 / 0.5 s, and work stealing re-plans queued tasks (with a saturation of 1.0 no task
# waits on a worker to be stolen). Measured on 2 cores, 8 runs of 5 s on 2 workers: 4.25 -> 3.6-3.7 s
# per run, the in-process time (benchmarks/README.md). The dashboard's profile page stays empty.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False,
                 "distributed.worker.memory.monitor-interval": "1s",
                 "distributed.admin.system-monitor.interval": "2s",
                 "distributed.scheduler.work-stealing": False}


def check_executor_parameters(workers, scheduler, retries=DEFAULT_RETRIES) -> None:
    """Raise ConfigError naming the parameter, its value and what is allowed."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid parameter workers={workers!r}: must be an integer >= 1")
    if not isinstance(scheduler, str) or not (
            scheduler in LOCAL + BATCH_SCHEDULERS or scheduler.startswith(_ADDRESS_PREFIXES)):
        raise ConfigError(f"invalid parameter scheduler={scheduler!r}: must be '' or 'local' (this "
                          "machine), a "
                          "Dask scheduler address such as 'tcp://host:8786', or one of "
                          f"{', '.join(map(repr, BATCH_SCHEDULERS))} (needs dask-jobqueue)")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"invalid parameter retries={retries!r}: must be an integer >= 0")


@contextlib.contextmanager
def grid_executor(workers: int = 1, scheduler: str = "", *, retries: int = DEFAULT_RETRIES):
    """The executor for ``run_grid``: None (in-process) or a ``dask.distributed.Client``.

    Args:
        workers: 1 runs in-process unless ``scheduler`` is set; N > 1 starts a LocalCluster of N
            single-threaded processes, or asks a batch scheduler for N workers.
        scheduler: '' for this machine, 'local' for a LocalCluster even of one worker, a
            scheduler address, or 'slurm' / 'pbs'.
        retries: times a task is re-run after its worker died (clusters started here; an
            existing cluster uses its own ``distributed.scheduler.allowed-failures``).

    Returns:
        A context manager yielding None, a Client (a warm pool, an existing cluster), or a
        :class:`LazyCluster` that starts the cluster asked for at its first task; clusters started
        here are closed on exit.
    """
    check_executor_parameters(workers, scheduler, retries)
    if workers == 1 and scheduler == "":
        yield None
        return
    from distributed import Client

    if scheduler == "" and (pool := _pool_address(workers, retries)) is not None:
        try:
            client = Client(pool, timeout=CONNECT_SECONDS)  # a warm local pool of this size
        except OSError:
            client = None  # the pool has gone: start a cluster as if there were none
        if client is not None:
            with client:
                yield client
            return

    if scheduler.startswith(_ADDRESS_PREFIXES):
        try:
            client = Client(scheduler, timeout=CONNECT_SECONDS)
        except OSError as err:  # distributed raises OSError (TimeoutError) when nothing answers
            raise ConfigError(f"invalid parameter scheduler={scheduler!r}: no Dask scheduler answered there within "
                              f"{CONNECT_SECONDS} s ({type(err).__name__}); start one (`dask scheduler`) or use "
                              "'' for this machine") from None
        with client:
            yield client
        return
    with LazyCluster(workers, scheduler, retries) as client:
        yield client


class LazyCluster:
    """A Dask client whose cluster (LocalCluster or SLURM/PBS) starts at the first task, not before.

    A grid or analysis whose results are all stored never submits anything, so a render of a
    study that is already computed pays no cluster start-up (2-3 s per ``grid_executor`` block for
    a LocalCluster of 2 on 2 cores, and no batch jobs). Every attribute other than ``submit``
    also starts the cluster and is forwarded to the client. Used as a context manager: the cluster,
    if it was started, is closed on exit.
    """

    def __init__(self, workers: int, scheduler: str, retries: int):
        self._spec = (workers, scheduler, retries)  # underscored: the client's own attributes pass through
        if scheduler in BATCH_SCHEDULERS:
            batch_cluster_class(scheduler)  # a missing dask-jobqueue is refused here, not at the first task
        self._stack = contextlib.ExitStack()
        self._client = None

    @property
    def started(self) -> bool:
        """Whether the cluster has been started."""
        return self._client is not None

    def client(self):
        """The ``dask.distributed.Client``, starting the cluster on first use."""
        if self._client is None:
            from distributed import Client

            cluster = self._stack.enter_context(_started_cluster(*self._spec))
            self._client = self._stack.enter_context(Client(cluster))
        return self._client

    def submit(self, *args, **kwargs):
        """``Client.submit``, starting the cluster on the first call."""
        return self.client().submit(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.client(), name)

    def __enter__(self) -> "LazyCluster":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


@contextlib.contextmanager
def _started_cluster(workers: int, scheduler: str, retries: int):
    """A LocalCluster or dask-jobqueue cluster whose scheduler allows ``retries`` worker deaths."""
    import dask

    # Import dask_jobqueue first: it adds its defaults to Dask's config, which must outlive the
    # temporary settings below (the cluster reads them again when it scales and closes).
    cluster_class = batch_cluster_class(scheduler) if scheduler in BATCH_SCHEDULERS else None
    # Both are read when the scheduler starts, so set them around construction. A saturation of
    # 1.0 sends a worker only as many tasks as it has threads: tasks queued on a worker that dies
    # would otherwise count that death against them too, and runs are long enough that
    # prefetching the next one saves nothing.
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.scheduler.worker-saturation": 1.0, **QUIET_WORKERS}):
        # cores, memory, queue, walltime of a batch cluster: ~/.config/dask/jobqueue.yaml
        cluster = cluster_class() if cluster_class else _local_cluster(workers)
    try:
        if scheduler in BATCH_SCHEDULERS:
            cluster.scale(n=workers)
        yield cluster
    finally:
        cluster.close()


def _local_cluster(workers: int):
    from distributed import LocalCluster

    try:
        import bokeh  # noqa: F401  the dashboard needs it; without it, do not try to serve one
        dashboard = ":0"
    except ImportError:
        dashboard = None
    # One thread per worker process: faster for small models on few cores and the same
    # floating-point order as in-process. OMP_WAIT_POLICY must be set before torch loads.
    # Worker logs are silenced: on a busy machine shutdown prints heartbeat tracebacks into the
    # notebook, and what matters of a worker's death (KilledWorker) is in the run table.
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536; setting any trim threshold turns off
    # glibc's dynamic mmap threshold, so every large tensor is mmap'd and freed again: training in
    # a worker ran much slower than in-process, with many more page faults (benchmarks/README.md).
    # Leave it unset.
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=dashboard, silence_logs=logging.CRITICAL,
                            env={"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})


@contextlib.contextmanager
def local_pool(workers: int, *, retries: int = DEFAULT_RETRIES) -> Iterator[str]:
    """A LocalCluster started once for many grids and notebooks on this machine; yields its address.

    While it runs, ``grid_executor(workers, "")`` with the same ``workers`` and ``retries``, in this
    process and in every process it starts (the kernels of ``python -m analysis_lib report
    --workers N``), connects to it instead of starting a cluster of its own: the pool's start-up and
    each worker's first imports of torch and ``analysis_lib`` are paid once, not once per grid.
    Results do not depend on it (every run sets its own torch threads).
    """
    check_executor_parameters(workers, "local", retries)
    from distributed import Client

    with _started_cluster(workers, "local", retries) as cluster, Client(cluster) as client:
        client.run(_warm_imports)
        previous = os.environ.get(POOL_ENV)
        os.environ[POOL_ENV] = json.dumps({"address": cluster.scheduler_address, "workers": workers,
                                           "retries": retries})
        try:
            yield cluster.scheduler_address
        finally:
            if previous is None:
                os.environ.pop(POOL_ENV, None)
            else:
                os.environ[POOL_ENV] = previous


def _pool_address(workers: int, retries: int) -> str | None:
    """The address of a running :func:`local_pool` of this size, if one was announced to this process."""
    try:
        pool = json.loads(os.environ.get(POOL_ENV, ""))
    except json.JSONDecodeError:
        return None
    if isinstance(pool, dict) and pool.get("workers") == workers and pool.get("retries") == retries:
        return pool.get("address")
    return None


def _warm_imports() -> None:
    import torch  # noqa: F401  what every run's first task would otherwise wait for

    import analysis_lib.runs.execute  # noqa: F401
    import analysis_lib.training.loop  # noqa: F401


def batch_cluster_class(scheduler: str):
    """``dask_jobqueue.SLURMCluster`` or ``PBSCluster``; ConfigError when dask-jobqueue is missing."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError(f"invalid parameter scheduler={scheduler!r}: needs dask-jobqueue, "
                          "install it with pip install 'analysis_lib[cluster]'") from exc
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[scheduler]


def _worker_init() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def local_executor(workers: int = 1):
    """``None`` (in-process) for one worker, else a process pool of ``workers`` one-thread processes.

    Processes are started with ``spawn`` so no OpenMP or torch state is inherited from the parent.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"invalid parameter workers={workers!r}: must be an integer >= 1")
    if workers == 1:
        yield None
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
        yield pool


def as_completed(futures: Iterable) -> Iterator:
    """Yield ``futures`` as they finish (Dask or concurrent.futures), else in submission order.

    Collecting in completion order means a client interrupted mid-grid has already stored
    every run that finished before the interruption.
    """
    futures = list(futures)
    if futures and isinstance(futures[0], concurrent.futures.Future):
        return concurrent.futures.as_completed(futures)
    if futures and type(futures[0]).__module__.startswith("distributed"):
        from distributed import as_completed as dask_as_completed

        return iter(dask_as_completed(futures))
    return iter(futures)


@contextlib.contextmanager
def shared_store_marker(root: Path):
    """A file in the run store that tasks look for to learn whether they see the client's store.

    Workers that see it (same machine or shared filesystem) store their runs themselves;
    workers that do not return the run and the client stores it.

    Returns:
        Context manager yielding the marker's absolute path as a string; removed on exit.
    """
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f".client-{uuid.uuid4().hex[:12]}"
    marker.write_text("run_grid in progress: workers that see this file write runs here\n")
    try:
        yield str(marker)
    finally:
        marker.unlink(missing_ok=True)
