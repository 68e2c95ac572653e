"""Loss recognition, batch weights and the forms of data (analysis_lib.training.problem, training.losses).

Counts and accuracies are checked against values written out here; every refusal names its argument.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.training.losses import MSE, CrossEntropy
from analysis_lib.training.problem import as_batches, loss_spec


@pytest.mark.parametrize("loss, family", [
    (F.cross_entropy, "cross_entropy"), (nn.CrossEntropyLoss(ignore_index=3), "cross_entropy"),
    (functools.partial(F.cross_entropy, ignore_index=0), "cross_entropy"), (CrossEntropy(), "cross_entropy"),
    (F.mse_loss, "mse"), (nn.MSELoss(), "mse"), (MSE(), "mse"),
    (nn.MSELoss(reduction="sum"), None), (nn.CrossEntropyLoss(weight=torch.ones(3)), None),
    (functools.partial(F.cross_entropy, weight=torch.ones(3)), None), (lambda o, t: (o - t).abs().mean(), None),
])
def test_losses_are_recognised_only_where_their_output_hessian_is_known(loss, family):
    assert loss_spec(loss).family == family


def test_counts_skip_ignored_targets_and_accuracy_counts_only_the_rest():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2, -100, 0])  # right, wrong, ignored, right
    for spec in (loss_spec(F.cross_entropy), loss_spec(CrossEntropy())):
        assert spec.count(targets) == 3
        assert spec.accuracy(logits, targets).item() == pytest.approx(2 / 3)
    tokens = logits.view(2, 2, 3)  # (B, T, V): the general path of CrossEntropy
    assert CrossEntropy().accuracy(tokens, targets.view(2, 2)).item() == pytest.approx(2 / 3)
    assert loss_spec(F.mse_loss).count(torch.zeros(4, 3)) == 12


def test_batches_are_weighted_by_their_counted_targets():
    x = torch.randn(7, 2)
    y = torch.tensor([0, 1, -100, 1, 0, -100, -100])
    batches = as_batches([(x[:3], y[:3]), (x[3:], y[3:])], loss_spec(F.cross_entropy))
    assert [b.weight for b in batches] == pytest.approx([2 / 4, 2 / 4])
    chunked = as_batches((x, y), loss_spec(F.cross_entropy), chunk_size=3)  # 3, 3, 1 samples: 2, 2, 0 counted
    assert [b.weight for b in chunked] == pytest.approx([0.5, 0.5])  # the chunk counting nothing is dropped
    custom = as_batches([(x[:3], y[:3]), (x[3:], y[3:])], loss_spec(F.cross_entropy), batch_size_fn=len)
    assert [b.weight for b in custom] == pytest.approx([3 / 7, 4 / 7])


@pytest.mark.parametrize("data, match", [
    (torch.zeros(3), "data of type Tensor"),
    ([], "holds no batch"),
    ([torch.zeros(3)], "batch 0 is a Tensor"),
    ((torch.zeros(2, 1), torch.full((2,), -100)), "no target counts"),
])
def test_bad_data_is_refused_by_name(data, match):
    with pytest.raises(ValueError, match=match):
        as_batches(data, loss_spec(F.cross_entropy))


def test_shape_mistakes_torch_would_accept_are_refused():
    with pytest.raises(ValueError, match="equal shapes"):
        loss_spec(F.mse_loss)(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="ambiguous"):
        loss_spec(F.cross_entropy)(torch.zeros(2, 5, 5), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="class-index targets must have shape"):
        CrossEntropy()(torch.zeros(2, 5, 7), torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="loss_fn"):
        loss_spec("mse")
