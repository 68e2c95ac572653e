"""finetune.adapter_layers: LoRA fine-tuning of chosen blocks in LM runs, everything else frozen.

Pre-training is untouched, only the adapted matrices change in fine-tuning and by a matrix of rank
<= adapter_rank, the tuned checkpoint loads into the plain model, run ids are unchanged at the
defaults (see tests/lm/test_z_loss.py), and bad options are refused before any training.
"""

from __future__ import annotations

import pytest
import torch

from analysis_lib.lm.training import build_lm, train_lm
from analysis_lib.runs.store import run_id
from analysis_lib.validation import ConfigError
from tests.cases import tiny_lm_config

ADAPTED = {"blocks.1.attn.q.weight", "blocks.1.attn.v.weight", "blocks.1.mlp.up.weight"}


def _config(**finetune):
    return tiny_lm_config(train={"dtype": "float64"}, probes={"names": ["eval"]},
                          finetune={"steps": 6, "lr": 0.01, **finetune})


def _losses(result):
    m = result.metrics
    return m[m["metric"] == "batch_loss"].set_index("step")["value"]


def test_only_the_adapted_matrices_change_and_by_a_low_rank_matrix():
    config = _config(adapter_layers=[1], adapter_rank=2, adapter_projections=["q", "v", "up"])
    result = train_lm(config)
    assert result.status == "finished"
    base, tuned = result.tables["base"], result.tables["tuned"]
    assert set(tuned) == set(base)
    for name in base:
        if name in ADAPTED:
            delta = tuned[name] - base[name]
            s = torch.linalg.svdvals(delta)
            assert s[0] > 1e-6, name  # it moved
            assert (s[2:] < 1e-12 * s[0]).all(), (name, s)  # by B A of rank <= 2
        else:
            assert torch.equal(tuned[name], base[name]), name
    model = build_lm(config, tuned)  # loads into the plain model
    assert isinstance(model.blocks[1].attn.q, torch.nn.Linear)


def test_pretraining_is_the_same_with_and_without_adapters():
    plain, adapted = train_lm(_config()), train_lm(_config(adapter_layers=[0, 1], adapter_rank=1))
    pretrain = range(1, 9)
    assert _losses(plain)[list(pretrain)].tolist() == _losses(adapted)[list(pretrain)].tolist()
    assert _losses(plain)[12] != _losses(adapted)[12]
    for name, value in plain.tables["base"].items():
        assert torch.equal(value, adapted.tables["base"][name])


def test_activation_probes_run_with_adapters():
    config = tiny_lm_config(probes={"names": ["eval", "activation_stats", "attention_stats", "logit_stats"]},
                            finetune={"adapter_layers": [1], "adapter_rank": 2})
    result = train_lm(config)
    m = result.metrics
    assert result.status == "finished"
    last = m[(m["step"] == 12) & (m["metric"] == "act_grad_norm")]
    assert last["layer"].tolist() == ["blocks.0", "blocks.1"]  # below the adapter too
    assert (last["value"] > 0).all()
    assert {"attn_entropy", "log_z_mean", "hidden_rms"} <= set(m.loc[m["step"] == 12, "metric"])


def test_adapter_options_change_the_run_id_only_when_set():
    defaults = _config(adapter_rank=4, adapter_projections=["q", "k", "v", "o", "up", "down"])
    assert run_id(_config()) == run_id(defaults)
    assert run_id(_config()) != run_id(_config(adapter_layers=[1]))


@pytest.mark.parametrize("finetune,probes,text", [
    ({"adapter_layers": [2]}, ["eval"], r"adapter_layers=\[2\]: 2 is not a block index in \[0, model.n_layers = 2"),
    ({"adapter_layers": [0, 0]}, ["eval"], "must be distinct"),
    ({"adapter_layers": [0], "adapter_rank": 9}, ["eval"], r"finetune.adapter_rank=9: must be <= 8"),
    ({"adapter_layers": [0], "adapter_rank": 0}, ["eval"], r"finetune.adapter_rank=0: must be an integer >= 1"),
    ({"adapter_layers": [0], "adapter_projections": ["qk"]}, ["eval"], r"adapter_projections=.*'qk' is not one of"),
    ({"adapter_layers": "0"}, ["eval"], r"finetune.adapter_layers='0': must be a list"),
    ({"adapter_layers": [0]}, ["eval", "grad_norm"], r"probes.names=.*'grad_norm' cannot run with finetune.adapter")])
def test_bad_adapter_options_are_refused(finetune, probes, text):
    with pytest.raises(ConfigError, match=text):
        tiny_lm_config(finetune=finetune, probes={"names": probes})
