"""Mini-batch gradient noise Var_l (``snr_var``) on sequence data with tuple targets: the tiny transformer."""

from __future__ import annotations

import pytest
import torch

from analysis_lib.gradients.snr import gradient_snr
from analysis_lib.lm.tasks import task_splits
from analysis_lib.lm.training import AdditionObjective, _Pool
from analysis_lib.training.losses import masked_sequence_loss
from tests.cases import sequence_problem, tiny_lm_config


def _token_loss(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked token cross-entropy, mean per sequence then over sequences, written out by hand."""
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    nll = -logp.gather(-1, tokens[..., None])[..., 0] * mask
    return (nll.sum(1) / mask.sum(1)).mean()


def test_snr_var_is_the_spread_of_per_batch_gradients_of_each_matrix():
    """Var_l = (1/(K−1)) Σ_b ‖g_{l,b} − ḡ_l‖² by separate backward passes over the same batches."""
    model, tokens, (targets, mask) = sequence_problem(n=8)
    k, b, seed = 4, 3, 5
    rows = gradient_snr(model, masked_sequence_loss, tokens, (targets, mask), n_batches=k, batch_size=b, seed=seed)
    got = {(layer, metric): value for layer, metric, value in rows}
    gen = torch.Generator().manual_seed(seed)  # the batches: K draws of B distinct rows each
    batches = [torch.randperm(8, generator=gen)[:b] for _ in range(k)]
    params = dict(model.named_parameters())
    for layer in ("blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.o",
                  "blocks.0.mlp.up", "blocks.0.mlp.down"):
        weight = params[f"{layer}.weight"]
        grads = torch.stack([torch.autograd.grad(_token_loss(model(tokens[i]), targets[i], mask[i]), weight)[0]
                             .reshape(-1) for i in batches])
        expected = (grads - grads.mean(0)).pow(2).sum().item() / (k - 1)
        assert expected > 0
        assert got[(layer, "snr_var")] == pytest.approx(expected, rel=1e-10), layer


def test_the_gradient_snr_probe_runs_on_an_lm_run_and_leaves_training_unchanged():
    probes = {"names": ["eval", "grad_norm", "gradient_snr"], "snr_batches": 3, "snr_batch_size": 8}
    probed = tiny_lm_config(train={"dtype": "float64"}, probes=probes)
    plain = tiny_lm_config(train={"dtype": "float64"})
    a, b = (c.run().metrics for c in (plain, probed))
    assert a.loc[a["metric"] == "batch_loss", "value"].tolist() == b.loc[b["metric"] == "batch_loss", "value"].tolist()
    values = b.set_index(["step", "layer", "metric"])["value"]
    model = probed.build_model().eval()
    pool = _Pool(task_splits(probed.task)[0], torch.device("cpu"))
    loss_fn, x, y = AdditionObjective(pool, {}).curvature_problem(0)
    for layer, metric, value in gradient_snr(model, loss_fn, x, y, n_batches=3, batch_size=8, seed=0):
        assert values[(0, layer, metric)] == pytest.approx(value, rel=1e-12, nan_ok=True)
    assert values[(0, "blocks.1.mlp.down", "snr_var")] > 0
