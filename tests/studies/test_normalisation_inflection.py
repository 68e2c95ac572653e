"""Tests of study 08's protocol (analysis_lib.studies.normalisation_inflection) on hand-made run tables.

Runs whose block variances grow as exp(a·l) give the slope a; block gradient norms built from known
per-parameter norms give the first/last log ratio; a loss series with planted jumps gives the spike count
computed here by hand; the verdict rules read yes / no / not tested as fixed in advance; bad study
parameters are refused with a ConfigError naming them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_lib import LMRunConfig, config_from_dict, expand_grid
from analysis_lib.studies import normalisation_inflection as study
from analysis_lib.validation import ConfigError

N_BLOCKS, STEPS = 4, 100
PROBED = [25, 50, 75, 100]


def _run(rid: str, norm: str, seed: int, *, slope: float, grad_first: float, spikes: tuple = (),
         massive: float = 5.0) -> pd.DataFrame:
    """Tidy metrics: Var(h_l) = exp(slope·l + seed noise-free), two parameters per block, batch loss 1..STEPS."""
    rows = []
    for step in PROBED:
        for b in range(N_BLOCKS):
            rows.append((step, f"blocks.{b}", "hidden_variance", math.exp(0.3 + slope * b)))
            rows.append((step, f"blocks.{b}", "massive_ratio", massive if b == 1 else 2.0))
            g = grad_first if b == 0 else 1.0  # block gradient norm: sqrt(2) * g from two parameters of norm g
            rows.append((step, f"blocks.{b}.attn.q", "grad_norm", g))
            rows.append((step, f"blocks.{b}.mlp.up", "grad_norm", g))
        rows.append((step, "model", "grad_norm", 99.0))  # the whole model: not a block parameter
    for step in range(1, STEPS + 1):
        rows.append((step, "model", "batch_loss", 5.0 if step in spikes else 1.0))
    df = pd.DataFrame(rows, columns=["step", "layer", "metric", "value"])
    return df.assign(run_id=rid, norm=norm, seed=seed)


def _metrics(pre_slope=(0.5, 0.6), post_first=(0.1, 0.2), peri_slope=(0.0, 0.05), spikes_pre=((10, 40), (50,))):
    runs, norms = [], {}
    for seed in (0, 1):
        spec = {"pre": dict(slope=pre_slope[seed], grad_first=1.0, spikes=spikes_pre[seed]),
                "post": dict(slope=0.0, grad_first=post_first[seed]),
                "peri": dict(slope=peri_slope[seed], grad_first=1.0)}
        for norm, kw in spec.items():
            rid = f"{norm}{seed}"
            norms[rid] = norm
            runs.append(_run(rid, norm, seed, **kw))
    return pd.concat(runs, ignore_index=True), pd.Series(norms), pd.Series({r: STEPS for r in norms})


def test_variance_slope_is_the_least_squares_slope_of_log_variance():
    table = pd.DataFrame({"block": [0, 1, 2, 3], "value": np.exp([0.0, 0.5, 1.5, 1.0])})
    x, y = np.arange(4.0), np.array([0.0, 0.5, 1.5, 1.0])
    expected = np.polyfit(x, y, 1)[0]
    assert study.variance_slope(table) == pytest.approx(expected, rel=1e-12)


def test_count_spikes_against_a_hand_count():
    losses = np.ones(30)
    losses[[3, 12, 20]] = [9.0, 2.5, 1.9]  # 3 lies in the first window, 1.9 < 2 x median
    assert study.count_spikes(losses, 2.0, 5) == 1
    assert study.count_spikes(losses, 1.5, 5) == 2


def test_probed_steps_choices():
    steps = np.array([0, 25, 50, 75, 100])
    assert list(study.probed_steps(steps, "late", 100)) == [75, 100]
    assert list(study.probed_steps(steps, "all", 100)) == [25, 50, 75, 100]
    assert list(study.probed_steps(steps, "last", 100)) == [100]


def test_run_summary_reads_slope_gradient_ratio_spikes_and_massive_ratio():
    run = _run("r", "pre", 0, slope=0.7, grad_first=0.25, spikes=(5, 30, 60), massive=42.0)
    out = study.run_summary(run, STEPS, steps="late", spike_factor=2.0, spike_window=10)
    assert out["variance_slope"] == pytest.approx(0.7, rel=1e-12)
    # block norms sqrt(2)*0.25 and sqrt(2)*1: their log ratio is log 0.25 whatever the model row says
    assert out["grad_log_ratio"] == pytest.approx(math.log(0.25), rel=1e-12)
    assert out["spikes"] == 2.0  # step 5 lies in the first window
    assert out["massive_max"] == 42.0


def test_verdicts_on_hand_made_runs():
    metrics, norms, steps = _metrics()
    summary = study.summary_table(metrics, norms, steps, steps="late", spike_factor=2.0, spike_window=10)
    rows = {r["claim"]: r for r in study.verdict_rows(summary, study.norm_tests(summary, n_boot=100),
                                                      massive_bar=100.0)}
    pre = rows["With Pre-LN the variance of the hidden states grows with depth"]
    # slopes 0.5, 0.6: mean 0.55, sd 0.0707, t interval 0.55 +- 12.706 * 0.05
    half = 12.7062047361747 * 0.05
    assert pre["measured"].startswith(f"slope of log Var(h_l) per block = 0.55 [{0.55 - half:.3g}, {0.55 + half:.3g}]")
    assert pre["reproduced"] == "inconclusive"  # the interval crosses 0 at n = 2
    post = rows["With Post-LN the gradients of early layers shrink"]
    assert post["n"] == 2 and "-1.96" in post["measured"]  # mean of log 0.1 and log 0.2
    massive = rows["Massive activations appear at this size"]
    assert massive["reproduced"] == "no" and "largest ratio 5" in massive["measured"]
    assert all(r["reproduced"] == "not tested" for c, r in rows.items() if "claim 15" in r["source"])


def test_one_sample_rule_reads_yes_and_no_and_not_tested():
    yes = study.one_sample_row("c", pd.Series([1.0, 1.1, 0.9, 1.05, 0.95]), "x", "positive")
    assert yes["reproduced"] == "yes"
    no = study.one_sample_row("c", pd.Series([1.0, 1.1, 0.9, 1.05, 0.95]), "x", "negative")
    assert no["reproduced"] == "no"
    assert study.one_sample_row("c", pd.Series([1.0, np.nan]), "x", "positive")["reproduced"] == "not tested"


def test_balance_row_combines_the_two_contrasts():
    row = lambda v: {"reproduced": v, "measured": v, "n": 3}  # noqa: E731
    assert study.balance_row(row("yes"), row("yes"))["reproduced"] == "yes"
    assert study.balance_row(row("yes"), row("no"))["reproduced"] == "partly"
    assert study.balance_row(row("no"), row("inconclusive"))["reproduced"] == "no"
    assert study.balance_row(row("inconclusive"), row("inconclusive"))["reproduced"] == "inconclusive"
    assert study.balance_row(row("yes"), row("not tested"))["reproduced"] == "not tested"


def _configs(**model):
    base = config_from_dict({"task": {"n_digits": 1, "n_train": 20, "n_test": 5},
                             "model": {"n_layers": 3, "d_model": 8, "n_heads": 2, "d_mlp": 8, **model},
                             "train": {"steps": 30},
                             "probes": {"names": ["eval", "activation_stats", "grad_norm"]}}, LMRunConfig)
    return expand_grid(base, ARMS, [0])


ARMS = {"norm": {"model.norm": ["pre", "post", "peri"]}}
GOOD = dict(steps="late", spike_factor=2.0, spike_window=10, massive_bar=100.0, n_boot=10)


@pytest.mark.parametrize("name, value", [("steps", "first"), ("spike_factor", 1.0), ("spike_window", 0),
                                         ("massive_bar", -1.0), ("n_boot", 0), ("spike_window", 30)])
def test_check_parameters_refuses_bad_values(name, value):
    with pytest.raises(ConfigError, match=name):
        study.check_parameters(_configs(), ARMS, **{**GOOD, name: value})


def test_check_parameters_refuses_missing_arm_depth_and_probes():
    study.check_parameters(_configs(), ARMS, **GOOD)
    with pytest.raises(ConfigError, match="arms"):
        study.check_parameters(_configs(), {"norm": {"model.norm": ["pre", "post"]}}, **GOOD)
    with pytest.raises(ConfigError, match="model.n_layers"):
        study.check_parameters(_configs(n_layers=1), ARMS, **GOOD)
    configs = [c.__class__(**{**c.__dict__, "probes": c.probes.__class__(names=("eval",))}) for c in _configs()]
    with pytest.raises(ConfigError, match="probes.names"):
        study.check_parameters(configs, ARMS, **GOOD)
