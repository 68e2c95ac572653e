"""What every figure shares: the 95% bootstrap band of a mean over seeds, and the house rules.

Plotters (``plot_*``) take a tidy DataFrame first and return a Figure; they select and draw,
never compute a statistic beyond a mean and this band, and never read files. Bands are the same
percentile bootstrap the test tables use (:func:`analysis_lib.stats.effects.bootstrap_ci`),
seeded, so a figure repeats exactly.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Sequence

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


# Axis labels in words (and units where the quantity has them). A loss's unit depends on the loss
# (nats for cross-entropy: `LossSpec.unit`), so plotters that draw losses take `loss_unit`.
LABELS = {
    "loss": "loss", "acc": "accuracy", "barrier": "loss barrier",
    "lambda_max": "λ_max, top Hessian eigenvalue", "hessian_trace": "tr H, Hessian trace",
    "train_loss": "training loss", "test_loss": "test loss", "batch_loss": "mini-batch loss",
    "train_acc": "training accuracy", "test_acc": "test accuracy",
    "grad_norm": "gradient norm ‖g‖₂", "weight_norm": "weight norm ‖θ‖₂",
    "update_ratio": "update-to-weight ratio ‖Δθ‖ / ‖θ‖", "rotation": "layer rotation (cosine distance from init)",
    "dist_init": "distance from initialisation ‖θ − θ₀‖", "grad_overlap": "gradient share in the top-k eigenspace",
    "grad_snr": "gradient signal-to-noise ratio",
}


def axis_label(metric: str, loss_unit: str | None = None) -> str:
    """Words for a metric's axis (``"lambda_max"`` -> ``"λ_max, top Hessian eigenvalue"``); the name otherwise.

    A loss (``loss``, ``train_loss``, ``barrier``, ...) gets ``loss_unit`` in brackets when given:
    ``axis_label("test_loss", "nats")`` -> ``"test loss (nats)"``.
    """
    label = LABELS.get(metric, metric.replace("_", " "))
    is_loss = metric.endswith("loss") or metric == "barrier"
    return f"{label} ({loss_unit})" if loss_unit and is_loss else label


class NoData(ValueError):
    """A figure's data has no rows to draw (e.g. every run diverged before the metric was recorded)."""


def require_metric(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric``; :class:`NoData` listing the metrics present when there are none."""
    sub = df[df["metric"] == metric] if "metric" in df else df.iloc[0:0]
    if sub.empty:
        present = sorted(df["metric"].unique()) if "metric" in df else []
        raise NoData(f"no rows with metric={metric!r}; available: {present}")
    return sub


def note_figure(message: str):
    """A small figure that says why there is nothing to draw (instead of a blank or a crash)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, f"Nothing to draw: {message}", ha="center", va="center", wrap=True, fontsize=10)
    return fig


def or_note(plot: Callable) -> Callable:
    """Make a plotter return :func:`note_figure` when its data is empty, so a study with no data goes on.

    The note names what is missing and the metrics present, and a ``UserWarning`` says the same
    (a misspelt metric shows up there too, never as a silently blank panel).
    """
    @functools.wraps(plot)
    def wrapper(df, *args, **kwargs):
        try:
            if isinstance(df, pd.DataFrame) and df.empty:
                raise NoData("no rows")
            return plot(df, *args, **kwargs)
        except NoData as empty:
            message = f"{empty} (did every run diverge or fail?)"
            warnings.warn(f"{plot.__name__}: {message}", UserWarning, stacklevel=2)
            return note_figure(message)
    return wrapper
