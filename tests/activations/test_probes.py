"""The activation probes: rows against a by-hand forward with retain_grad, refusals, and training unchanged."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from analysis_lib.activations.capture import Capture, residual_blocks
from analysis_lib.activations.probes import ActivationStatsProbe, AttentionStatsProbe, LogitStatsProbe
from analysis_lib.lm.config import TransformerConfig
from analysis_lib.lm.training import train_lm
from analysis_lib.lm.transformer import build_transformer
from analysis_lib.training.config import ProbeConfig
from analysis_lib.training.probe import ProbeContext
from analysis_lib.validation import ConfigError
from tests.cases import tiny_lm_config

NAMES = ["activation_stats", "attention_stats", "logit_stats"]


def _ctx(model: nn.Module, rows: list) -> ProbeContext:
    record = lambda step, layer, metric, value: rows.append((step, layer, metric, value))  # noqa: E731
    return ProbeContext(model=model, params=dict(model.named_parameters()), objective=None, record=record,
                        record_layers=lambda *a: None, step=1)


def _probe_once(model, probes, loss_of):
    rows: list = []
    ctx = _ctx(model, rows)
    for p in probes:
        p.start(ctx)
    managers = [p.capture(ctx) for p in probes]
    for m in managers:
        m.__enter__()
    loss_of(model).backward()
    for m in managers:
        m.__exit__(None, None, None)
    for p in probes:
        p.after_backward(ctx)
    return {(layer, metric): value for _, layer, metric, value in rows}


def _kurtosis(x: torch.Tensor) -> float:
    xs = x.double().reshape(-1).tolist()
    n = len(xs)
    mean = sum(xs) / n
    m2 = sum((v - mean) ** 2 for v in xs) / n
    return sum((v - mean) ** 4 for v in xs) / n / m2 ** 2 - 3


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_rows_match_a_forward_by_hand_with_retain_grad(norm):
    torch.manual_seed(0)
    config = TransformerConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=16, norm=norm)
    model = build_transformer(config, vocab_size=11, max_len=6, seed=3).double()
    tokens = torch.randint(0, 11, (4, 6))
    targets = torch.randint(0, 11, (4, 6))

    def loss_of(m):
        return nn.functional.cross_entropy(m(tokens).reshape(-1, 11), targets.reshape(-1))

    probes = [ActivationStatsProbe(ProbeConfig(names=NAMES)), AttentionStatsProbe(ProbeConfig(names=NAMES)),
              LogitStatsProbe(ProbeConfig(names=NAMES))]
    got = _probe_once(model, probes, loss_of)
    model.zero_grad()
    # by hand: the same forward written out, each hidden state kept with retain_grad
    x = model.embed(tokens) + model.pos.weight[:6]
    hidden, ups, scores = [x], [], []
    for block in model.blocks:
        a_in = block.norm1(x) if norm == "pre" else x
        q = (a_in @ block.attn.q.weight.T).view(4, 6, 2, 4).transpose(1, 2)
        k = (a_in @ block.attn.k.weight.T).view(4, 6, 2, 4).transpose(1, 2)
        scores.append(q @ k.transpose(-2, -1) / 2.0)
        h = block(x)
        h.retain_grad()
        hidden.append(h)
        x = h
    for block, h_prev in zip(model.blocks, hidden[:-1]):
        mid = h_prev + block.attn(block.norm1(h_prev)) if norm == "pre" else block.norm1(h_prev + block.attn(h_prev))
        ups.append((block.norm2(mid) if norm == "pre" else mid) @ block.mlp.up.weight.T)
    logits = model.unembed(model.norm_f(x))
    nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)).backward()
    for i in range(2):
        h = hidden[i + 1].detach()
        rms = math.sqrt(sum(v * v for v in h.reshape(-1).tolist()) / h.numel())
        prev = math.sqrt(sum(v * v for v in hidden[i].detach().reshape(-1).tolist()) / h.numel())
        a = sorted(abs(v) for v in h.reshape(-1).tolist())
        median = (a[len(a) // 2 - 1] + a[len(a) // 2]) / 2
        layer = f"blocks.{i}"
        assert got[layer, "hidden_rms"] == pytest.approx(rms, rel=1e-12)
        assert got[layer, "hidden_growth"] == pytest.approx(rms / prev, rel=1e-12)
        assert got[layer, "hidden_variance"] == pytest.approx(float(h.var(unbiased=False)), rel=1e-10)
        assert got[layer, "massive_ratio"] == pytest.approx(a[-1] / median, rel=1e-12)
        assert got[layer, "kurtosis"] == pytest.approx(_kurtosis(h), rel=1e-9, abs=1e-12)
        assert got[layer, "act_grad_norm"] == pytest.approx(float(hidden[i + 1].grad.norm()), rel=1e-12)
        dead = sum(1 for j in range(16) if not (ups[i][..., j] > 0).any()) / 16
        assert got[f"{layer}.mlp.up", "dead_fraction"] == pytest.approx(dead)
        for head in range(2):
            s = scores[i][:, head].detach()
            best = max(float(s[b, qi, kj]) for b in range(4) for qi in range(6) for kj in range(qi + 1))
            assert got[f"{layer}.attn", f"attn_logit_max.head{head}"] == pytest.approx(best, rel=1e-12)
            masked = s.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), -math.inf)
            p = masked.softmax(-1)
            ent = float(-(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1).mean())
            assert got[f"{layer}.attn", f"attn_entropy.head{head}"] == pytest.approx(ent, rel=1e-10)
        assert got[f"{layer}.attn", "attn_entropy_uniform"] == pytest.approx(
            sum(math.log(n) for n in range(1, 7)) / 6, rel=1e-12)
    log_z = [math.log(sum(math.exp(v) for v in row)) for row in logits.detach().reshape(-1, 11).tolist()]
    assert got["model", "log_z_mean"] == pytest.approx(sum(log_z) / len(log_z), rel=1e-12)
    assert got["model", "log_z_max"] == pytest.approx(max(log_z), rel=1e-12)
    assert all(a.observer is None for a in (b.attn for b in model.blocks))  # observers removed


def test_probes_leave_lm_training_unchanged_and_record_every_layer_and_head():
    plain = train_lm(tiny_lm_config(probes={"names": ["eval"]}))
    probed = train_lm(tiny_lm_config(probes={"names": ["eval", *NAMES]}))
    loss = lambda r: r.metrics[r.metrics["metric"] == "batch_loss"].set_index("step")["value"]  # noqa: E731
    pd.testing.assert_series_equal(loss(plain), loss(probed))
    rows = probed.metrics
    steps = sorted(rows.loc[rows["metric"] == "hidden_rms", "step"].unique())
    assert steps == [4, 8, 12]  # the probed updates of both phases (every 4), none at step 0
    at = rows[rows["step"] == 8]
    assert set(at.loc[at["metric"] == "act_grad_norm", "layer"]) == {"blocks.0", "blocks.1"}
    assert set(at.loc[at["metric"] == "dead_fraction", "layer"]) == {"blocks.0.mlp.up", "blocks.1.mlp.up"}
    assert set(at.loc[at["layer"] == "blocks.1.attn", "metric"]) >= {
        "attn_entropy.head0", "attn_entropy.head1", "attn_logit_max.head1", "attn_entropy_uniform"}
    assert len(at[at["metric"].isin(["log_z_mean", "log_z_max"])]) == 2
    assert rows["value"].notna().all()


class _Mixer(nn.Module):
    def __init__(self, attention: bool):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4))])
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True) if attention else None

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x if self.mha is None else self.mha(x, x, x, need_weights=False)[0]


def test_any_model_with_layers_and_named_blocks_and_skipped_multihead_attention():
    torch.manual_seed(1)
    model = _Mixer(attention=True).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    probes = [ActivationStatsProbe(ProbeConfig(names=NAMES)), AttentionStatsProbe(ProbeConfig(names=NAMES))]
    got = _probe_once(model, probes, lambda m: m(x).square().mean())
    h0 = model.layers[0](x).detach()
    assert got["layers.0", "hidden_rms"] == pytest.approx(float(h0.square().mean().sqrt()), rel=1e-12)
    assert got["layers.1.1", "dead_fraction_skipped"] == 1.0  # a (B, T, units) GELU output: layout unknown
    assert got["mha", "attn_stats_skipped"] == 1.0
    assert not any(metric.startswith("attn_entropy") for _, metric in got)
    named = residual_blocks(model, ["layers.1.0", "layers.1.2"])
    cap = Capture(model, blocks=named)
    with cap():
        model(x)
    assert torch.equal(cap.hidden["layers.1.0"], model.layers[1][0](h0).detach())


def test_models_without_the_layers_get_skipped_rows_and_bad_names_are_refused():
    torch.manual_seed(2)
    act = nn.ReLU()
    mlp = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 5), act, nn.Linear(5, 3), nn.GELU(), nn.Linear(3, 2))
    x = torch.randn(6, 3, dtype=torch.float64)
    mlp.double()
    with torch.no_grad():
        mlp[2].bias[0] = -100.0  # unit 0 of the second layer is never positive
    probes = [ActivationStatsProbe(ProbeConfig(names=NAMES)), AttentionStatsProbe(ProbeConfig(names=NAMES))]
    got = _probe_once(mlp, probes, lambda m: m(x).sum())
    assert got["model", "hidden_stats_skipped"] == 1.0 and got["model", "attn_stats_skipped"] == 1.0
    with torch.no_grad():
        first = torch.relu(mlp[0](x))
        second = torch.relu(mlp[2](first))  # the one ReLU module's second call
        third = mlp[4](second)  # GELU(z) > 0 exactly where z > 0
    assert not (second[:, 0] > 0).any()
    for layer, out in (("1[0]", first), ("1[1]", second), ("5", third)):
        dead = sum(1 for j in range(out.shape[1]) if not (out[:, j] > 0).any()) / out.shape[1]
        assert got[layer, "dead_fraction"] == pytest.approx(dead)
    assert not any(metric == "hidden_rms" for _, metric in got)
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    got = _probe_once(conv, [ActivationStatsProbe(ProbeConfig(names=NAMES))],
                      lambda m: m(torch.randn(2, 1, 7)).sum())
    assert got["1", "dead_fraction_skipped"] == 1.0  # (N, C, L): which axis holds the units is unknown
    with pytest.raises(ConfigError, match="blocks='nope': must name submodules"):
        residual_blocks(mlp, ["nope"])
    with pytest.raises(ConfigError, match="no 'blocks' or 'layers' ModuleList"):
        residual_blocks(mlp)
