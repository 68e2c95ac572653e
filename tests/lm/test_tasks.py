"""The addition task: formats, steps, masks and greedy decoding.

Every format decodes to the right answer, steps are right (or wrong as designed), masks cover the response
only, and greedy decoding matches a per-example loop.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from analysis_lib.lm.config import TaskConfig, TransformerConfig
from analysis_lib.lm.tasks import (
    EOS,
    PAD,
    RESPONSES,
    SEP,
    STEP_LENGTH,
    VOCAB_SIZE,
    decode_answers,
    decode_steps,
    detokenize,
    digits,
    encode,
    greedy_accuracy,
    greedy_responses,
    prompt_tokens,
    response_exact_match,
    response_tokens,
    sequence_length,
    task_splits,
)
from analysis_lib.lm.transformer import build_transformer
from analysis_lib.training.losses import sequence_losses


def _problems(n_digits=3, n=40, fraction=0.5):
    train, _ = task_splits(TaskConfig(n_digits=n_digits, n_train=n, n_test=10, corrupt_fraction=fraction))
    return train


def test_the_docstring_example_reads_as_written():
    p = _problems(2).subset(slice(0, 1))
    p = dataclasses.replace(p, a=np.array([47]), b=np.array([85]))
    assert detokenize(prompt_tokens(p, "slow")[0]) == "<slow> 4 7 + 8 5 ="
    assert detokenize(response_tokens(p, "slow")[0]) == "7 + 5 + 0 = 1 2 ; 4 + 8 + 1 = 1 3 ; 1 3 2 <eos>"
    assert detokenize(response_tokens(p, "fast")[0]) == "1 3 2 <eos>"


@pytest.mark.parametrize("n_digits", [1, 2, 3])
@pytest.mark.parametrize("response", RESPONSES)
def test_every_format_decodes_to_the_right_answer(n_digits, response):
    p = _problems(n_digits)
    tokens = response_tokens(p, response)
    assert tokens.shape[1] == sequence_length(n_digits, response) - (2 * n_digits + 3)
    np.testing.assert_array_equal(decode_answers(tokens, n_digits), p.a + p.b)
    assert (tokens[:, -1] == EOS).all()


@pytest.mark.parametrize("n_digits", [1, 3])
def test_slow_steps_are_correct_column_additions(n_digits):
    p = _problems(n_digits)
    steps = decode_steps(response_tokens(p, "slow"), n_digits)  # (N, n, 9)
    a, b = digits(p.a, n_digits)[:, ::-1], digits(p.b, n_digits)[:, ::-1]
    for row in range(len(p)):
        carry = 0
        for i in range(n_digits):
            x, _, y, _, c_in, _, c_out, s, sep = steps[row, i]
            assert (x, y, c_in, sep) == (a[row, i], b[row, i], carry, SEP)
            assert 10 * c_out + s == x + y + c_in
            carry = c_out
        assert carry == (p.a[row] + p.b[row]) // 10**n_digits


def test_irrelevant_steps_come_from_another_problem_of_the_split():
    p = _problems(2)
    irrelevant, slow = response_tokens(p, "irrelevant"), response_tokens(p, "slow")
    assert irrelevant.shape == slow.shape
    pairs = {(a, b): i for i, (a, b) in enumerate(zip(p.a, p.b))}
    n_steps = STEP_LENGTH * 2
    for row in range(len(p)):
        donor = pairs[p.donor_a[row], p.donor_b[row]]  # the donor is a problem of the same split
        assert donor != row
        np.testing.assert_array_equal(irrelevant[row, :n_steps], slow[donor, :n_steps])
        assert not np.array_equal(irrelevant[row, :n_steps], slow[row, :n_steps])
        np.testing.assert_array_equal(irrelevant[row, n_steps:], slow[row, n_steps:])


def test_subtle_corruption_changes_exactly_one_step_digit():
    p = _problems(3)
    subtle, slow = response_tokens(p, "subtle"), response_tokens(p, "slow")
    differs = subtle != slow
    assert (differs.sum(axis=1) == 1).all()
    column = differs.argmax(axis=1)
    assert (column < STEP_LENGTH * 3).all() and (column % STEP_LENGTH == 7).all()  # a step's sum digit
    assert (subtle[differs] <= 9).all()
    np.testing.assert_array_equal(column // STEP_LENGTH, p.wrong_order[:, 0])


@pytest.mark.parametrize("fraction,wrong", [(0.2, 1), (0.5, 2), (1.0, 3)])
def test_corrupted_responses_have_the_configured_share_of_wrong_steps(fraction, wrong):
    p = _problems(3, fraction=fraction)
    corrupted, slow, subtle = (response_tokens(p, r) for r in ("corrupted", "slow", "subtle"))
    differs = corrupted != slow
    assert (differs.sum(axis=1) == wrong).all()
    assert (differs[:, STEP_LENGTH * 3:] == 0).all()  # the answer stays correct
    assert ((subtle != slow) <= differs).all()  # the subtle step is one of the corrupted ones


def test_splits_are_seeded_distinct_and_disjoint():
    config = TaskConfig(n_digits=2, n_train=300, n_test=100)
    (train, test), (again, _) = task_splits(config), task_splits(config)
    np.testing.assert_array_equal(train.a, again.a)
    np.testing.assert_array_equal(train.wrong_offset, again.wrong_offset)
    codes = [set(zip(s.a.tolist(), s.b.tolist())) for s in (train, test)]
    assert len(codes[0]) == 300 and len(codes[1]) == 100 and not codes[0] & codes[1]
    other, _ = task_splits(TaskConfig(n_digits=2, n_train=300, n_test=100, split_seed=1))
    assert not np.array_equal(train.a, other.a)


@pytest.mark.parametrize("response", RESPONSES)
def test_targets_are_next_tokens_and_masks_cover_response_and_answer(response):
    p = _problems(2, n=6)
    batch, resp = encode(p, response), torch.from_numpy(response_tokens(p, response))
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1])
    assert batch.tokens[0, 0].item() == prompt_tokens(p, response)[0, 0]
    for row in range(len(p)):
        assert torch.equal(batch.targets[row][batch.mask[row]], resp[row])
        assert torch.equal(batch.targets[row][batch.answer_mask[row]], resp[row, -4:])
    assert torch.equal(batch.answer_only().mask, batch.answer_mask)


def test_padding_is_masked_out_and_fast_masks_equal_answer_masks():
    p = _problems(2, n=6)
    length = sequence_length(2, "slow") - 1
    fast = encode(p, "fast", length)
    assert fast.tokens.shape == (6, length)
    assert (fast.targets[:, sequence_length(2, "fast") - 1:] == PAD).all()
    assert torch.equal(fast.mask, fast.answer_mask)
    assert fast.mask.sum(dim=1).eq(4).all()
    with pytest.raises(ValueError, match="shorter"):
        encode(p, "slow", length - 1)


def test_a_prompt_target_changes_nothing_in_the_loss():
    p = _problems(2, n=8)
    batch = encode(p, "slow")
    logits = torch.randn(*batch.tokens.shape, VOCAB_SIZE, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    base = sequence_losses(logits, batch.targets, batch.mask)
    prompt_changed, response_changed = batch.targets.clone(), batch.targets.clone()
    prompt_changed[:, :5] = (prompt_changed[:, :5] + 3) % VOCAB_SIZE
    response_changed[:, 8] = (response_changed[:, 8] + 3) % VOCAB_SIZE
    assert torch.equal(sequence_losses(logits, prompt_changed, batch.mask), base)
    assert not torch.allclose(sequence_losses(logits, response_changed, batch.mask), base)


class _Oracle(torch.nn.Module):
    """Puts all probability on the next token of fixed sequences (one per row)."""

    def __init__(self, sequences: np.ndarray):
        super().__init__()
        self.sequences = torch.from_numpy(sequences).long()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):  # (N, T) -> (N, T, V)
        t = tokens.shape[1]
        return torch.nn.functional.one_hot(self.sequences[:, 1: t + 1], VOCAB_SIZE).double()


def test_greedy_accuracy_scores_answers_and_whole_sequences():
    p = _problems(2, n=12)
    full = {r: np.concatenate([prompt_tokens(p, r), response_tokens(p, r)], axis=1) for r in RESPONSES}
    assert greedy_accuracy(_Oracle(full["slow"]), p, "slow") == {"answer": 1.0, "sequence": 1.0}
    assert greedy_accuracy(_Oracle(full["fast"]), p, "fast") == {"answer": 1.0, "sequence": 1.0}
    assert greedy_accuracy(_Oracle(full["subtle"]), p, "slow") == {"answer": 1.0, "sequence": 0.0}
    wrong = full["fast"].copy()
    wrong[:6, -2] = (wrong[:6, -2] + 1) % 10  # last answer digit wrong for half the problems
    assert greedy_accuracy(_Oracle(wrong), p, "fast") == {"answer": 0.5, "sequence": 0.5}
    with pytest.raises(ValueError, match="'fast' or 'slow'"):
        greedy_responses(_Oracle(full["slow"]), p, "subtle")


@pytest.mark.parametrize("sequences,response", [("slow", "slow"), ("subtle", "slow"), ("wrong", "fast")])
def test_teacher_forced_exact_match_equals_greedy_whole_response_match(sequences, response):
    p = _problems(2, n=12)
    full = {r: np.concatenate([prompt_tokens(p, r), response_tokens(p, r)], axis=1) for r in ("slow", "subtle", "fast")}
    full["wrong"] = full["fast"].copy()
    full["wrong"][::3, -3] = (full["wrong"][::3, -3] + 1) % 10
    oracle, batch = _Oracle(full[sequences]), encode(p, response)
    greedy = greedy_responses(oracle, p, response).numpy()
    expected = torch.from_numpy((greedy == response_tokens(p, response)).all(axis=1))
    assert torch.equal(response_exact_match(oracle(batch.tokens), batch), expected)
    assert expected.any() or sequences == "subtle"


def test_batched_greedy_decoding_equals_one_example_at_a_time():
    p = _problems(2, n=5)
    model = build_transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32), VOCAB_SIZE,
                              sequence_length(2, "slow") - 1, seed=1).double()
    with torch.no_grad():  # sharpen the random model so that its argmax varies along the sequence
        model.unembed.weight.mul_(200)
    batched = greedy_responses(model, p, "slow")
    for row in range(len(p)):
        seq = torch.from_numpy(prompt_tokens(p.subset([row]), "slow")).long()
        for _ in range(batched.shape[1]):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(seq[0, -batched.shape[1]:], batched[row])
    assert len(set(batched.flatten().tolist())) > 2
