"""Tests of analysis_lib.plots.stats on small hand-made result tables, drawn with the Agg backend.

plot_effect_sizes: one panel per ``col`` (and ``row``) level, one estimate with its CI per layer (model last),
filled where p_adj < alpha and open otherwise, the dashed zero line and the contrast as x label;
plot_interval_table: one panel per metric, one row per contrast, the dotted null line and the x label. Every
figure is closed.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis_lib.plots import stats as S
from analysis_lib.stats.results import result_table


def _tests(metrics=("loss", "grad_norm"), archs=("mlp",)):
    rows = [dict(metric=m, layer=layer, contrast="adam - sgd", estimate=e, ci_low=e - 0.1, ci_high=e + 0.1,
                 effect_size=1.0, statistic=1.0, pvalue=p, p_adj=p, method="paired t-test, holm", n=5, arch=a)
            for a in archs for m in metrics
            for layer, e, p in (("model", 0.5, 0.01), ("fc1", 0.2, 0.2), ("fc2", -0.3, 0.001))]
    table = result_table(rows)
    table["arch"] = [r["arch"] for r in rows]
    return table


def _points(ax, label):
    (points,) = [c for c in ax.collections if c.get_label() == label]
    return points.get_offsets()


def test_effect_sizes_one_panel_per_metric_with_layers_and_model_last():
    fig = S.plot_effect_sizes(_tests())
    assert [ax.get_title() for ax in fig.axes] == ["loss", "grad_norm"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "adam - sgd"
        assert [t.get_text() for t in ax.get_yticklabels()] == ["fc1", "fc2", "model"]
        significant, open_ = _points(ax, "p_adj < α"), _points(ax, "n.s.")
        assert sorted(significant[:, 0]) == pytest.approx([-0.3, 0.5])  # fc2 and model
        assert list(open_[:, 0]) == pytest.approx([0.2])  # fc1, p_adj = 0.2
        (zero,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert list(zero.get_xdata()) == [0, 0]
        (bars,) = ax.containers
        segments = bars.lines[2][0].get_segments()
        np.testing.assert_allclose([seg[:, 0] for seg in segments], [[0.1, 0.3], [-0.4, -0.2], [0.4, 0.6]])
        assert ax.yaxis_inverted()  # first layer on top


def test_effect_sizes_alpha_decides_what_is_filled():
    fig = S.plot_effect_sizes(_tests(metrics=("loss",)), alpha=0.005)
    (ax,) = fig.axes
    assert list(_points(ax, "p_adj < α")[:, 0]) == pytest.approx([-0.3])
    assert sorted(_points(ax, "n.s.")[:, 0]) == pytest.approx([0.2, 0.5])


def test_effect_sizes_with_rows():
    fig = S.plot_effect_sizes(_tests(archs=("mlp", "cnn")), row="arch")
    assert [ax.get_title() for ax in fig.axes] == ["loss | mlp", "grad_norm | mlp", "loss | cnn", "grad_norm | cnn"]
    assert all(len(ax.get_yticks()) == 3 for ax in fig.axes)


def _intervals():
    rows = [dict(metric=m, layer="all", contrast=c, estimate=e, ci_low=e - 0.1, ci_high=e + 0.1, n=3)
            for m in ("AUROC", "d_z") for c, e in (("irrelevant vs slow", 0.6), ("subtle vs slow", 0.45))]
    return result_table(rows)


def test_interval_table_one_panel_per_metric_with_the_null_line():
    fig = S.plot_interval_table(_intervals(), null=0.5, xlabel="AUROC")
    assert [ax.get_title() for ax in fig.axes] == ["AUROC", "d_z"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "AUROC"
        (null,) = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert list(null.get_xdata()) == [0.5, 0.5]
        (bars,) = ax.containers
        assert list(bars.lines[0].get_xdata()) == pytest.approx([0.6, 0.45])
        assert list(bars.lines[0].get_ydata()) == [0, 1]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["irrelevant vs slow", "subtle vs slow"]
    assert fig.axes[0].yaxis_inverted() and np.allclose(fig.axes[0].get_ylim(), fig.axes[1].get_ylim())
