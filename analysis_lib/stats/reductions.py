"""Reduce tidy run metrics to the per-run numbers that studies compare.

All functions take and return tidy long tables (``run_id, <conditions>, seed, step, layer,
metric, value``) so their output feeds :mod:`analysis_lib.stats` and :mod:`analysis_lib.plots`.
:func:`last_step` and :func:`final_values` are the one way to take "the end of each run".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def last_step(table: pd.DataFrame, by: str | Sequence[str] = "run_id") -> pd.DataFrame:
    """The rows of ``table`` at the last ``step`` of each group (default: of each run).

    Unlike :func:`final_values`, one step per run for every metric: the state where the run
    ended (its last probed step), e.g. the final spectrum or the final train loss and accuracy.
    """
    keys = [by] if isinstance(by, str) else list(by)
    return table[table["step"] == table.groupby(keys)["step"].transform("max")]


def final_values(metrics: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The last recorded value of every (run, layer, metric); ``step`` keeps where it was taken.

    A diverged run contributes the values from its last step before divergence.
    """
    sub = metrics if names is None else metrics[metrics["metric"].isin(names)]
    last = sub.groupby(["run_id", "layer", "metric"], sort=False)["step"].transform("max")
    return sub[sub["step"] == last].reset_index(drop=True)


def layer_spread(metrics: pd.DataFrame, metric: str, *, log: bool = True) -> pd.DataFrame:
    """Per run and step, the standard deviation across layers of ``metric`` (of log10 when ``log``).

    A measure of how unequal layers are: 0 when every layer has the same value, 1 (with log)
    when they typically differ by a factor of ten. Rows get ``layer = "across layers"`` and
    ``metric = f"{metric} spread"``. Whole-model and per-tensor rows are excluded.
    """
    sub = metrics[(metrics["metric"] == metric) & (metrics["layer"] != "model")]
    values = np.log10(sub["value"]) if log else sub["value"]
    keys = [c for c in sub.columns if c not in ("layer", "value")]
    out = sub.assign(value=values).groupby(keys, sort=False, dropna=False)["value"].std(ddof=1).reset_index()
    out["metric"] = f"{metric} spread" + (" (log10)" if log else "")
    out["layer"] = "across layers"
    return out


def run_table(final: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """One row per run with chosen numbers as columns.

    Args:
        final: output of :func:`final_values`.
        columns: ``{"test_acc": ("test_acc", "model"), "rotation": ("rotation", "mean")}``: a
            (metric, layer) pair, where layer ``"mean"`` averages the metric over layers (not the
            whole-model row).

    Returns:
        ``run_id, <conditions>, seed`` and one column per key of ``columns``.
    """
    id_cols = [c for c in final.columns if c not in ("step", "layer", "metric", "value")]
    out = final[id_cols].drop_duplicates().set_index("run_id")
    for name, (metric, layer) in columns.items():
        sub = final[final["metric"] == metric]
        if layer == "mean":
            sub = sub[sub["layer"] != "model"]
        else:
            sub = sub[sub["layer"] == layer]
        out[name] = sub.groupby("run_id")["value"].mean()
    return out.reset_index()


def mean_over_training(metrics: pd.DataFrame, *, from_step: int = 1) -> pd.DataFrame:
    """Per (run, layer, metric), the mean over probed steps >= ``from_step``; ``step`` becomes the last."""
    sub = metrics[metrics["step"] >= from_step]
    keys = [c for c in sub.columns if c not in ("step", "value")]
    grouped = sub.groupby(keys, sort=False, dropna=False)
    return grouped.agg(step=("step", "max"), value=("value", "mean")).reset_index()[list(metrics.columns)]


def log10_values(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Replace ``value`` by log10(value) for the listed metrics, renamed ``"log10 <metric>"``.

    Norms and ratios span orders of magnitude across layers; differences of logs are ratios.
    """
    hit = metrics["metric"].isin(names)
    out = metrics.copy()
    out.loc[hit, "value"] = np.log10(out.loc[hit, "value"])
    out.loc[hit, "metric"] = "log10 " + out.loc[hit, "metric"]
    return out
