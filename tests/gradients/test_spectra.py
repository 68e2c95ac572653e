"""Tests of analysis_lib.gradients.spectra: per-example spectra against per-example backward, vmap(grad), SVD.

In float64: one backward pass per example, ``torch.func`` vmap(grad) and numpy SVD are the references.

On an attention-free sequence model, a shared Linear, an MLP (rank-one gradients) and the tiny transformer: the
per-example weight gradients, the mean/sum reductions, the masked targets, the spectral statistics, the table
layout and chunking, and the parameters refused by name. The cross-layer spread is tested in test_spread.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from analysis_lib.gradients import spectra as G
from analysis_lib.gradients.spread import cross_layer_mad
from analysis_lib.lm.tasks import VOCAB_SIZE
from analysis_lib.training.config import ModelConfig
from analysis_lib.training.losses import sequence_losses
from analysis_lib.training.models import build_model
from analysis_lib.validation import ConfigError
from tests.cases import TinySequenceModel, sequence_batch, tiny_transformer_batch


def loop_gradients(model, tokens, targets, mask, reduction):
    """Brute force: one backward pass per example; module name -> (B, d_out, d_in)."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    out = {n: [] for n in linears}
    for i in range(len(tokens)):
        loss = sequence_losses(model(tokens[i:i + 1]), targets[i:i + 1], mask[i:i + 1], reduction).sum()
        for name, g in zip(linears, torch.autograd.grad(loss, [m.weight for m in linears.values()])):
            out[name].append(g)
    return {n: torch.stack(gs) for n, gs in out.items()}


def vmap_gradients(model, tokens, targets, mask, reduction):
    """torch.func reference: vmap over examples of grad of one example's loss."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, tok, tgt, m):
        logits = functional_call(model, p, (tok.unsqueeze(0),))
        return sequence_losses(logits, tgt.unsqueeze(0), m.unsqueeze(0), reduction).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, tokens, targets, mask)
    return {n[: -len(".weight")]: g for n, g in grads.items() if n.endswith(".weight") and g.dim() == 3}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_example_gradients_match_one_backward_per_example(reduction):
    model = TinySequenceModel().double()
    tokens, targets, mask = sequence_batch()
    got = G.per_example_gradients(model, tokens, targets, mask, reduction=reduction)
    for reference in (loop_gradients(model, tokens, targets, mask, reduction),
                      vmap_gradients(model, tokens, targets, mask, reduction)):
        assert set(got) == set(reference) - {"embed"}
        for name, g in got.items():
            torch.testing.assert_close(g, reference[name], rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())  # .grad left alone


def test_mean_and_sum_differ_by_the_response_length():
    model = TinySequenceModel().double()
    tokens, targets, mask = sequence_batch()
    mean = G.per_example_gradients(model, tokens, targets, mask, reduction="mean")["head"]
    total = G.per_example_gradients(model, tokens, targets, mask, reduction="sum")["head"]
    torch.testing.assert_close(total, mean * mask.sum(1).double().view(-1, 1, 1))


class SharedLinear(nn.Module):
    """One Linear applied twice: (B, 4) -> (B, 4)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.fc(x)))


def test_a_linear_called_twice_gets_the_sum_over_its_calls():
    model = SharedLinear().double()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(5) % 4
    got = G.per_example_gradients(model, x, y)["fc"]
    for i in range(5):
        loss = sequence_losses(model(x[i:i + 1]), y[i:i + 1], None).sum()
        torch.testing.assert_close(got[i], torch.autograd.grad(loss, model.fc.weight)[0])


def test_targets_outside_the_response_change_nothing():
    model = TinySequenceModel().double()
    tokens, targets, mask = sequence_batch()
    changed = torch.where(mask, targets, (targets + 3) % 7)
    a = G.per_example_gradients(model, tokens, targets, mask)
    b = G.per_example_gradients(model, tokens, changed, mask)
    assert not torch.equal(targets, changed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


@pytest.mark.parametrize("shape, rank", [((6, 4), 4), ((3, 7), 3), ((5, 5), 2), ((8, 3), 1)])
def test_spectral_statistics_match_numpy_svd(shape, rank):
    gen = torch.Generator().manual_seed(sum(shape))
    left = torch.randn(4, shape[0], rank, generator=gen, dtype=torch.float64)
    m = left @ torch.randn(4, rank, shape[1], generator=gen, dtype=torch.float64)  # (4, m, n) of rank `rank`
    got = G.spectral_statistics(m)
    for i, matrix in enumerate(m.numpy()):
        s = np.linalg.svd(matrix, compute_uv=False)
        p = s[s > 1e-12 * s[0]] / s.sum()
        expected = {"nuclear_norm": s.sum(), "spectral_norm": s[0], "frobenius_norm": np.sqrt((s ** 2).sum()),
                    "effective_rank": np.exp(-(p * np.log(p)).sum()), "stable_rank": (s ** 2).sum() / s[0] ** 2}
        for name, value in expected.items():
            assert got[name][i].item() == pytest.approx(value, rel=1e-9), name
    assert set(got) == set(G.STATISTICS)


def test_single_token_linear_gradients_have_rank_one():
    """An MLP fed one vector per example: every per-example weight gradient δ aᵀ has rank 1."""
    model = build_model(ModelConfig(depth=2, width=6), n_features=5, n_classes=3, seed=0).double()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(7) % 3
    table = G.gradient_spectra(model, x, y).pivot_table(index=["example", "layer"], columns="statistic",
                                                       values="value")
    assert len(table) == 7 * 3 and set(table.index.get_level_values("layer")) == {"fc1", "fc2", "out"}
    np.testing.assert_allclose(table["nuclear_norm"], table["frobenius_norm"], rtol=1e-10)
    np.testing.assert_allclose(table["spectral_norm"], table["frobenius_norm"], rtol=1e-10)
    np.testing.assert_allclose(table["effective_rank"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(table["stable_rank"], 1.0, rtol=1e-10)


def test_sequence_gradients_are_not_rank_one():
    model = TinySequenceModel().double()
    tokens, targets, mask = sequence_batch()
    table = G.gradient_spectra(model, tokens, targets, mask)
    erank = table[(table["statistic"] == "effective_rank") & (table["projection"] == "up")]
    several = erank["example"].isin(np.flatnonzero(mask.sum(1) >= 2))  # one response token: rank 1 at the top
    assert (erank.loc[several, "value"] > 1.2).all()
    assert (erank.loc[erank["layer"] == "blocks.0", "value"] > 1.2).all()  # mixing above: every example


def test_gradient_spectra_table_layout_and_chunking():
    model = TinySequenceModel().double()
    tokens, targets, mask = sequence_batch()
    whole = G.gradient_spectra(model, tokens, targets, mask, chunk_size=50)
    chunked = G.gradient_spectra(model, tokens, targets, mask, chunk_size=4)
    assert list(whole.columns) == G.SPECTRA_COLUMNS
    assert len(whole) == 6 * (3 * 5 + 1) * len(G.STATISTICS)  # examples × matrices × statistics
    assert set(zip(whole["layer"], whole["projection"])) == {
        *((f"blocks.{i}", p) for i in range(3) for p in ("q", "v", "o", "up", "down")), ("head", "weight")}
    key = ["example", "layer", "projection", "statistic"]
    pd.testing.assert_frame_equal(whole.sort_values(key).reset_index(drop=True),
                                  chunked.sort_values(key).reset_index(drop=True), rtol=1e-12)
    chosen = G.gradient_spectra(model, tokens, targets, mask, modules=["blocks.1.mlp.up"])
    assert set(chosen["layer"]) == {"blocks.1"} and set(chosen["projection"]) == {"up"}


@pytest.mark.parametrize("kwargs, name", [
    ({"reduction": "max"}, "reduction"), ({"chunk_size": 0}, "chunk_size"),
    ({"modules": ["blocks.0.attn.x"]}, "modules"), ({"modules": ["embed"]}, "modules"),
])
def test_bad_parameters_raise_config_error(kwargs, name):
    model = TinySequenceModel()
    tokens, targets, mask = sequence_batch()
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        G.gradient_spectra(model, tokens, targets, mask, **kwargs)


def test_an_empty_response_is_an_error_for_the_mean():
    tokens, targets, mask = sequence_batch()
    mask[2] = False
    with pytest.raises(ValueError, match="no response tokens"):
        G.gradient_spectra(TinySequenceModel(), tokens, targets, mask)
    assert len(G.gradient_spectra(TinySequenceModel(), tokens, targets, mask, reduction="sum"))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_per_example_gradients_on_the_tiny_transformer(reduction):
    model, batch = tiny_transformer_batch()
    args = (batch.tokens, batch.targets, batch.mask)
    got = G.per_example_gradients(model, *args, reduction=reduction)
    for reference in (loop_gradients(model, *args, reduction), vmap_gradients(model, *args, reduction)):
        assert set(got) == {n for n in reference if n.startswith(("blocks", "unembed"))}
        for name, g in got.items():
            torch.testing.assert_close(g, reference[name], rtol=1e-9, atol=1e-14)
    changed = torch.where(batch.mask, batch.targets, (batch.targets + 1) % VOCAB_SIZE)  # prompt targets only
    for name, g in G.per_example_gradients(model, batch.tokens, changed, batch.mask, reduction=reduction).items():
        torch.testing.assert_close(g, got[name], rtol=0, atol=0)


def test_gradient_spectra_names_the_transformer_projections():
    model, batch = tiny_transformer_batch()
    table = G.gradient_spectra(model, batch.tokens, batch.targets, batch.mask)
    pairs = set(zip(table["layer"], table["projection"]))
    assert pairs == {(f"blocks.{i}", p) for i in range(2) for p in ("q", "k", "v", "o", "up", "down")} | {
        ("unembed", "weight")}
    spread = cross_layer_mad(table)
    assert set(spread["projection"]) == {"q", "k", "v", "o", "up", "down"}  # unembed: one layer, no spread
    assert set(spread["segment"]) == {"all", "early"}  # 2 layers: one difference
