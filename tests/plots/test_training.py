"""Tests of analysis_lib.plots.training on small hand-made tidy tables, drawn with the Agg backend.

For every plotter, what a reader needs: axis labels, the number of panels and of lines or points per panel, the
reference lines and bands, and the ValueError on a metric the table does not hold. Every figure is closed.
"""

from __future__ import annotations

import pandas as pd
import pytest

from analysis_lib.plots import training as T

LAYERS = ("fc1", "fc2", "out")


def _metrics() -> pd.DataFrame:
    """Two optimisers × three seeds × steps 0, 10, 20; grad_norm per layer and the model, test_acc of the model."""
    rows = []
    for opt in ("sgd", "adam"):
        for seed in range(3):
            for step in (0, 10, 20):
                for i, layer in enumerate((*LAYERS, "model")):
                    rows.append((f"{opt}{seed}", opt, seed, step, layer, "grad_norm",
                                 1.0 + seed + step + i + 5 * (opt == "adam")))
                rows.append((f"{opt}{seed}", opt, seed, step, "model", "test_acc", 0.5 + 0.01 * step + 0.02 * seed))
    return pd.DataFrame(rows, columns=["run_id", "optimizer", "seed", "step", "layer", "metric", "value"])


def _curves(ax) -> list:
    """The data lines of a panel: solid, with points (legend handles have none)."""
    return [line for line in ax.lines if len(line.get_xdata()) > 1 and line.get_linestyle() == "-"]


def test_metric_over_training_has_one_panel_per_layer_and_one_line_per_hue_level():
    fig = T.plot_metric_over_training(_metrics(), "grad_norm", hue="optimizer")
    assert [ax.get_title() for ax in fig.axes] == [f"layer = {layer}" for layer in LAYERS]  # no model panel
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[0].get_ylabel() == "gradient norm ‖g‖₂"
    for ax in fig.axes:
        lines = _curves(ax)
        assert len(lines) == 2 and all(list(line.get_xdata()) == [0, 10, 20] for line in lines)
        assert len(ax.collections) == 2  # one 95% band per line
    fc1 = sorted(line.get_ydata()[0] for line in _curves(fig.axes[0]))
    assert fc1 == pytest.approx([2.0, 7.0])  # mean over seeds at step 0: sgd 1 + 1, adam 1 + 1 + 5
    assert "gradient norm" in fig._suptitle.get_text()


def test_metric_over_training_of_a_whole_model_metric_and_chosen_layers():
    fig = T.plot_metric_over_training(_metrics(), "test_acc", hue="optimizer", logy=True)
    assert [ax.get_title() for ax in fig.axes] == ["layer = model"]
    assert fig.axes[0].get_yscale() == "log" and len(_curves(fig.axes[0])) == 2
    fig = T.plot_metric_over_training(_metrics(), "grad_norm", hue="optimizer", layers=["out", "fc1"])
    assert [ax.get_title() for ax in fig.axes] == ["layer = out", "layer = fc1"]


def test_metric_over_training_with_rows():
    fig = T.plot_metric_over_training(_metrics(), "grad_norm", hue="seed", row="optimizer")
    assert len(fig.axes) == 2 * 3  # optimisers × layers
    assert all(len(_curves(ax)) == 3 for ax in fig.axes)  # one line per seed


def test_layer_profile_puts_layers_on_x_in_forward_order():
    final = _metrics()[lambda d: d["step"] == 20]
    fig = T.plot_layer_profile(final, ["grad_norm"], hue="optimizer", logy=True)
    (ax,) = fig.axes
    assert ax.get_title() == "grad_norm" and ax.get_xlabel() == "layer" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LAYERS)
    points = [line for line in ax.lines if len(line.get_xdata()) == len(LAYERS)]
    assert len(points) == 2  # one line of means per optimiser
    means = sorted(tuple(line.get_ydata()) for line in points)
    assert means[0] == pytest.approx((22.0, 23.0, 24.0))  # sgd: 1 + mean seed 1 + 20 + layer index


def test_layer_profile_has_a_panel_per_metric_and_refuses_a_missing_one():
    final = _metrics()[lambda d: d["step"] == 20]
    final = pd.concat([final, final[final["metric"] == "grad_norm"].assign(metric="update_ratio")])
    fig = T.plot_layer_profile(final, ["grad_norm", "update_ratio"], hue="optimizer")
    assert [ax.get_title() for ax in fig.axes] == ["grad_norm", "update_ratio"]
    with pytest.warns(UserWarning, match="no rows with metric='rotation'"):
        T.plot_layer_profile(final, "rotation", hue="optimizer")


def test_run_values_draws_one_dot_per_run_and_the_band():
    final = _metrics()[lambda d: (d["step"] == 20) & (d["metric"] == "test_acc")]
    fig = T.plot_run_values(final, x="optimizer", ylabel="final test accuracy", band=(0.6, 0.7))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "optimizer" and ax.get_ylabel() == "final test accuracy"
    assert [len(c.get_offsets()) for c in ax.collections] == [3, 3]  # one dot per run, a strip per optimiser
    means = [line for line in ax.lines if line.get_marker() == "D"]
    assert len(means) == 1 and len(means[0].get_xdata()) == 2  # the mean of each optimiser
    (band,) = ax.patches
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((0.6, 0.7))


def test_run_values_per_hue_and_panel_without_a_band():
    final = _metrics()[lambda d: (d["step"] == 20) & (d["layer"] == "model")]
    fig = T.plot_run_values(final, x="optimizer", hue="seed", col="metric")
    assert [ax.get_title() for ax in fig.axes] == ["metric = grad_norm", "metric = test_acc"]
    assert all(not ax.patches for ax in fig.axes)
    assert all(sum(len(c.get_offsets()) for c in ax.collections) == 6 for ax in fig.axes)  # 3 seeds × 2 runs


def test_correlation_is_one_point_per_row():
    final = _metrics()[lambda d: (d["step"] == 20) & (d["metric"] == "test_acc")]
    fig = T.plot_correlation(final, "seed", "value", hue="optimizer")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "seed" and ax.get_ylabel() == "value"
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "adam"]
    assert T.plot_correlation(final, "seed", "value").axes[0].get_legend() is None


def _family() -> pd.DataFrame:
    rows = [(f"r{seed}", seed, step, "model", f"test_seq_acc_{fmt}", 0.01 * step + 0.02 * seed + 0.3 * (fmt == "slow"))
            for fmt in ("fast", "slow") for seed in range(3) for step in (0, 10, 20)]
    other = [("r0", 0, 10, "model", "test_acc", 0.9), ("r0", 0, 10, "fc1", "test_seq_acc_fast", 5.0)]
    return pd.DataFrame(rows + other, columns=["run_id", "seed", "step", "layer", "metric", "value"])


def test_metric_family_draws_a_bold_mean_per_suffix_a_thin_line_per_seed_and_the_vline():
    fig = T.plot_metric_family(_family(), "test_seq_acc_", hue="format", ylabel="exact match", vline=10,
                               vline_text="fine-tuning", ylim=(0, 1))
    (ax,) = fig.axes
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "exact match" and ax.get_ylim() == (0, 1)
    lines = _curves(ax)
    thin = [line for line in lines if line.get_linewidth() < 1]
    bold = [line for line in lines if line.get_linewidth() >= 2]
    assert len(thin) == 2 * 3 and len(bold) == 2  # per suffix and seed; per suffix
    means = sorted(tuple(line.get_ydata()) for line in bold)
    assert means[0] == pytest.approx((0.02, 0.12, 0.22))  # fast: mean over seeds (the fc1 row is not whole-model)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fast", "slow"]
    assert ax.get_legend().get_title().get_text() == "format"
    (vline,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(vline.get_xdata()) == [10, 10]
    assert [t.get_text() for t in ax.texts] == ["fine-tuning"]


def test_metric_family_without_a_vline():
    fig = T.plot_metric_family(_family(), "test_seq_acc_", hue="format", ylabel="exact match")
    assert not [line for line in fig.axes[0].lines if line.get_linestyle() == "--"] and not fig.axes[0].texts


@pytest.mark.parametrize("plot", [
    lambda df: T.plot_metric_over_training(df, "rotation", hue="optimizer"),
    lambda df: T.plot_layer_profile(df, ["grad_norm", "rotation"], hue="optimizer"),
])
def test_a_missing_metric_is_a_note_and_a_warning_naming_what_is_there(plot):
    with pytest.warns(UserWarning, match="no rows with metric='rotation'; available: \\['grad_norm', 'test_acc'\\]"):
        fig = plot(_metrics())
    assert fig.axes[0].texts[0].get_text().startswith("Nothing to draw")


def test_the_table_is_left_unchanged():
    df = _metrics()
    copy = df.copy()
    T.plot_metric_over_training(df, "grad_norm", hue="optimizer")
    pd.testing.assert_frame_equal(df, copy)
