"""Tests of analysis_lib.plots.phases on hand-made tables, drawn with the Agg backend.

plot_snr_over_training: one panel per activation, log axes and the dashed threshold; plot_information_plane: one
panel per activation, one line per layer through the seed means of each step; plot_compression: each cell's mean
and CI at its bin count; every plotter draws a note instead of failing on empty input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.plots import phases as P


def _snr():
    rows = [("r", a, s, step, layer, "grad_snr_mb", 3.0 / (1 + step) + 0.1 * s)
            for a in ("tanh", "relu") for s in (0, 1) for step in (0, 10, 100) for layer in ("fc1", "out")]
    return pd.DataFrame(rows, columns=["run_id", "activation", "seed", "step", "layer", "metric", "value"])


def test_snr_over_training_has_a_panel_per_activation_and_the_threshold():
    fig = P.plot_snr_over_training(_snr(), threshold=1.0)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and ax.get_xscale() == "symlog"
        assert any(np.allclose(line.get_ydata(), 1.0) for line in ax.get_lines())


def test_information_plane_draws_the_seed_means():
    info = pd.DataFrame([("r", a, s, step, layer, 30, 1.0 + step + s, 0.5 * step)
                         for a in ("tanh",) for s in (0, 1) for step in (0, 1, 2) for layer in ("fc1", "fc2")],
                        columns=["run_id", "activation", "seed", "step", "layer", "bins", "I_XT", "I_TY"])
    fig = P.plot_information_plane(info, bins=30)
    (ax,) = fig.axes[:1]
    first = ax.get_lines()[0]
    assert first.get_xdata().tolist() == pytest.approx([1.5, 2.5, 3.5])  # mean over seeds 0 and 1
    assert first.get_ydata().tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_compression_cells_and_empty_inputs():
    cells = pd.DataFrame({"activation": ["tanh", "tanh", "relu"], "bins": [10, 30, 10], "mean": [0.3, 0.2, -0.1],
                          "ci_low": [0.1, 0.1, -0.2], "ci_high": [0.5, 0.3, 0.0], "n": [3, 3, 3]})
    fig = P.plot_compression(cells)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["10", "30"]
    for plot, frame in ((P.plot_compression, cells.iloc[:0]), (P.plot_snr_over_training, _snr().iloc[:0])):
        with pytest.warns(UserWarning, match="no rows"):
            assert plot(frame) is not None  # a figure with a note, not an exception
    with pytest.warns(UserWarning, match="no rows"):
        assert P.plot_information_plane(pd.DataFrame(columns=["bins"]), bins=30) is not None
