"""Tests of study 08's claim-15 protocol (analysis_lib.studies.inflection_layers) on hand-made run tables.

Per-block diagnostics built from known attention entropies, activation-gradient and parameter-gradient norms
(only adaptation steps counted) are checked against values computed here; the inflection layer, the rank
correlation and the gaps follow the rule fixed in advance; ΔCKA of a model against itself is 0; the verdict
rows read not tested without runs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis_lib import LMRunConfig, config_from_dict
from analysis_lib.lm.training import build_lm
from analysis_lib.studies import inflection_layers as inf

TRAIN = 50
ENTROPY = [0.9, 0.5, 0.8, 0.3]  # normalised attention entropy per block during adaptation
ACT = [1.0, 2.0, 0.5, 0.25]  # ‖∂L/∂h_l‖ per block: drops log 2, log 0.25, log 0.5 for blocks 1..3
PARAM = [1.0, 0.2, 0.6, 0.4]  # each of two parameters of block l has norm PARAM[l]


def _run() -> pd.DataFrame:
    rows = []
    for step in (40, 60, 70):  # 40 is a pre-training step, with values that must be ignored
        off = 100.0 if step <= TRAIN else 1.0
        for b in range(4):
            rows += [(step, f"blocks.{b}.attn", "attn_entropy_norm", ENTROPY[b] / off),
                     (step, f"blocks.{b}.attn", "attn_entropy_norm.head0", 0.0),
                     (step, f"blocks.{b}", "act_grad_norm", ACT[b] * off),
                     (step, f"blocks.{b}.attn.q", "grad_norm", PARAM[b] * off),
                     (step, f"blocks.{b}.mlp.up", "grad_norm", PARAM[b] * off)]
    return pd.DataFrame(rows, columns=["step", "layer", "metric", "value"])


def test_run_diagnostics_against_hand_values():
    diag = inf.run_diagnostics(_run(), TRAIN).set_index("block")
    np.testing.assert_allclose(diag["saturation"], 1 - np.array(ENTROPY), rtol=1e-12)
    assert math.isnan(diag.loc[0, "act_grad_drop"])
    np.testing.assert_allclose(diag.loc[1:, "act_grad_drop"], np.log(np.array(ACT[1:]) / np.array(ACT[:-1])),
                               rtol=1e-12)
    np.testing.assert_allclose(diag["log_param_grad"], np.log(np.sqrt(2) * np.array(PARAM)), rtol=1e-12)


def test_run_effects_inflection_layer_and_gaps():
    diag = inf.run_diagnostics(_run(), TRAIN).assign(delta_cka=[0.1, 0.05, 0.3, 0.5])
    long = diag.melt(id_vars="block", var_name="metric", value_name="value").assign(
        run_id="r", source_steps=TRAIN, seed=0)
    effects = inf.run_effects(long).set_index("metric")["value"]
    assert effects["inflection_layer"] == 1.0  # largest drop log 2 at block 1
    assert effects["control_layer"] == 2.0  # smallest drop log 0.25 at block 2
    sat, drop = 1 - np.array(ENTROPY[1:]), np.log(np.array(ACT[1:]) / np.array(ACT[:-1]))
    assert effects["saturation_drop_rho"] == pytest.approx(sps.spearmanr(sat, drop)[0], abs=1e-12)
    lg = np.log(np.sqrt(2) * np.array(PARAM))
    assert effects["param_grad_gap"] == pytest.approx(lg[1] - lg[2:].mean(), rel=1e-12)
    assert effects["delta_cka_gap"] == pytest.approx(0.05 - 0.4, rel=1e-12)
    assert effects["max_saturation"] == pytest.approx(0.7, rel=1e-12)


def test_delta_cka_of_unchanged_weights_is_zero():
    config = config_from_dict({"task": {"n_digits": 1, "n_train": 20, "n_test": 8},
                               "model": {"n_layers": 2, "d_model": 8, "n_heads": 2, "d_mlp": 8}}, LMRunConfig)
    state = build_lm(config).state_dict()
    delta = inf.run_delta_cka(config, state, state, 6)
    assert sorted(delta) == [0, 1]
    assert all(abs(v) < 1e-9 for v in delta.values())


def test_verdict_rows_without_runs_are_not_tested():
    empty = inf.run_effects(pd.DataFrame(columns=["run_id", "source_steps", "seed", "block", "metric", "value"]))
    rows = inf.verdict_rows(empty, n_boot=10)
    assert len(rows) == 5 and all(r["reproduced"] == "not tested" for r in rows)
    assert "not run" in rows[-1]["measured"]
