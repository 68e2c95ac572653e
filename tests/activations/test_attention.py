"""Attention entropy and logits against known patterns and a by-hand q·k/√d from the module's weights."""

from __future__ import annotations

import math

import pytest
import torch

from analysis_lib.activations.attention import (
    attention_entropy,
    attention_stats,
    keys_seen,
    max_attention_logit,
    normalised_attention_entropy,
    query_entropy,
    uniform_entropy,
)
from analysis_lib.lm.config import TransformerConfig
from analysis_lib.lm.transformer import Attention
from analysis_lib.validation import ConfigError

T = 5


def _causal_scores(b: int, h: int, t: int, value: torch.Tensor | float = 0.0) -> torch.Tensor:
    scores = torch.zeros(b, h, t, t, dtype=torch.float64) + value
    return scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))


def test_uniform_causal_pattern_has_entropy_log_of_the_keys_seen():
    scores = _causal_scores(2, 3, T)  # equal logits: query i attends uniformly to its i + 1 keys
    probs = scores.softmax(-1)
    expected = sum(math.log(i + 1) for i in range(T)) / T
    assert torch.allclose(query_entropy(probs)[0, 0], torch.tensor([math.log(i + 1) for i in range(T)],
                                                                     dtype=torch.float64), atol=1e-12)
    assert torch.allclose(attention_entropy(probs), torch.full((3,), expected, dtype=torch.float64), atol=1e-12)
    n = keys_seen(scores)
    assert n[0, 0].tolist() == [1, 2, 3, 4, 5]
    assert torch.allclose(uniform_entropy(n), torch.full((3,), expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(normalised_attention_entropy(probs, n), torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_one_hot_pattern_has_entropy_zero():
    probs = torch.zeros(1, 2, T, T, dtype=torch.float64)
    probs[..., 0] = 1.0  # every query on the first key
    assert torch.equal(attention_entropy(probs), torch.zeros(2, dtype=torch.float64))
    n = keys_seen(_causal_scores(1, 2, T))
    assert torch.equal(normalised_attention_entropy(probs, n), torch.zeros(2, dtype=torch.float64))


def test_entropy_of_a_two_key_pattern_per_head():
    probs = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    probs[0, 0, 0] = torch.tensor([0.5, 0.5], dtype=torch.float64)
    probs[0, 1, 0] = torch.tensor([0.9, 0.1], dtype=torch.float64)
    h1 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert attention_entropy(probs).tolist() == pytest.approx([math.log(2), h1], abs=1e-12)


def test_max_logit_against_q_dot_k_by_hand_from_the_modules_weights():
    config = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=4)
    torch.manual_seed(0)
    attn = Attention(config, max_len=T).double().requires_grad_(False)
    seen = {}
    attn.observer = lambda module, scores, probs: seen.update(scores=scores, probs=probs)
    x = torch.randn(3, T, 8, dtype=torch.float64)
    attn(x)
    d_head = 4
    by_hand = torch.full((2,), -math.inf, dtype=torch.float64)
    entropies = torch.zeros(2, dtype=torch.float64)
    for h in range(2):
        wq, wk = attn.q.weight[h * d_head:(h + 1) * d_head], attn.k.weight[h * d_head:(h + 1) * d_head]
        for b in range(3):
            for i in range(T):
                logits = [float((wq @ x[b, i]) @ (wk @ x[b, j])) / math.sqrt(d_head)
                          for j in range(i + 1)]
                by_hand[h] = max(by_hand[h], max(logits))
                top = max(logits)
                p = [math.exp(v - top) for v in logits]
                p = [v / sum(p) for v in p]
                entropies[h] += -sum(v * math.log(v) for v in p) / (3 * T)
    assert torch.allclose(max_attention_logit(seen["scores"]), by_hand, rtol=1e-12, atol=0)
    stats = attention_stats(seen["scores"], seen["probs"])
    assert torch.allclose(stats["attn_logit_max"], by_hand, rtol=1e-12, atol=0)
    assert torch.allclose(stats["attn_entropy"], entropies, rtol=1e-10, atol=0)
    assert torch.allclose(stats["attn_entropy_uniform"],
                          torch.full((2,), sum(math.log(i + 1) for i in range(T)) / T, dtype=torch.float64))


def test_observer_unset_leaves_the_forward_pass_as_it_was():
    config = TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=4)
    attn = Attention(config, max_len=T)
    x = torch.randn(2, T, 8)
    out = attn(x)
    attn.observer = lambda *args: None
    assert torch.equal(attn(x), out)


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="probs.*B, H, T_q, T_k"):
        attention_entropy(torch.ones(3, 3))
    with pytest.raises(ConfigError, match="n_keys.*shape"):
        normalised_attention_entropy(torch.ones(1, 1, 2, 2) / 2, torch.ones(1, 2, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="at least one key"):
        uniform_entropy(torch.zeros(1, 1, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="shape of scores"):
        attention_stats(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3))
