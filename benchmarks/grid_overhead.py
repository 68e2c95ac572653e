"""The run machinery's own cost on grids of many tiny runs: expanding, hashing, training, reading back.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/grid_overhead.py [--runs 1000 10000]

For each grid size, in a fresh store under a temporary folder: a grid of tiny runs (an MLP of
width 4 on 64 Gaussian-mixture samples, one training step, the ``eval`` probe only) is expanded,
hashed, trained and stored (first time), then read back fully cached in a new process (its peak
resident memory measured alone). Per-run overhead beyond training = (first-time wall − the sum
of the runs' own training seconds from their meta.json) / runs. Prints one table; nothing is
asserted (speed is measured here, never tested).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READ_BACK = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from benchmarks.grid_overhead import tiny_grid
from analysis_lib.runs.execute import run_grid
configs = tiny_grid(int(sys.argv[2]))
t0 = time.perf_counter()
result = run_grid(configs, store_root=sys.argv[1], progress=False)
seconds = time.perf_counter() - t0
assert result.runs["cached"].all(), "not every run was cached"
print(json.dumps({"read": seconds, "rows": len(result.metrics),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def tiny_grid(n: int) -> list:
    """``n`` distinct one-step runs (seeds 0..n-1 of one tiny config)."""
    from analysis_lib.runs.grid import expand_grid

    base = {"data": {"name": "gaussian_mixture", "n_train": 64, "n_test": 32, "n_features": 4, "n_classes": 2},
            "model": {"kind": "mlp", "depth": 1, "width": 4}, "train": {"steps": 1, "batch_size": 0},
            "probes": {"names": ["eval"], "every": 1}}
    return expand_grid(base, {}, seeds=list(range(n)))


def measure(n: int) -> dict:
    """Wall time of each phase for a grid of ``n`` tiny runs, in a fresh store."""
    from analysis_lib.runs.execute import run_grid
    from analysis_lib.runs.store import RunStore, run_id

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs"
        t0 = time.perf_counter()
        configs = tiny_grid(n)
        expand = time.perf_counter() - t0
        t0 = time.perf_counter()
        [run_id(c) for c in configs]
        hashing = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_grid(configs, store_root=str(store), progress=False)
        first = time.perf_counter() - t0
        training = sum(RunStore(store).load_meta(run_id(c))["timings"]["total_seconds"] for c in configs)
        out = subprocess.run([sys.executable, "-c", READ_BACK, str(store), str(n), str(ROOT)], capture_output=True,
                             text=True, check=True, env={**os.environ, "ANALYSIS_LIB_PROGRESS": "0"})
        read = json.loads(out.stdout.strip().splitlines()[-1])
    return {"runs": n, "expand_ms": 1e3 * expand / n, "hash_ms": 1e3 * hashing / n, "first_s": first,
            "training_s": training, "overhead_ms": 1e3 * (first - training) / n, "read_s": read["read"],
            "read_ms": 1e3 * read["read"] / n, "read_peak_mb": read["peak_mb"], "rows": read["rows"]}


def main() -> None:
    """Measure each grid size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000], help="grid sizes (default: 1000)")
    args = parser.parse_args()
    print(f"{'runs':>6} {'expand':>9} {'hash':>9} {'first':>9} {'training':>9} {'overhead':>12} "
          f"{'cached read':>12} {'per run':>9} {'peak RSS':>9} {'rows':>8}")
    for n in args.runs:
        m = measure(n)
        print(f"{m['runs']:>6} {m['expand_ms']:>7.2f}ms {m['hash_ms']:>7.2f}ms {m['first_s']:>8.1f}s "
              f"{m['training_s']:>8.1f}s {m['overhead_ms']:>8.2f}ms/run {m['read_s']:>11.1f}s "
              f"{m['read_ms']:>7.2f}ms {m['read_peak_mb']:>7.0f}MB {m['rows']:>8}", flush=True)


if __name__ == "__main__":
    main()
