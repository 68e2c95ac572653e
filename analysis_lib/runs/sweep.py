"""Sweeps without a notebook: a YAML grid -> runs in the store -> a run table and tidy metrics.

A sweep file holds the same shapes :func:`analysis_lib.runs.grid.expand_grid` takes::

    base:                       # shared RunConfig, as nested sections
      data: {name: mnist1d, n_train: 4000, n_test: 1000}
      model: {kind: mlp, depth: 3, width: 64}
      train: {batch_size: 128, steps: 800}
    conditions:                 # dotted keys -> values (or named arms of such mappings)
      train.optimizer: [sgd, adam]
      train.lr: [0.001, 0.01, 0.1]
      model.width: [32, 64, 128]
    seeds: [0, 1, 2, 3, 4]
    store: data/runs            # optional; default data/runs (or $ANALYSIS_LIB_DATA/runs)
    workers: 2                  # optional; see analysis_lib.runs.executors.grid_executor
    scheduler: ""               # optional; '' | tcp://host:8786 | slurm | pbs
    output: sweep.parquet       # optional; tidy metrics of every complete run

Run it with ``python -m analysis_lib sweep grid.yaml``; the same command resumes an interrupted
sweep, reusing every finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..validation import ConfigError, read_yaml
from .execute import run_grid
from .executors import check_executor_parameters, grid_executor
from .grid import GridResult, expand_grid

REQUIRED = ("base", "conditions", "seeds")
OPTIONAL = {"store": None, "workers": 1, "scheduler": "", "output": "sweep.parquet"}


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read and validate a sweep file; fill in the optional keys.

    Args:
        path: the YAML sweep file.

    Returns:
        The sweep as a dict with every key of REQUIRED and OPTIONAL.

    Raises:
        ConfigError: missing file, invalid YAML, a missing or unknown key, or a value
            ``expand_grid`` or the executor rejects; the message names the file and the key.
    """
    path = Path(path)
    spec = read_yaml(path, f"invalid sweep file {str(path)!r}")
    if not isinstance(spec, dict):
        raise ConfigError(f"invalid sweep file {str(path)!r}: must be a mapping with keys "
                          f"{', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)})")
    missing = [k for k in REQUIRED if k not in spec]
    unknown = sorted(set(spec) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise ConfigError(f"invalid sweep file {str(path)!r}: missing keys {missing}, unknown keys "
                          f"{unknown}; allowed: {', '.join(REQUIRED + tuple(OPTIONAL))}")
    spec = {**OPTIONAL, **spec}
    check_executor_parameters(spec["workers"], spec["scheduler"])
    return spec


def run_sweep(spec: dict[str, Any], *, progress: bool | None = None, force: bool = False) -> GridResult:
    """Expand the sweep's grid (validating it before anything runs) and run it.

    Args:
        spec: from :func:`load_sweep` (command-line overrides already applied).
        progress: progress bar; default on unless in CI. force: recompute stored runs.

    Returns:
        The GridResult; its metrics are also written to ``spec["output"]`` as parquet.
    """
    configs = expand_grid(spec["base"], spec["conditions"], spec["seeds"])
    with grid_executor(spec["workers"], spec["scheduler"]) as executor:
        result = run_grid(configs, store_root=spec["store"], executor=executor,
                          progress=progress, force=force)
    output = Path(spec["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    result.metrics.to_parquet(output, index=False)
    return result


def run_table_text(result: GridResult) -> str:
    """The run table as text: one line per run, then the status counts."""
    columns = [c for c in result.runs.columns if c not in ("error", "diverged_step")]
    table = result.runs[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}")
    counts = ", ".join(f"{n} {status}" for status, n in result.status_counts().items())
    cached = int(result.runs["cached"].sum())
    return f"{table}\n{len(result.runs)} runs: {counts} ({cached} reused from the store)"
