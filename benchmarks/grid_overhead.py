"""The run machinery's own cost on grids of many tiny runs: expanding, hashing, training, reading back.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/grid_overhead.py [--runs 1000 10000]

For each grid size, in a fresh store under a temporary folder: a grid of tiny runs (an MLP of
width 4 on 64 Gaussian-mixture samples, one training step, the ``eval`` probe only) is expanded
(and validated), hashed, trained and stored (first time), then read back fully cached in a new
process, once with every metric and once with one metric (``metrics=["test_loss"]``), each
process's peak resident memory measured alone. Per-run overhead beyond training = (first-time
wall − the sum of the runs' own training seconds from their meta.json) / runs; of it, claiming
and writing a run are timed apart by storing up to 1,000 of the trained runs again into another
store. Prints one table; nothing is asserted (speed is measured here, never tested).
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
result = run_grid(configs, store_root=sys.argv[1], progress=False, metrics=json.loads(sys.argv[4]))
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
        claim, write = store_again(RunStore(store), [run_id(c) for c in configs[:1000]], Path(tmp) / "again")
        read, one = (read_back(store, n, metrics) for metrics in (None, ["test_loss"]))
    return {"runs": n, "expand_ms": 1e3 * expand / n, "hash_ms": 1e3 * hashing / n, "first_s": first,
            "training_s": training, "overhead_ms": 1e3 * (first - training) / n, "claim_ms": claim,
            "write_ms": write, "read_s": read["read"], "read_ms": 1e3 * read["read"] / n,
            "read_peak_mb": read["peak_mb"], "rows": read["rows"], "one_s": one["read"],
            "one_peak_mb": one["peak_mb"], "one_rows": one["rows"]}


def read_back(store: Path, n: int, metrics: list[str] | None) -> dict:
    """Read the cached grid in a fresh process: seconds, peak resident memory, rows."""
    out = subprocess.run([sys.executable, "-c", READ_BACK, str(store), str(n), str(ROOT), json.dumps(metrics)],
                         capture_output=True, text=True, check=True, env={**os.environ, "ANALYSIS_LIB_PROGRESS": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def store_again(store, rids: list[str], root: Path) -> tuple[float, float]:
    """Milliseconds per run to claim, and to write, stored runs again into a fresh store at ``root``."""
    from analysis_lib.runs.store import RunStore

    target, runs = RunStore(root), [(rid, store.load_metrics(rid), store.load_meta(rid)) for rid in rids]
    claim = write = 0.0
    for rid, metrics, meta in runs:
        t0 = time.perf_counter()
        with target.claim(rid):  # acquire and release count as claiming
            t1 = time.perf_counter()
            target.save(rid, metrics, meta)
            t2 = time.perf_counter()
        claim, write = claim + (time.perf_counter() - t2) + (t1 - t0), write + (t2 - t1)
    return 1e3 * claim / len(runs), 1e3 * write / len(runs)


def main() -> None:
    """Measure each grid size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000], help="grid sizes (default: 1000)")
    args = parser.parse_args()
    print(f"{'runs':>6} {'expand':>8} {'hash':>8} {'first':>7} {'training':>8} {'overhead':>12} {'claim':>7} "
          f"{'write':>7} | {'cached read':>11} {'per run':>8} {'peak RSS':>8} {'rows':>7} | {'one metric':>10} "
          f"{'peak RSS':>8} {'rows':>7}")
    for n in args.runs:
        m = measure(n)
        print(f"{m['runs']:>6} {m['expand_ms']:>6.2f}ms {m['hash_ms']:>6.2f}ms {m['first_s']:>6.1f}s "
              f"{m['training_s']:>7.1f}s {m['overhead_ms']:>6.2f}ms/run {m['claim_ms']:>5.2f}ms "
              f"{m['write_ms']:>5.2f}ms | "
              f"{m['read_s']:>10.1f}s {m['read_ms']:>6.2f}ms {m['read_peak_mb']:>6.0f}MB {m['rows']:>7} | "
              f"{m['one_s']:>9.1f}s {m['one_peak_mb']:>6.0f}MB {m['one_rows']:>7}", flush=True)


if __name__ == "__main__":
    main()
