"""The same grid of runs in-process, on a Dask LocalCluster of 1 worker and of 2 workers, and on a warm pool.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/grid_executors.py [--runs 12] [--steps 300]

Each mode starts from an empty run store (nothing reused); the dataset is generated once before
timing. For the LocalClusters, wall time includes starting the cluster and each worker's first
import of torch, which is what a user waits for once per grid. The warm pool
(:func:`analysis_lib.runs.executors.local_pool`, what ``report --workers 2`` starts once for every
study) is started and warmed before its timing; its start-up is printed apart. Results are checked
to be identical across modes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (docs/architecture.md, "Threads")

import pandas as pd  # noqa: E402

from analysis_lib.runs.execute import run_grid  # noqa: E402
from analysis_lib.runs.executors import grid_executor, local_pool  # noqa: E402
from analysis_lib.runs.grid import expand_grid  # noqa: E402
from analysis_lib.training.data import load_dataset  # noqa: E402

BASE = {"data": {"name": "mnist1d", "n_train": 4000, "n_test": 1000},
        "model": {"kind": "mlp", "depth": 3, "width": 64},
        "train": {"batch_size": 128, "steps": 300}, "probes": {"schedule": "every", "every": 40}}
MODES = [("in-process", 1, ""), ("LocalCluster, 1 worker", 1, "local"), ("LocalCluster, 2 workers", 2, "")]


def timed_grid(configs, workers: int, scheduler: str, store_root: str) -> dict:
    """Wall seconds (cluster start and close included), mean seconds per run, and the metrics."""
    start = time.perf_counter()
    with grid_executor(workers, scheduler) as executor:
        result = run_grid(configs, store_root=store_root, executor=executor, progress=False)
    return {"wall": time.perf_counter() - start, "per_run": result.runs["seconds"].mean(),
            "metrics": result.metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="runs in the grid (lr x seeds)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    args = parser.parse_args()
    base = {**BASE, "train": {**BASE["train"], "steps": args.steps}}
    configs = expand_grid(base, {"train.lr": [0.01, 0.05]}, list(range(args.runs // 2)))
    load_dataset(configs[0].data)  # generate and cache once, outside the timings
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        timings = {}
        for label, workers, scheduler in MODES:
            timings[label] = timed_grid(configs, workers, scheduler, os.path.join(tmp, label))
        start = time.perf_counter()
        with local_pool(2):
            pool_start = time.perf_counter() - start
            timings["warm pool, 2 workers"] = timed_grid(configs, 2, "", os.path.join(tmp, "pool"))
        for label, t in timings.items():
            pd.testing.assert_frame_equal(timings["in-process"]["metrics"], t["metrics"], check_exact=True)
    print(f"{len(configs)} runs of {args.steps} steps (MLP 40-64-64-64-10, MNIST-1D), "
          f"{os.cpu_count()} cores, load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    base = timings["in-process"]["wall"]
    for label, t in timings.items():
        print(f"  {label:<24} {t['wall']:6.1f} s wall  {t['per_run']:5.2f} s per run  "
              f"speed-up vs in-process {base / t['wall']:4.2f}x")
    print(f"  results identical in every mode; the warm pool took {pool_start:.1f} s to start and warm, once")


if __name__ == "__main__":
    main()
