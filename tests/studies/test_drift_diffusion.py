"""Tests of analysis_lib.studies.drift_diffusion: rules on hand-made tables, information of stored trajectories.

The information plane of stored trajectories is checked against a direct float64 forward pass; and the
parameter checks name the bad parameter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_lib.runs.execute import run_grid
from analysis_lib.stats.information import information_plane
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import drift_diffusion as study
from analysis_lib.validation import ConfigError

STEPS = [0, 10, 20, 30, 40]


def _metrics(curves: dict, acc: dict) -> pd.DataFrame:
    """Tidy metrics: curves {(activation, seed): {layer: snr list}}, acc {(activation, seed): train_acc list}."""
    rows = []
    for (activation, seed), layers in curves.items():
        rid = f"{activation}{seed}"
        for layer, values in layers.items():
            rows += [(rid, activation, seed, s, layer, "grad_snr_mb", v) for s, v in zip(STEPS, values)]
        rows += [(rid, activation, seed, s, "model", "train_acc", v) for s, v in zip(STEPS, acc[(activation, seed)])]
    return pd.DataFrame(rows, columns=["run_id", "activation", "seed", "step", "layer", "metric", "value"])


DROP = [3.0, 2.0, 0.5, 0.4, 0.3]  # switch at step 20
FLAT = [3.0, 3.0, 3.0, 3.0, 3.0]  # no switch
ACC = [0.5, 0.8, 0.95, 0.99, 1.0]  # error 0.05 at step 20


def test_switch_table_reads_the_switch_and_the_error_there():
    metrics = _metrics({("tanh", 0): {"fc1": DROP, "model": DROP}, ("tanh", 1): {"fc1": FLAT, "model": DROP}},
                       {("tanh", 0): ACC, ("tanh", 1): ACC})
    table = study.switch_table(metrics, threshold=1.0, window=1).set_index(["run_id", "layer"])
    assert table.loc[("tanh0", "fc1"), "switch_step"] == 20.0
    assert table.loc[("tanh0", "fc1"), "error_at_switch"] == pytest.approx(0.05, abs=1e-12)
    assert np.isnan(table.loc[("tanh1", "fc1"), "switch_step"]) and table.loc[("tanh1", "fc1"), "switched"] == 0.0
    assert np.isnan(table.loc[("tanh1", "fc1"), "error_at_switch"])


def _compression(deltas: dict) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": f"{a}{s}", "activation": a, "seed": s, "bins": b, "delta_I_XT": d}
                         for (a, b), values in deltas.items() for s, d in enumerate(values)])


def test_verdict_rows_on_hand_made_tables():
    curves = {("tanh", s): {"fc1": DROP, "out": DROP, "model": DROP} for s in range(4)}
    metrics = _metrics(curves, {k: ACC for k in curves})
    switches = study.switch_table(metrics, threshold=1.0, window=1)
    compression = _compression({("tanh", 30): [0.3, 0.4, 0.5, 0.35], ("relu", 30): [-0.3, -0.2, -0.4, -0.25],
                                ("tanh", 10): [0.2, 0.3, 0.25, 0.3], ("relu", 10): [-0.1, -0.2, -0.3, -0.1]})
    rows = {r["claim"]: r for r in study.verdict_rows(switches, compression, threshold=1.0, small_error=0.1,
                                                      protocol_bins=30, n_boot=500)}
    phase = rows["Per-layer mini-batch gradient SNR is high early (≥ 1) and falls below 1 later"]
    assert phase["reproduced"] == "yes" and phase["n"] == 8
    assert rows["... after the training error is small"]["reproduced"] == "yes"
    assert study.verdict_rows(switches, compression, threshold=1.0, small_error=0.01, protocol_bins=30,
                              n_boot=500)[1]["reproduced"] == "no"  # error 0.05 at every switch
    assert rows["The information plane shows compression in the second phase (tanh)"]["reproduced"] == "yes"
    assert rows["The information plane shows compression in the second phase (relu)"]["reproduced"] == "no"
    robust = rows["Compression is robust across activation × bin count × seed"]
    assert robust["reproduced"] == "partly" and robust["n"] == 4
    noise = rows["Per-layer gradient noise shows the phase of training (SNR above, then below 1)"]
    assert noise["reproduced"] == phase["reproduced"] and noise["measured"] == phase["measured"]
    verdict_table(list(rows.values()))  # well-formed rows


def test_verdict_rows_without_switches_or_runs():
    curves = {("relu", s): {"fc1": FLAT, "model": FLAT} for s in range(3)}
    switches = study.switch_table(_metrics(curves, {k: ACC for k in curves}), threshold=1.0, window=1)
    rows = study.verdict_rows(switches, study.compression_table(pd.DataFrame(
        columns=["run_id", "step", "layer", "bins", "I_XT", "I_TY"]), switches), threshold=1.0, small_error=0.1,
        protocol_bins=30, n_boot=100)
    assert [r["reproduced"] for r in rows] == ["no", "not tested", "not tested", "no"]
    empty = study.switch_table(_metrics({}, {}), threshold=1.0, window=1)
    rows = study.verdict_rows(empty, study.compression_table(pd.DataFrame(
        columns=["run_id", "step", "layer", "bins", "I_XT", "I_TY"]), empty), threshold=1.0, small_error=0.1,
        protocol_bins=30, n_boot=100)
    assert {r["reproduced"] for r in rows} == {"not tested"}


def test_compression_is_read_from_the_model_switch_to_the_last_step():
    curves = {("tanh", 0): {"fc1": DROP, "model": DROP}}
    switches = study.switch_table(_metrics(curves, {("tanh", 0): ACC}), threshold=1.0, window=1)
    info = pd.DataFrame([("tanh0", s, layer, 30, i_xt, 0.0) for layer, values in
                         {"fc1": [1, 3, 5, 4, 3.5], "fc2": [1, 2, 2, 2, 1.0]}.items()
                         for s, i_xt in zip(STEPS, values)],
                        columns=["run_id", "step", "layer", "bins", "I_XT", "I_TY"])
    got = study.compression_table(info, switches)
    assert got["delta_I_XT"].tolist() == [pytest.approx(((5 - 3.5) + (2 - 1)) / 2)]


def _configs(**probes):
    return study.phase_configs(
        {"name": "gaussian_mixture", "n_classes": 2, "n_features": 4, "noise": 1.0, "n_train": 60, "n_test": 20},
        {"kind": "mlp", "depth": 2, "width": 3}, {"optimizer": "sgd", "lr": 0.1, "batch_size": 10, "steps": 6},
        {"names": ["eval", "gradient_snr", "weights"], "schedule": "every", "every": 3, "snr_batches": 3,
         "snr_batch_size": 10, **probes}, ["tanh", "relu"], [0])


def test_information_of_stored_trajectories_equals_a_direct_computation(tmp_path):
    result = run_grid(_configs(), store_root=str(tmp_path / "runs"), progress=False)
    rids = list(result.runs["run_id"])
    info = study.information_table(result, rids, bins=[5, 30], info_samples=40)
    assert set(info["step"]) == {0, 3, 6} and set(info["layer"]) == {"fc1", "fc2"} and len(info) == 2 * 3 * 2 * 2
    rid = rids[0]
    model = result.model(rid)  # the final weights, built independently of the trajectory
    data = result.configs[rid].dataset()
    x = data.x_train[:40].double()
    w = {k: v.double() for k, v in model.state_dict().items()}
    act = torch.tanh if result.configs[rid].model.activation == "tanh" else torch.relu
    h1 = act(x @ w["fc1.weight"].T + w["fc1.bias"])
    h2 = act(h1 @ w["fc2.weight"].T + w["fc2.bias"])
    last = info[(info["run_id"] == rid) & (info["step"] == 6)].set_index(["layer", "bins"])
    for layer, t in (("fc1", h1), ("fc2", h2)):
        for b in (5, 30):
            expected = information_plane(t.numpy(), data.y_train[:40].numpy(), b)
            assert last.loc[(layer, b), "I_XT"] == pytest.approx(expected["I_XT"], abs=1e-9)
            assert last.loc[(layer, b), "I_TY"] == pytest.approx(expected["I_TY"], abs=1e-9)


GOOD = dict(activations=["tanh", "relu"], bins=[10, 30], protocol_bins=30, threshold=1.0, window=3, small_error=0.1,
            info_samples=40, n_boot=100)


@pytest.mark.parametrize("name, value", [("activations", ["sigmoid"]), ("bins", [1, 30]), ("protocol_bins", 100),
                                         ("threshold", 0.0), ("window", 2), ("small_error", 1.5),
                                         ("info_samples", 100), ("n_boot", 0)])
def test_check_parameters_names_the_bad_one(name, value):
    study.check_parameters(_configs(), **GOOD)
    names = {"activations": "phase_activations", "bins": "phase_bins", "protocol_bins": "phase_protocol_bins",
             "threshold": "snr_threshold", "window": "snr_window"}
    with pytest.raises(ConfigError, match=names.get(name, name)):
        study.check_parameters(_configs(), **{**GOOD, name: value})


def test_check_parameters_needs_the_probes_and_mini_batches():
    with pytest.raises(ConfigError, match="phase_probes.names"):
        study.check_parameters(_configs(names=["eval", "weights"]), **GOOD)
    full_batch = [c.__class__(**{**c.__dict__, "train": c.train.__class__(**{**c.train.__dict__, "batch_size": 0})})
                  for c in _configs()]
    with pytest.raises(ConfigError, match="phase_train.batch_size"):
        study.check_parameters(full_batch, **GOOD)


def test_a_blown_up_loss_counts_as_diverged():
    runs = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "status": ["finished", "finished", "diverged", "finished"]})
    loss = [("a", 0, 0.7), ("a", 10, 0.1), ("b", 0, 0.7), ("b", 10, 1e30), ("c", 0, 0.7), ("d", 0, 0.7),
            ("d", 10, float("nan"))]
    metrics = pd.DataFrame([(r, s, "model", "train_loss", v) for r, s, v in loss],
                           columns=["run_id", "step", "layer", "metric", "value"])
    got = study.run_status(runs, metrics)
    assert got["status"].tolist() == ["finished", "diverged", "diverged", "diverged"]
    assert study.status_counts(got) == {"finished": 1, "diverged": 3, "failed": 0}
    assert runs["status"].tolist()[1] == "finished"  # the input is not modified


def test_an_inconclusive_compression_row_says_what_the_design_could_detect():
    curves = {("tanh", s): {"fc1": DROP, "model": DROP} for s in range(4)}
    switches = study.switch_table(_metrics(curves, {k: ACC for k in curves}), threshold=1.0, window=1)
    compression = _compression({("tanh", 30): [0.3, -0.2, 0.1, -0.15]})
    rows = study.verdict_rows(switches, compression, threshold=1.0, small_error=0.1, protocol_bins=30, n_boot=500)
    (tanh,) = [r for r in rows if r["claim"].endswith("(tanh)")]
    assert tanh["reproduced"] == "inconclusive" and tanh["power"].startswith("80% power")
