"""LoRA adapters: the adapted model starts equal to the original, only A and B train, W_eff = W + (α/r) B A.

Checked in float64 on the tiny transformer and on a plain MLP (adapters work on any nn.Linear),
against the products written out here; bad names and ranks are refused by name before any change.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis_lib.lm.adapters import LoRALinear, attach_adapters, merge_adapters, transformer_linear_names
from analysis_lib.lm.config import TransformerConfig
from analysis_lib.lm.transformer import build_transformer
from analysis_lib.validation import ConfigError

VOCAB, MAX_LEN = 11, 7


def _model(n_layers=3):
    config = TransformerConfig(n_layers=n_layers, d_model=8, n_heads=2, d_mlp=12)
    return build_transformer(config, VOCAB, MAX_LEN, 0).double()


def _tokens():
    return torch.randint(0, VOCAB, (4, MAX_LEN), generator=torch.Generator().manual_seed(0))


def test_names_of_chosen_blocks_and_projections():
    assert transformer_linear_names(3, [1], ["q", "down"]) == ["blocks.1.attn.q", "blocks.1.mlp.down"]
    assert len(transformer_linear_names(3, [0, 2])) == 12
    model, names = _model(), transformer_linear_names(3, [0, 2])
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in names)


def test_output_is_unchanged_at_initialisation():
    model, tokens = _model(), _tokens()
    before = model(tokens)
    attach_adapters(model, transformer_linear_names(3, [0, 1, 2]), rank=2, alpha=4.0)
    assert torch.equal(model(tokens), before)


def test_only_adapter_parameters_get_gradients():
    model = _model()
    adapters = attach_adapters(model, transformer_linear_names(3, [1], ["q", "v", "up"]), rank=2)
    model(_tokens()).square().mean().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{name}.{ab}" for name in adapters for ab in ("A", "B")}
    for name, p in model.named_parameters():
        if name.endswith((".A", ".B")):
            assert p.grad is not None
        else:
            assert p.grad is None, name
    assert any(a.B.grad.abs().sum() > 0 for a in adapters.values())  # B moves first (A's gradient is 0 at B = 0)


def test_effective_weight_and_forward_equal_w_plus_scaled_ba():
    g = torch.Generator().manual_seed(1)
    base = nn.Linear(5, 6, bias=True).double()
    layer = LoRALinear(base, rank=3, alpha=1.5, seed=4)
    with torch.no_grad():
        layer.B.copy_(torch.randn(6, 3, generator=g, dtype=torch.float64))
    w, a, b = base.weight.detach(), layer.A.detach(), layer.B.detach()
    expected = w + (1.5 / 3) * torch.einsum("or,ri->oi", b, a)
    torch.testing.assert_close(layer.effective_weight(), expected, rtol=1e-13, atol=1e-13)
    x = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    by_hand = torch.einsum("oi,bti->bto", expected, x) + base.bias.detach()
    torch.testing.assert_close(layer(x), by_hand, rtol=1e-12, atol=1e-12)


def test_merge_restores_plain_linears_with_the_effective_weight_and_same_outputs():
    model, tokens = _model(), _tokens()
    keys = set(model.state_dict())
    adapters = attach_adapters(model, transformer_linear_names(3, [2], ["o", "up"]), rank=2)
    with torch.no_grad():
        for a in adapters.values():
            a.B.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(2))
    effective = {n: a.effective_weight().detach().clone() for n, a in adapters.items()}
    adapted = model(tokens).detach()
    assert merge_adapters(model) == list(adapters)
    assert set(model.state_dict()) == keys
    for name, w in effective.items():
        assert torch.equal(model.get_submodule(name).weight, w)
    torch.testing.assert_close(model(tokens), adapted, rtol=1e-12, atol=1e-12)


def test_works_on_any_model_with_linear_layers():
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    before = mlp(x)
    attach_adapters(mlp, ["2"], rank=1)
    assert isinstance(mlp[2], LoRALinear) and torch.equal(mlp(x), before)
    assert [n for n, p in mlp.named_parameters() if p.requires_grad] == ["2.A", "2.B"]


def test_adapters_leave_the_global_rng_alone_and_are_seeded():
    state = torch.random.get_rng_state()
    first = attach_adapters(_model(), ["blocks.0.attn.q"], rank=2, seed=3)["blocks.0.attn.q"].A
    second = attach_adapters(_model(), ["blocks.0.attn.q"], rank=2, seed=3)["blocks.0.attn.q"].A
    assert torch.equal(torch.random.get_rng_state(), state) and torch.equal(first, second)


@pytest.mark.parametrize("names,rank,text", [
    (["blocks.9.attn.q"], 2, r"names='blocks.9.attn.q': not a module of the model; linear modules: \['blocks.0"),
    (["blocks.0.norm1"], 2, r"names='blocks.0.norm1': is a LayerNorm, not an nn.Linear"),
    (["blocks.0.attn.q", "blocks.0.attn.q"], 2, "must be distinct"),
    ([], 2, "must be a non-empty list"),
    (["blocks.0.attn.q"], 0, r"rank=0: must be an integer >= 1"),
    (["blocks.0.attn.q"], 9, r"rank=9: must be <= min\(d_in, d_out\) = 8")])
def test_refusals_by_name_before_any_change(names, rank, text):
    model = _model()
    with pytest.raises(ConfigError, match=text):
        attach_adapters(model, names, rank=rank)
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_refusals_of_names_helper_and_alpha():
    with pytest.raises(ConfigError, match=r"layers=\[3\]: 3 is not a block index in \[0, 3\)"):
        transformer_linear_names(3, [3])
    with pytest.raises(ConfigError, match=r"projections=\['qk'\]"):
        transformer_linear_names(3, [0], ["qk"])
    with pytest.raises(ConfigError, match=r"alpha=0.0"):
        attach_adapters(_model(), ["blocks.0.attn.q"], rank=2, alpha=0.0)
    model = _model()
    attach_adapters(model, ["blocks.0.attn.q"], rank=2)
    with pytest.raises(ConfigError, match=r"names='blocks.0.attn.q': is a LoRALinear"):
        attach_adapters(model, ["blocks.0.attn.q"], rank=2)
