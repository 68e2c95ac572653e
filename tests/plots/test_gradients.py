"""Tests of analysis_lib.plots.gradients on small hand-made tables, drawn with the Agg backend.

plot_layer_profiles and plot_spread: a checkpoint × projection (or measure) grid with one line of means over
seeds per condition; plot_score_distributions: one panel per checkpoint, one box per condition;
plot_gradient_noise: one panel per projection in the given order and one line per layer, splitting full layer
names like blocks.0.attn.q when there is no projection column, the whole-model row left out, the zero line and
the vline. Every figure is closed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_lib.gradients.spread import cross_layer_mad
from analysis_lib.plots import gradients as G

BLOCKS = ("blocks.0", "blocks.1", "blocks.2")


def _means() -> pd.DataFrame:
    """Per-seed means: fast = slow + 1, growing over blocks, three seeds, two checkpoints and reductions."""
    rows = [(f"r{seed}", seed, ck, cond, red, layer, proj, "nuclear_norm",
             1.0 + 0.1 * seed + (cond == "fast") + i + 10 * (red == "sum"))
            for seed in range(3) for ck in ("init", "base") for cond in ("fast", "slow", "subtle")
            for red in ("mean", "sum") for i, layer in enumerate(BLOCKS) for proj in ("q", "up")]
    return pd.DataFrame(rows, columns=["run_id", "seed", "checkpoint", "condition", "reduction", "layer",
                                       "projection", "statistic", "value"])


def _means_of(ax) -> list[tuple]:
    """The y values of each condition's line of means (its errorbar container), in drawing order."""
    return [tuple(container.lines[0].get_ydata()) for container in ax.containers]


def test_layer_profiles_grid_and_lines():
    fig = G.plot_layer_profiles(_means(), "nuclear_norm", conditions=["fast", "slow"])
    assert [ax.get_title() for ax in fig.axes] == ["init | q", "init | up", "base | q", "base | up"]
    assert fig.axes[0].get_ylabel() == "nuclear norm"
    assert fig._suptitle.get_text() == "nuclear_norm per layer (mean over loss tokens)"
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(BLOCKS)
        assert [c.get_label() for c in ax.containers] == ["fast", "slow"]  # subtle not asked for
        fast, slow = _means_of(ax)
        assert fast == pytest.approx((2.1, 3.1, 4.1)) and slow == pytest.approx((1.1, 2.1, 3.1))
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["fast", "slow"]


def test_layer_profiles_of_the_summed_loss():
    fig = G.plot_layer_profiles(_means(), "nuclear_norm", conditions=["slow"], reduction="sum")
    assert "sum over loss tokens" in fig._suptitle.get_text()
    assert all(_means_of(ax) == [pytest.approx((11.1, 12.1, 13.1))] for ax in fig.axes)


def _spreads() -> pd.DataFrame:
    means = _means()
    keyed = means.assign(example=means.groupby(["run_id", "checkpoint", "condition", "reduction"]).ngroup())
    keys = keyed[["run_id", "seed", "checkpoint", "condition", "reduction", "example"]].drop_duplicates()
    spread = cross_layer_mad(keyed[["example", "layer", "projection", "statistic", "value"]])
    return keys.merge(spread, on="example").drop(columns="example")


def test_spread_grid_one_point_per_projection_and_condition():
    fig = G.plot_spread(_spreads(), "nuclear_norm", conditions=["fast", "slow"])
    assert [ax.get_title() for ax in fig.axes] == ["init | mad", "init | relative_mad", "base | mad",
                                                   "base | relative_mad"]
    assert fig.axes[0].get_ylabel() == "MAD of nuclear norm"
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["q", "up"]
        assert [c.get_label() for c in ax.containers] == ["fast", "slow"]
    assert _means_of(fig.axes[0]) == [pytest.approx((1.0, 1.0)), pytest.approx((1.0, 1.0))]  # steps of 1
    fast_rel, slow_rel = _means_of(fig.axes[1])
    assert fast_rel[0] < slow_rel[0]  # the same MAD over a larger mean


def test_score_distributions_one_box_per_condition_per_checkpoint():
    rows = [("r0", 0, ck, cond, e, e + (cond == "slow")) for ck in ("init", "base")
            for cond in ("slow", "irrelevant", "subtle") for e in range(5)]
    scores = pd.DataFrame(rows, columns=["run_id", "seed", "checkpoint", "condition", "example", "value"])
    fig = G.plot_score_distributions(scores, ylabel="mean log nuclear norm")
    assert [ax.get_title() for ax in fig.axes] == ["init", "base"]
    assert fig.axes[0].get_ylabel() == "mean log nuclear norm"
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["slow", "irrelevant", "subtle"]
        assert len(ax.patches) == 3 and len(ax.containers) == 3  # one box per condition
        medians = [box.medians[0].get_ydata()[0] for box in ax.containers]
        assert medians == [3.0, 2.0, 2.0]  # median of 0..4, + 1 for slow


def _profile() -> pd.DataFrame:
    rows = [(s, f"blocks.{b}", p, 0.1 * s + b, 2) for s in (1, 2, 3) for b in range(2) for p in ("q", "k", "up")]
    return pd.DataFrame(rows, columns=["step", "layer", "projection", "snr", "n"])


def _lines(ax) -> list:
    return [line for line in ax.lines if len(line.get_xdata()) > 2]


def test_gradient_noise_one_panel_per_projection_in_the_given_order():
    fig = G.plot_gradient_noise(_profile(), projections=["up", "q", "v"], vline=2)  # no v rows: no panel
    assert [ax.get_title() for ax in fig.axes] == ["up", "q"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "step" and ax.get_ylabel() == "SNR ‖E g‖² / tr Σ"
        lines = _lines(ax)
        assert len(lines) == 2  # one per block
        assert sorted(line.get_ydata()[0] for line in lines) == pytest.approx([0.1, 1.1])
        (vline,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert list(vline.get_xdata()) == [2, 2]
        (zero,) = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert list(zero.get_ydata()) == [0, 0]
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["blocks.0", "blocks.1"]
    fig = G.plot_gradient_noise(_profile())
    assert [ax.get_title() for ax in fig.axes] == ["q", "k", "up"]  # order of appearance
    assert not [line for ax in fig.axes for line in ax.lines if line.get_linestyle() == "--"]


def test_gradient_noise_splits_full_layer_names_without_a_projection_column():
    rows = [(s, layer, 0.1 * s + i, 2) for s in (1, 2, 3)
            for i, layer in enumerate(("blocks.0.attn.q", "blocks.1.attn.q", "blocks.0.mlp.up", "model"))]
    fig = G.plot_gradient_noise(pd.DataFrame(rows, columns=["step", "layer", "snr", "n"]))
    assert [ax.get_title() for ax in fig.axes] == ["q", "up"]
    assert [len(_lines(ax)) for ax in fig.axes] == [2, 1]  # the model row is left out
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == ["blocks.0"]
    q_levels = sorted(line.get_ydata()[0] for line in _lines(fig.axes[0]))
    assert q_levels == pytest.approx([0.1, 1.1])


def test_gradient_noise_of_an_mlp_is_one_panel_of_its_layers():
    rows = [(s, layer, 0.1 * s * (i + 1), 2) for s in (1, 2, 3) for i, layer in enumerate(("fc1", "fc2", "out",
                                                                                          "model"))]
    fig = G.plot_gradient_noise(pd.DataFrame(rows, columns=["step", "layer", "snr", "n"]))
    (ax,) = fig.axes
    assert ax.get_title() == "weight" and len(_lines(ax)) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fc1", "fc2", "out"]
    assert np.isclose(max(line.get_ydata()[-1] for line in _lines(ax)), 0.9)
