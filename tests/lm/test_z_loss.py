"""train.z_loss in language-model runs: off by default (old runs bit for bit, same run ids), on it adds the term.

The run ids below were computed by the code before ``train.z_loss`` existed.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analysis_lib.lm.config import LMRunConfig
from analysis_lib.lm.tasks import encode, task_splits
from analysis_lib.lm.training import AdditionObjective, batch_loss, build_lm, train_lm
from analysis_lib.runs.store import run_id
from analysis_lib.training.config import with_overrides
from analysis_lib.validation import ConfigError
from tests.cases import tiny_lm_config


def _metric(metrics: pd.DataFrame, name: str) -> pd.Series:
    return metrics[metrics["metric"] == name].set_index("step")["value"]


def test_run_ids_are_unchanged_at_z_loss_zero():
    assert run_id(LMRunConfig()) == "d897a1118879ccbb"
    assert run_id(tiny_lm_config()) == "3f45bd83ab430932"
    assert run_id(tiny_lm_config(train={"z_loss": 0.0})) == "3f45bd83ab430932"
    assert run_id(tiny_lm_config(train={"z_loss": 1e-4})) != "3f45bd83ab430932"


def test_z_loss_is_refused_when_negative():
    with pytest.raises(ConfigError, match=r"invalid parameter train.z_loss=-1.0: must be a finite number in \[0"):
        with_overrides(LMRunConfig(), {"train.z_loss": -1.0})


def test_objective_adds_the_written_z_term_and_records_the_cross_entropy():
    config = tiny_lm_config(train={"dtype": "float64"})
    model = build_lm(config)
    train_set, _ = task_splits(config.task)
    batch = encode(train_set.subset(slice(0, 6)), "slow")
    objective = AdditionObjective(pool=None, evals={}, z_loss=0.01)
    loss = objective.loss(model, batch)
    with torch.no_grad():
        logits = model(batch.tokens)
        log_z = (logits.exp().sum(-1)).log()  # (B, T), by hand
        per_seq = ((log_z ** 2) * batch.mask).sum(1) / batch.mask.sum(1)
        ce = batch_loss(model, batch)
    assert loss.item() == pytest.approx(ce.item() + 0.01 * per_seq.mean().item(), rel=1e-12)
    recorded = objective.batch_metrics(loss)
    assert recorded["batch_loss"] == pytest.approx(ce.item(), rel=1e-14)
    assert recorded["batch_z_loss"] == pytest.approx(0.01 * per_seq.mean().item(), rel=1e-12)


def test_z_loss_zero_gives_the_old_run_bit_for_bit_and_positive_changes_it(monkeypatch):
    config = tiny_lm_config()
    old = train_lm(config).metrics
    # the code before z-loss: the objective's loss is batch_loss, whatever it is asked
    monkeypatch.setattr(AdditionObjective, "loss", lambda self, model, batch: batch_loss(model, batch))
    reference = train_lm(config).metrics
    monkeypatch.undo()
    pd.testing.assert_frame_equal(old.reset_index(drop=True), reference.reset_index(drop=True))
    assert "batch_z_loss" not in set(old["metric"])

    with_z = train_lm(tiny_lm_config(train={"z_loss": 0.1})).metrics
    z_terms = _metric(with_z, "batch_z_loss")
    assert len(z_terms) == len(_metric(with_z, "batch_loss")) and (z_terms > 0).all()
    first = _metric(old, "batch_loss").index.min()
    assert _metric(with_z, "batch_loss")[first] == _metric(old, "batch_loss")[first]  # step 1: same weights
    assert not _metric(with_z, "batch_loss").equals(_metric(old, "batch_loss"))
