"""What every figure shares: the 95% bootstrap band of a mean over seeds, and the house rules.

Plotters (``plot_*``) take a tidy DataFrame first and return a Figure; they select and draw,
never compute a statistic beyond a mean and this band, and never read files. Bands are the same
percentile bootstrap the test tables use (:func:`analysis_lib.stats.effects.bootstrap_ci`),
seeded, so a figure repeats exactly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..stats.effects import bootstrap_ci

BAND_RESAMPLES = 1000


def ci_band(values) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of ``values`` (seeded; a seaborn ``errorbar``)."""
    return bootstrap_ci(np.asarray(values, dtype=np.float64), n_boot=BAND_RESAMPLES, ci=0.95, seed=0)


def first_seen(values, order=None) -> list:
    """The distinct ``values`` in ``order`` when given (those present), else in order of appearance."""
    present = list(dict.fromkeys(values))
    return present if order is None else [v for v in order if v in set(present)]


def layers_in_order(df: pd.DataFrame, layers: Sequence[str] | None) -> list[str]:
    """Layers in the order they first appear (forward order), without the whole-model row."""
    order = list(dict.fromkeys(df["layer"]))
    return [layer for layer in order if layer != "model"] if layers is None else list(layers)


def require_metric(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric``; ValueError listing the metrics present when there are none."""
    sub = df[df["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no rows with metric={metric!r}; available: {sorted(df['metric'].unique())}")
    return sub
