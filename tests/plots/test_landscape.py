"""Tests of analysis_lib.plots.landscape on small hand-made surface tables, drawn with the Agg backend.

plot_surface_maps: one panel per ``col`` level with α and β axes, the centre (0, 0) marked, one shared colour bar,
and ValueError on two surfaces at one (alpha, beta), an unknown kind or a missing metric. plot_slices,
plot_interpolation and plot_summary_values: panels, lines or dots per panel, their reference lines, and
ValueError when no row qualifies. Every figure is closed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.landscape.surfaces import SURFACE_COLUMNS
from analysis_lib.plots import landscape as L

GRID = np.linspace(-1.0, 1.0, 5)


def _surfaces() -> pd.DataFrame:
    """One 5 × 5 surface per normalisation; loss α² + 2β² (+1 for "layer"), and an accuracy surface."""
    rows = [("r0", 0, a, b, "train", metric, a * a + 2 * b * b + (norm == "layer") if metric == "loss" else 0.5, norm)
            for norm in ("filter", "layer") for a in GRID for b in GRID for metric in ("loss", "acc")]
    return pd.DataFrame(rows, columns=[*SURFACE_COLUMNS, "normalization"])


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _centre(ax) -> list:
    return [line for line in ax.lines if line.get_marker() == "*"]


@pytest.mark.parametrize("kind", ["contour", "filled"])
def test_surface_maps_one_panel_per_level_with_the_centre_marked(kind):
    fig = L.plot_surface_maps(_surfaces(), col="normalization", kind=kind)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["normalization = filter", "normalization = layer"]
    for ax in panels:
        assert ax.get_xlabel() == "α (direction 1)" and ax.get_ylabel() == "β (direction 2)"
        (star,) = _centre(ax)
        assert list(star.get_xdata()) == [0] and list(star.get_ydata()) == [0]
        assert ax.get_xlim()[0] <= -1.0 and ax.get_xlim()[1] >= 1.0
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == "loss"


def test_surface_maps_orient_alpha_along_x():
    # A surface that only depends on α: its contour lines must be vertical (constant x).
    rows = [("r0", 0, a, b, "train", "loss", a) for a in GRID for b in GRID]
    fig = L.plot_surface_maps(pd.DataFrame(rows, columns=SURFACE_COLUMNS), levels=3, vmax=0.5)
    (ax,) = _panels(fig)
    (contours,) = [c for c in ax.collections if hasattr(c, "get_paths") and len(c.get_paths())]
    for path in contours.get_paths():
        xs = path.vertices[:, 0]
        assert len(xs) and np.allclose(xs, xs[0])
    assert fig.axes[-1].get_ylabel() == "loss"


def test_surface_maps_3d_and_log_levels_and_accuracy():
    fig = L.plot_surface_maps(_surfaces()[lambda d: d["normalization"] == "filter"], kind="3d")
    (ax,) = _panels(fig)
    assert ax.name == "3d" and ax.get_zlabel() == "loss" and not _centre(ax)
    fig = L.plot_surface_maps(_surfaces(), col="normalization", log_levels=True, loss_unit="nats")
    assert fig.axes[-1].get_ylabel() == "loss (nats), log-spaced levels"
    fig = L.plot_surface_maps(_surfaces()[lambda d: d["normalization"] == "filter"], metric="acc", levels=3,
                              vmax=1.0)
    assert fig.axes[-1].get_ylabel() == "accuracy" and len(_panels(fig)) == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "several surfaces at the same \\(alpha, beta\\)"),  # both normalisations in one panel
    (dict(col="normalization", kind="surface"), "invalid argument kind='surface'"),
    (dict(col="normalization", metric="error"), "no rows with metric='error'"),
])
def test_surface_maps_refuse_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        L.plot_surface_maps(_surfaces(), **kwargs)


def _curves(ax) -> list:
    return [line for line in ax.lines if len(line.get_xdata()) > 2]


def _vlines(ax) -> list[float]:
    return [line.get_xdata()[0] for line in ax.lines
            if line.get_linestyle() == ":" and list(line.get_ydata()) == [0, 1]]


def test_slices_use_the_beta_zero_rows_one_line_per_hue():
    fig = L.plot_slices(_surfaces(), hue="normalization", logy=True, loss_unit="nats")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "α, step along the direction" and ax.get_ylabel() == "loss (nats)"
    assert ax.get_yscale() == "log"
    lines = _curves(ax)
    assert len(lines) == 2 and all(list(line.get_xdata()) == list(GRID) for line in lines)
    assert sorted(tuple(line.get_ydata()) for line in lines)[0] == pytest.approx(tuple(GRID ** 2))  # β = 0
    assert _vlines(ax) == [0]


def test_slices_panels_and_refusal():
    fig = L.plot_slices(_surfaces(), col="normalization")
    assert [ax.get_title() for ax in fig.axes] == ["normalization = filter", "normalization = layer"]
    assert all(len(_curves(ax)) == 1 for ax in fig.axes)
    with pytest.raises(ValueError, match="no slice rows with metric='acc' and beta == 0"):
        L.plot_slices(_surfaces()[lambda d: d["beta"] != 0], metric="acc")


def _curves_table() -> pd.DataFrame:
    rows = [(pair, alpha, "loss", alpha * (1 - alpha) + 0.1 * pair + (batch == 256), batch)
            for pair in range(3) for alpha in np.linspace(0, 1, 5) for batch in (32, 256)]
    return pd.DataFrame(rows, columns=["pair", "alpha", "metric", "value", "batch"])


def test_interpolation_means_over_pairs_with_the_end_points_marked():
    fig = L.plot_interpolation(_curves_table(), hue="batch", loss_unit="squared error")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "alpha" and ax.get_ylabel() == "loss (squared error)"
    lines = _curves(ax)
    assert len(lines) == 2
    assert sorted(tuple(line.get_ydata()) for line in lines)[0] == pytest.approx(
        tuple(np.linspace(0, 1, 5) * (1 - np.linspace(0, 1, 5)) + 0.1))  # mean over the 3 pairs
    assert sorted(_vlines(ax)) == [0.0, 1.0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["32", "256"]  # levels as categories


def test_interpolation_panels_labels_and_refusal():
    fig = L.plot_interpolation(_curves_table(), col="batch", metric=None, ylabel="barrier")
    assert [ax.get_title() for ax in fig.axes] == ["batch = 32", "batch = 256"]
    assert fig.axes[0].get_ylabel() == "barrier" and all(len(_curves(ax)) == 1 for ax in fig.axes)
    with pytest.raises(ValueError, match="no rows with metric='acc'"):
        L.plot_interpolation(_curves_table(), metric="acc")


def _summaries() -> pd.DataFrame:
    rows = [(f"r{s}-{b}", s, b, norm, "curvature", s + b / 100) for s in range(3) for b in (32, 256)
            for norm in ("filter", "layer")]
    return pd.DataFrame(rows, columns=["run_id", "seed", "batch", "normalization", "metric", "value"])


def test_summary_values_one_dot_per_run_per_panel():
    fig = L.plot_summary_values(_summaries(), x="batch")
    assert [ax.get_title() for ax in fig.axes] == ["normalization = filter", "normalization = layer"]
    assert fig.axes[0].get_xlabel() == "batch" and fig.axes[0].get_ylabel() == "curvature (mean over directions)"
    for ax in fig.axes:
        assert [len(c.get_offsets()) for c in ax.collections] == [3, 3]  # three runs per batch size
        (means,) = [line for line in ax.lines if line.get_marker() == "D"]
        assert list(means.get_ydata()) == pytest.approx([1.32, 3.56])  # mean over seeds of s + b / 100


def test_summary_values_refuse_a_missing_metric():
    with pytest.raises(ValueError, match="no rows with metric='sharpness'"):
        L.plot_summary_values(_summaries(), x="batch", metric="sharpness")


def test_a_panel_off_the_shared_levels_gets_its_own_and_says_so():
    low = _surfaces()[lambda d: d["normalization"] == "filter"]
    high = low.assign(normalization="shifted", value=low["value"] + 100.0)  # all above the shared top level
    fig = L.plot_surface_maps(pd.concat([low, high]), col="normalization")
    titles = [ax.get_title() for ax in _panels(fig)]
    assert "own levels 100–103" in titles[1]  # shared levels would have drawn at most one line on it
    assert all(ax.collections for ax in _panels(fig))  # no blank panel
