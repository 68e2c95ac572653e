"""The tiny transformer: causal, named per block and projection, seeded, and equal to a slow reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from analysis_lib.lm.config import TransformerConfig
from analysis_lib.lm.transformer import PROJECTIONS, build_transformer, matrix_names
from analysis_lib.validation import ConfigError

VOCAB, MAX_LEN = 11, 9
PLACEMENTS = [(norm, qk) for norm in ("pre", "post", "peri") for qk in (False, True)]


def _model(norm="pre", qk_norm=False, seed=0, n_layers=2):
    config = TransformerConfig(n_layers=n_layers, d_model=8, n_heads=2, d_mlp=12, norm=norm, qk_norm=qk_norm)
    return build_transformer(config, VOCAB, MAX_LEN, seed).double()


def _tokens(seed=0, batch=3, length=MAX_LEN):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _layer_norm(x, module):
    if isinstance(module, torch.nn.Identity):
        return x
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def _reference_attention(attn, x):
    """One position and one head at a time: softmax over the positions up to t of q_t·k_s/√d_h."""
    t_len, d = x.shape
    n_heads = attn.n_heads
    d_h = d // n_heads
    out = torch.zeros_like(x)
    for h in range(n_heads):
        rows = slice(h * d_h, (h + 1) * d_h)
        q = _layer_norm(x @ attn.q.weight[rows].T, attn.q_norm)
        k = _layer_norm(x @ attn.k.weight[rows].T, attn.k_norm)
        v = x @ attn.v.weight[rows].T
        for t in range(t_len):
            scores = torch.stack([q[t] @ k[s] / math.sqrt(d_h) for s in range(t + 1)])
            weights = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
            out[t, rows] = sum(weights[s] * v[s] for s in range(t + 1))
    return out @ attn.o.weight.T


def _reference_logits(model, tokens):
    """Logits of one sequence (T,) -> (T, V), written out from the model's weights."""
    x = model.embed.weight[tokens] + model.pos.weight[: len(tokens)]
    for block in model.blocks:
        def mlp(z):
            return torch.clamp(z @ block.mlp.up.weight.T, min=0) @ block.mlp.down.weight.T
        placement = model.config.norm
        if placement == "pre":
            x = x + _reference_attention(block.attn, _layer_norm(x, block.norm1))
            x = x + mlp(_layer_norm(x, block.norm2))
        elif placement == "post":
            x = _layer_norm(x + _reference_attention(block.attn, x), block.norm1)
            x = _layer_norm(x + mlp(x), block.norm2)
        else:
            x = x + _layer_norm(_reference_attention(block.attn, _layer_norm(x, block.norm1)), block.norm1_out)
            x = x + _layer_norm(mlp(_layer_norm(x, block.norm2)), block.norm2_out)
    return _layer_norm(x, model.norm_f) @ model.unembed.weight.T


def _randomise_norms(model):
    """Give every LayerNorm non-trivial affine parameters, so a misplaced norm shows."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("norm,qk_norm", PLACEMENTS)
def test_forward_matches_a_loop_over_positions_and_heads(norm, qk_norm):
    model = _model(norm, qk_norm)
    _randomise_norms(model)
    tokens = _tokens()
    logits = model(tokens)
    assert logits.shape == (3, MAX_LEN, VOCAB) and logits.dtype == torch.float64
    for i in range(len(tokens)):
        torch.testing.assert_close(logits[i], _reference_logits(model, tokens[i]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm,qk_norm", PLACEMENTS)
def test_a_future_token_changes_no_earlier_logit(norm, qk_norm):
    model = _model(norm, qk_norm)
    tokens = _tokens()
    for j in range(1, MAX_LEN):
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % VOCAB
        a, b = model(tokens), model(changed)
        assert torch.equal(a[:, :j], b[:, :j])
        assert not torch.allclose(a[:, j], b[:, j])


def test_norm_placements_differ_and_own_their_norms():
    tokens = _tokens()
    outputs = {norm: _model(norm)(tokens) for norm in ("pre", "post", "peri")}
    assert not torch.allclose(outputs["pre"], outputs["post"])
    assert not torch.allclose(outputs["pre"], outputs["peri"])
    names = {norm: {n for n, _ in _model(norm).named_parameters()} for norm in ("pre", "post", "peri")}
    assert "blocks.0.norm1_out.weight" in names["peri"] and "blocks.0.norm1_out.weight" not in names["pre"]
    assert "norm_f.weight" in names["pre"] and "norm_f.weight" not in names["post"]
    assert "blocks.1.attn.q_norm.weight" in {n for n, _ in _model(qk_norm=True).named_parameters()}


def test_every_projection_is_its_own_named_matrix():
    model = _model(n_layers=3)
    params = dict(model.named_parameters())
    listed = matrix_names(model)
    assert listed[:2] == [("blocks.0.attn.q.weight", "blocks.0", "q"), ("blocks.0.attn.k.weight", "blocks.0", "k")]
    assert [(layer, proj) for _, layer, proj in listed] == [
        (f"blocks.{i}", p) for i in range(3) for p in PROJECTIONS]
    shapes = {"q": (8, 8), "k": (8, 8), "v": (8, 8), "o": (8, 8), "up": (12, 8), "down": (8, 12)}
    for name, _, proj in listed:
        assert params[name].shape == shapes[proj]
        assert name.replace(".weight", ".bias") not in params
    assert not any("qkv" in name for name in params)


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = _model(seed=3).state_dict(), _model(seed=3).state_dict(), _model(seed=4).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.q.weight"], c["blocks.0.attn.q.weight"])
    # GPT-2 initialisation: residual outputs are scaled down by 1/sqrt(2 n_layers).
    big = build_transformer(TransformerConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=256), VOCAB, MAX_LEN, 0)
    assert big.blocks[0].attn.q.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.blocks[0].mlp.down.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_sequences_longer_than_max_len_are_refused():
    with pytest.raises(ValueError, match="max_len"):
        _model()(_tokens(length=MAX_LEN + 1))


@pytest.mark.parametrize("key,value,text", [
    ("n_layers", 0, ">= 1"), ("d_model", 10, "must divide model.d_model"), ("norm", "sandwich", "'peri'"),
    ("qk_norm", "yes", "true or false"), ("d_mlp", 1.5, "integer")])
def test_bad_shapes_are_refused_by_name(key, value, text):
    kwargs = {"d_model": 8, "n_heads": 4, key: value} if key != "d_model" else {"d_model": value, "n_heads": 4}
    with pytest.raises(ConfigError, match=f"model.{key if key != 'd_model' else 'n_heads'}=.*{text}"):
        TransformerConfig(**kwargs)
