"""Study 09's measurements at the solution: the sharpness battery per run (cached) and the test error."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...runs.analyses import finished_runs
from ...runs.derived import Analysis, derive
from ...stats.reductions import final_values
from .protocol import RADIUS_MEASURES, SINGLE_MEASURES, measure_names

BATTERY = Analysis("sharpness_battery", "analysis_lib.studies.sharpness_generalisation.measures:battery_task",
                   version=1)
BATTERY_COLUMNS = ["run_id", "seed", "measure", "rho", "value", "ci_low", "ci_high", "base_loss"]


def battery_task(runs, run_ids: Sequence[str], *, rhos: list[float], ascent_steps: int, n_directions: int,
                 samples: int, seed: int = 0) -> pd.DataFrame:
    """Every sharpness measure at each run's final weights, on its first ``samples`` training examples.

    Args:
        runs: the task's :class:`~analysis_lib.runs.grid.GridResult`. run_ids: its runs.
        rhos: the measuring radii. ascent_steps: the multi-step ascent's steps (the one-step
            ascent is always taken). n_directions: of the average sharpness. samples: the first
            ``samples`` training examples (0: all). seed: of random starts and directions.

    Returns:
        :data:`BATTERY_COLUMNS`: ``measure`` a name of
        :func:`~analysis_lib.studies.sharpness_generalisation.protocol.measure_names`, ``rho``
        NaN for λ_max and the trace.
    """
    from ...curvature.sharpness import sharpness_battery
    from ...training.problem import final_models

    rows = []
    for rid, config, model, problem in final_models(runs, run_ids):
        x, y = problem.splits["train"]
        data = (x, y) if samples == 0 else (x[:samples], y[:samples])
        table = sharpness_battery(model, problem.loss_fn, data, rho=list(rhos), steps=(1, ascent_steps),
                                  n_directions=n_directions, seed=seed)
        for row in table.itertuples(index=False):
            name = row.measure if row.measure not in RADIUS_MEASURES else f"{row.measure}_{int(row.steps)}step"
            rows.append({"run_id": rid, "seed": config.seed, "measure": name,
                         "rho": np.nan if row.measure in SINGLE_MEASURES else float(row.rho), "value": float(row.value),
                         "ci_low": float(row.ci_low), "ci_high": float(row.ci_high), "base_loss": float(row.base_loss)})
    return pd.DataFrame(rows, columns=BATTERY_COLUMNS)


def run_measures(result, *, rhos: Sequence[float], ascent_steps: int, n_directions: int, samples: Sequence[int],
                 executor=None, progress: bool | None = None) -> dict[int, pd.DataFrame]:
    """:func:`battery_task` of every finished run, one cached task per run, for each training-subset size.

    Returns:
        ``samples`` value -> the labelled battery table (empty with :data:`BATTERY_COLUMNS` when
        no run finished).
    """
    ids = finished_runs(result)
    out = {}
    for n in dict.fromkeys(samples):
        params = {"rhos": [float(r) for r in rhos], "ascent_steps": int(ascent_steps),
                  "n_directions": int(n_directions), "samples": int(n)}
        out[n] = (derive(BATTERY, result, [[rid] for rid in ids], params=params, executor=executor, progress=progress)
                  if ids else pd.DataFrame(columns=BATTERY_COLUMNS))
    return out


def final_test_errors(result) -> pd.DataFrame:
    """``run_id, value``: 1 − the final test accuracy of each finished run."""
    finished = set(finished_runs(result))
    final = final_values(result.metrics, ["test_acc"])
    final = final[final["run_id"].isin(finished) & (final["layer"] == "model")]
    return pd.DataFrame({"run_id": final["run_id"].to_numpy(), "value": 1.0 - final["value"].to_numpy()})


def measure_table(battery: pd.DataFrame, errors: pd.DataFrame, runs: pd.DataFrame, *, rho: float,
                  ascent_steps: int) -> pd.DataFrame:
    """Tidy per-run values of every measure at radius ``rho`` and the test error.

    Args:
        battery: a table of :func:`run_measures`. errors: :func:`test_errors`.
        runs: the grid's run table (``run_id``, ``arm`` = the scenario, ``sam_rho``, ``seed``).
        rho: the measuring radius (one of those the battery was taken at). ascent_steps: as run.

    Returns:
        ``run_id, scenario, sam_rho, seed, layer ("model"), metric, value``; ``metric`` is
        ``test_error`` or a measure name; rows in display order.
    """
    cols = ["run_id", "scenario", "sam_rho", "seed", "layer", "metric", "value"]
    labels = runs.drop_duplicates("run_id").set_index("run_id")[["arm", "sam_rho", "seed"]].rename(
        columns={"arm": "scenario"})
    at_rho = battery[battery["rho"].isna() | np.isclose(battery["rho"].astype(float), rho)]
    parts = [errors.assign(metric="test_error"),
             at_rho[["run_id", "measure", "value"]].rename(columns={"measure": "metric"})]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if table is None:
        return pd.DataFrame(columns=cols)
    table = table.join(labels, on="run_id").assign(layer="model")
    order = {m: i for i, m in enumerate(["test_error", *measure_names(ascent_steps)])}
    table = table.assign(_order=table["metric"].map(order)).sort_values(["_order", "scenario", "sam_rho", "seed"],
                                                                          kind="stable")
    return table[cols].reset_index(drop=True).astype({"value": np.float64, "sam_rho": np.float64})


def wide_table(measures: pd.DataFrame) -> pd.DataFrame:
    """One row per run (``run_id, scenario, sam_rho, seed``), one column per metric."""
    if measures.empty:
        return pd.DataFrame(columns=["run_id", "scenario", "sam_rho", "seed"])
    wide = measures.pivot_table(index=["run_id", "scenario", "sam_rho", "seed"], columns="metric", values="value",
                                sort=False)
    return wide.reset_index().rename_axis(columns=None)
