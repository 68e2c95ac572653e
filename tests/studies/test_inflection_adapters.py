"""Tests of claim 15's second stage (analysis_lib.studies.inflection_adapters): LoRA at two blocks.

The config builder turns a hand-made effects table into adapter configs (inflection and control block,
rank, projections, eval probe only, pre-training unchanged); a stage-2 run starts from the stored source's
base weights and changes only its adapted block; the verdict rule on hand-made outcome tables gives yes,
no, inconclusive and not tested, with the estimate and p-value recomputed here by brute force.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from analysis_lib import LMRunConfig, config_from_dict, expand_grid
from analysis_lib.runs.execute import ensure_run
from analysis_lib.runs.sources import reading_runs_from
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.studies import inflection_adapters as ada
from analysis_lib.studies import inflection_layers as inf
from analysis_lib.validation import ConfigError

PROBES = ["eval", "activation_stats", "attention_stats", "grad_norm"]


def _source_configs(steps=(6, 12), seeds=(0,), n_layers=4):
    base = config_from_dict({"task": {"n_digits": 1, "n_train": 30, "n_test": 8, "slow_fraction": 0.0},
                             "model": {"n_layers": n_layers, "d_model": 8, "n_heads": 2, "d_mlp": 16},
                             "train": {"steps": 6, "batch_size": 8, "warmup_steps": 2, "lr": 0.01},
                             "finetune": {"steps": 4, "lr": 0.003, "slow_fraction": 1.0},
                             "probes": {"names": PROBES, "every": 3, "eval_problems": 8}}, LMRunConfig)
    return expand_grid(base, {"source": {"train.steps": list(steps)}}, list(seeds))


def _effects(rows):
    """rows: (run_id, steps, seed, inflection, control)."""
    out = []
    for rid, steps, seed, infl, ctrl in rows:
        out += [{"run_id": rid, "source_steps": steps, "seed": seed, "layer": "model", "metric": m, "value": v}
                for m, v in (("max_saturation", 0.5), ("inflection_layer", infl), ("control_layer", ctrl))]
    return pd.DataFrame(out)


def test_adapter_configs_place_the_adapter_at_the_inflection_and_the_control_block():
    short, long = _source_configs()
    result = SimpleNamespace(configs={"a": short, "b": long})
    effects = _effects([("a", 6, 0, 3.0, 1.0), ("b", 12, 0, float("nan"), float("nan"))])
    configs = ada.adapter_configs(result, effects, rank=2, projections=["q", "v"])
    assert len(configs) == 2  # run b has no inflection layer: no adapter run
    by = {c.label("placement"): c for c in configs}
    assert by["inflection"].finetune.adapter_layers == (3,) and by["control"].finetune.adapter_layers == (1,)
    for c in configs:
        assert c.finetune.adapter_rank == 2 and c.finetune.adapter_projections == ("q", "v")
        assert c.probes.names == ("eval",) and c.probes.every == short.probes.every
        assert (c.task, c.model, c.train, c.seed) == (short.task, short.model, short.train, short.seed)
        assert c.finetune.steps == short.finetune.steps and c.finetune.slow_fraction == 1.0
        assert c.label("source_run") == "a" and c.label("source_steps") == 6 and c.label("arm") == "adapter"
        assert c.finetune.from_run == "a"  # starts from the source run's stored base weights
    assert by["inflection"].label("block") == 3
    assert ada.adapter_configs(result, effects.iloc[:0], rank=2, projections=["q"]) == []


def test_stage2_run_continues_the_stored_source_and_changes_only_the_adapted_block(tmp_path):
    source = _source_configs(steps=(6,))[0]
    store, rid = RunStore(tmp_path), run_id(source)
    assert ensure_run(source, store)["status"] == "finished"
    result = SimpleNamespace(configs={rid: source})
    stage2 = ada.adapter_configs(result, _effects([(rid, 6, 0, 2.0, 1.0)]), rank=2, projections=["q", "up"])
    assert stage2[0].finetune.from_run == rid
    with reading_runs_from(store):
        adapted = stage2[0].run()  # the inflection placement: block 2
    assert adapted.status == "finished" and "base" not in adapted.tables  # not pre-trained again
    base, tuned = store.load_checkpoint(rid, "base"), adapted.tables["tuned"]
    assert tuned.keys() == base.keys()
    changed = {k for k in tuned if not torch.equal(tuned[k], base[k])}
    assert changed == {"blocks.2.attn.q.weight", "blocks.2.mlp.up.weight"}


def test_check_adapter_names_the_bad_key():
    for adapter, name in (({"rank": 0, "projections": ["q"]}, "adapter.rank"),
                          ({"rank": 9, "projections": ["q"]}, "adapter.rank"),  # d_model = 8
                          ({"rank": 2, "projections": ["w"]}, "adapter.projections"),
                          ({"rank": 2, "projections": ["q", "q"]}, "adapter.projections"),
                          ({"rank": 2}, "adapter")):
        with pytest.raises(ConfigError, match=name):
            ada.check_adapter(adapter, 8, 16)
    ada.check_adapter({"rank": 8, "projections": ["q", "o"]}, 8, 16)  # 8 <= d_model


def _outcomes(short_gain, long_gain, base=1.0):
    """Outcome table: per seed, control = base + gain, inflection = base (gains per seed, NaN = diverged)."""
    rows = []
    for steps, gains in ((50, short_gain), (300, long_gain)):
        for seed, g in enumerate(gains):
            for placement, v in (("inflection", base + 0.01 * seed), ("control", base + 0.01 * seed + g)):
                rows.append({"run_id": f"{steps}-{seed}-{placement}", "source_run": f"{steps}-{seed}",
                             "source_steps": steps, "seed": seed, "placement": placement, "block": 1,
                             "status": "finished" if np.isfinite(v) else "diverged", "metric": ada.OUTCOME,
                             "value": v})
    return pd.DataFrame(rows, columns=ada.OUTCOME_COLUMNS)


def test_adapter_row_yes_with_brute_force_estimate():
    short, long = [0.0, 0.01, -0.01, 0.02, 0.0], [0.3, 0.25, 0.35, 0.28, 0.32]
    row = ada.adapter_row(_outcomes(short, long), n_boot=500)
    assert row["reproduced"] == "yes" and row["n"] == 5
    diff = np.array(long) - np.array(short)
    tests = ada.adapter_tests(_outcomes(short, long), n_boot=500)
    gain = tests[tests["metric"] == "adapter_benefit"].iloc[0]
    assert gain["estimate"] == pytest.approx(diff.mean(), rel=1e-9)
    assert gain["pvalue"] == pytest.approx(sps.ttest_1samp(diff, 0.0).pvalue, rel=1e-6)
    per = tests[tests["metric"] == ada.OUTCOME].set_index("contrast")["estimate"]
    assert per.loc["control - inflection [source_steps=300]"] == pytest.approx(np.mean(long), rel=1e-9)


def test_adapter_row_no_inconclusive_and_dropped_pairs():
    reversed_ = ada.adapter_row(_outcomes([0.3, 0.25, 0.35, 0.28], [0.0, 0.01, -0.01, 0.02]), n_boot=300)
    assert reversed_["reproduced"] == "no"
    # long - short > 0 but the inflection-layer adapter hurts both sources, the long one less: not a help
    less_harm = ada.adapter_row(_outcomes([-0.3, -0.25, -0.35, -0.28, -0.3], [-0.05, -0.06, -0.04, -0.05, -0.07]),
                                n_boot=300)
    assert less_harm["reproduced"] == "no" and "long source's own benefit" in less_harm["rule"]
    noisy = ada.adapter_row(_outcomes([0.1, -0.2, 0.3, 0.0], [0.2, -0.1, -0.1, 0.1]), n_boot=300)
    assert noisy["reproduced"] == "inconclusive"
    table = _outcomes([0.0, 0.01, -0.01, 0.02, 0.0], [0.3, 0.25, 0.35, 0.28, 0.32])
    lost = (table["source_steps"] == 300) & (table["seed"] == 4) & (table["placement"] == "control")
    table.loc[lost, ["value", "status"]] = [np.nan, "diverged"]
    assert ada.adapter_row(table, n_boot=300)["n"] == 4  # seed 4 lacks its long pair


def test_adapter_row_not_tested():
    assert ada.adapter_row(None, n_boot=10)["reproduced"] == "not tested"
    empty = ada.adapter_row(pd.DataFrame(columns=ada.OUTCOME_COLUMNS), n_boot=10)
    assert empty["reproduced"] == "not tested" and "no source run" in empty["measured"]
    diverged = _outcomes([np.nan] * 3, [np.nan] * 3, base=np.nan)
    row = ada.adapter_row(diverged, n_boot=10)
    assert row["reproduced"] == "not tested" and "diverged" in row["measured"] and row["n"] == 0
    rows = inf.verdict_rows(_effects([("a", 50, 0, 2.0, 1.0)]), n_boot=10, adapter=diverged)
    assert rows[-1]["claim"] == ada.CLAIM and rows[-1]["reproduced"] == "not tested"
