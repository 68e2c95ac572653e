"""Per-block λ_max against eigvalsh of the dense full Hessian, sliced to each block, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.curvature.blocks import block_sharpness, default_groups
from analysis_lib.lm.config import TransformerConfig
from analysis_lib.lm.tasks import task_splits
from analysis_lib.lm.training import AdditionObjective, _Pool
from analysis_lib.lm.transformer import build_transformer
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError
from tests.cases import MODEL_CASES, classification_problem, cross_entropy, tiny_lm_config
from tests.reference import dense_hessian, fd_hessian

PROJECTION_PATHS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down")


def _token_loss(logits: torch.Tensor, targets) -> torch.Tensor:
    """Masked token cross-entropy, mean per sequence then over sequences, written out by hand."""
    tokens, mask = targets
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    nll = -logp.gather(-1, tokens[..., None])[..., 0] * mask
    return (nll.sum(1) / mask.sum(1)).mean()


def _transformer_problem(n_layers: int = 2, norm: str = "pre", qk_norm: bool = False, seed: int = 0):
    """A float64 tiny transformer (d_model 8, vocab 6, T 5) at random weights of O(1) scale, and data."""
    config = TransformerConfig(n_layers=n_layers, d_model=8, n_heads=2, d_mlp=8, norm=norm, qk_norm=qk_norm)
    model = build_transformer(config, 6, 5, seed).double()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # away from the N(0, 0.02²) init, where the q and k blocks are nearly 0
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(0.4 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    tokens = torch.randint(0, 6, (4, 5), generator=gen)
    targets = torch.randint(0, 6, (4, 5), generator=gen)
    mask = torch.rand(4, 5, generator=gen) < 0.7
    mask[:, -1] = True
    return model, tokens, (targets, mask)


def _dense_block_top(model: nn.Module, H: torch.Tensor, names: list[str]) -> float:
    """The largest eigenvalue (eigvalsh) of the full dense H sliced to the coordinates of ``names``."""
    offsets, start = {}, 0
    for n, p in model.named_parameters():
        offsets[n] = (start, start + p.numel())
        start += p.numel()
    idx = torch.cat([torch.arange(*offsets[n]) for n in names])
    return torch.linalg.eigvalsh(H[idx][:, idx])[-1].item()


@pytest.mark.parametrize("n_layers, norm, qk_norm", [(2, "pre", False), (1, "peri", True)])
def test_every_transformer_block_matches_the_dense_hessian_block(n_layers, norm, qk_norm):
    model, tokens, targets = _transformer_problem(n_layers, norm, qk_norm)
    H = dense_hessian(model, _token_loss, tokens, targets)  # every parameter, by double autograd
    result = block_sharpness(model, _token_loss, (tokens, targets), tol=1e-10)
    expected_labels = [f"blocks.{i}.{p}" for i in range(n_layers) for p in PROJECTION_PATHS]
    assert list(result.blocks) == expected_labels
    expected = {}
    for label in expected_labels:
        expected[label] = _dense_block_top(model, H, [f"{label}.weight"])
        b = result.blocks[label]
        assert b.converged and b.residual <= 1e-10 * abs(b.lambda_max)
        assert b.lambda_max == pytest.approx(expected[label], rel=1e-8, abs=1e-12), label
        assert b.dim == 64
    assert min(expected.values()) > 0
    if qk_norm:  # LayerNorm's double backward cross-checked by central differences of gradients
        for label in expected_labels:
            fd = fd_hessian(model, _token_loss, tokens, targets, params=[f"{label}.weight"])
            assert expected[label] == pytest.approx(torch.linalg.eigvalsh(fd)[-1].item(), rel=1e-5), label
    assert result.ratio == pytest.approx(max(expected.values()) / min(expected.values()), rel=1e-7)


def test_mlp_blocks_and_named_groups_match_the_dense_hessian_block():
    """Default groups of an MLP are its Linear weights; a named group may join several parameters."""
    name, config, n_features = MODEL_CASES[0]
    model, x, y = classification_problem(config, n_features)
    H = dense_hessian(model, cross_entropy, x, y)
    assert default_groups(model) == {"fc1": ["fc1.weight"], "fc2": ["fc2.weight"], "out": ["out.weight"]}
    result = block_sharpness(model, F.cross_entropy, (x, y), tol=1e-10)
    for label in ("fc1", "fc2", "out"):
        assert result.blocks[label].lambda_max == pytest.approx(
            _dense_block_top(model, H, [f"{label}.weight"]), rel=1e-8)
    joined = block_sharpness(model, F.cross_entropy, (x, y), tol=1e-10,
                             groups={"first": ["fc1.weight", "fc1.bias"], "bias": ["out.bias"]})
    assert joined.blocks["first"].lambda_max == pytest.approx(
        _dense_block_top(model, H, ["fc1.weight", "fc1.bias"]), rel=1e-8)
    assert joined.blocks["bias"].lambda_max == pytest.approx(_dense_block_top(model, H, ["out.bias"]), rel=1e-8)
    listed = block_sharpness(model, F.cross_entropy, (x, y), tol=1e-10, groups=["fc2.weight", "fc2.bias"])
    assert list(listed.blocks) == ["fc2", "fc2.bias"]


def test_warm_start_gives_the_same_values_with_fewer_products():
    model, tokens, targets = _transformer_problem(1)
    first = block_sharpness(model, _token_loss, (tokens, targets), tol=1e-9)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a nearby point, as at the next probe
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    cold = block_sharpness(model, _token_loss, (tokens, targets), tol=1e-9)
    warm = block_sharpness(model, _token_loss, (tokens, targets), tol=1e-9, v0=first.vectors())
    H = dense_hessian(model, _token_loss, tokens, targets)
    for label, b in warm.blocks.items():
        reference = _dense_block_top(model, H, [f"{label}.weight"])
        assert b.converged and b.lambda_max == pytest.approx(reference, rel=1e-8)
        assert cold.blocks[label].lambda_max == pytest.approx(reference, rel=1e-8)
    assert warm.n_matvecs < cold.n_matvecs


def _lm_curvature_data(config):
    """The LM objective's curvature problem for ``config`` (the data the probe uses)."""
    pool = _Pool(task_splits(config.task)[0], torch.device("cpu"))
    loss_fn, tokens, targets = AdditionObjective(pool, {}).curvature_problem(config.probes.curvature_samples)
    return loss_fn, (tokens, targets)


def test_the_probe_records_the_function_at_the_probed_weights_on_an_lm_run():
    config = tiny_lm_config(train={"dtype": "float64"},
                            probes={"names": ["block_sharpness"], "curvature_samples": 10,
                                    "sharpness_tol": 1e-9, "sharpness_max_steps": 200})
    result = config.run()
    m = result.metrics
    values = m.set_index(["step", "layer", "metric"])["value"]
    last = int(m["step"].max())
    loss_fn, data = _lm_curvature_data(config)
    weights = {0: config.build_model(), last: config.build_model(result.tables["tuned"])}
    for step, model in weights.items():
        expected = block_sharpness(model, loss_fn, data, tol=1e-9, max_steps=200)
        assert len(expected.blocks) == 12
        for label, b in expected.blocks.items():
            assert values[(step, label, "block_lambda_max")] == pytest.approx(b.lambda_max, rel=1e-7)
            assert values[(step, label, "block_lambda_max_converged")] == 1.0
        assert values[(step, "model", "block_lambda_ratio")] == pytest.approx(expected.ratio, rel=1e-6)
    hvps = m[m["metric"] == "block_lambda_max_hvps"].groupby("step")["value"].sum()
    assert hvps.loc[last] < hvps.loc[0]  # warm-started from the previous probe's vectors


def test_the_probe_on_an_mlp_run_records_the_dense_block_at_init(tiny_config):
    config = with_overrides(tiny_config, {"train.dtype": "float64", "train.steps": 1,
                                          "probes.names": ["block_sharpness"], "probes.sharpness_tol": 1e-10,
                                          "probes.sharpness_max_steps": 200, "probes.curvature_samples": 40})
    values = config.run().metrics.set_index(["step", "layer", "metric"])["value"]
    data, model = config.dataset(), config.build_model()
    H = dense_hessian(model, cross_entropy, data.x_train[:40], data.y_train[:40])
    for label in ("fc1", "fc2", "out"):
        assert values[(0, label, "block_lambda_max")] == pytest.approx(
            _dense_block_top(model, H, [f"{label}.weight"]), rel=1e-8)


def test_the_probe_leaves_lm_training_unchanged():
    plain = tiny_lm_config().run().metrics
    probed = tiny_lm_config(probes={"names": ["eval", "grad_norm", "block_sharpness"]}).run().metrics
    for name in ("batch_loss", "train_loss_fast", "test_loss_slow"):
        a = plain[plain["metric"] == name].reset_index(drop=True)
        b = probed[probed["metric"] == name].reset_index(drop=True)
        assert len(a) > 0
        assert a["value"].tolist() == b["value"].tolist(), name
    assert (probed["metric"] == "block_lambda_max").sum() == 12 * probed.loc[
        probed["metric"] == "block_lambda_ratio", "step"].nunique()


def test_bad_groups_and_options_are_refused_by_name():
    model, tokens, targets = _transformer_problem(1)
    data = (tokens, targets)
    with pytest.raises(ConfigError, match=r"blocks\.0\.attn\.x\.weight"):
        block_sharpness(model, _token_loss, data, groups=["blocks.0.attn.q.weight", "blocks.0.attn.x.weight"])
    with pytest.raises(ConfigError, match="group 'a' is empty"):
        block_sharpness(model, _token_loss, data, groups={"a": []})
    with pytest.raises(ConfigError, match="not a string"):
        block_sharpness(model, _token_loss, data, groups="blocks.0.attn.q.weight")
    with pytest.raises(ConfigError, match="tol"):
        block_sharpness(model, _token_loss, data, tol=0.0)
    with pytest.raises(ConfigError, match="max_steps"):
        block_sharpness(model, _token_loss, data, max_steps=1)
    with pytest.raises(ConfigError, match="labels not among the groups"):
        block_sharpness(model, _token_loss, data, v0={"blocks.7.attn.q": torch.ones(64)})
    with pytest.raises(ConfigError, match="64 parameters"):
        block_sharpness(model, _token_loss, data, v0={"blocks.0.attn.q": torch.ones(3)})
    with pytest.raises(ConfigError, match="no weight matrix"):
        default_groups(nn.LayerNorm(4))


def test_a_block_that_did_not_converge_says_so():
    model, tokens, targets = _transformer_problem(1)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        result = block_sharpness(model, _token_loss, (tokens, targets), tol=1e-12, max_steps=2,
                                 groups=["blocks.0.mlp.up.weight"])
    b = result.blocks["blocks.0.mlp.up"]
    assert not b.converged and b.n_matvecs == 2 and not result.all_converged
    assert math.isnan(result.ratio)  # one group: no spread
