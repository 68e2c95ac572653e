"""A seeded synthetic reasoning task: n-digit addition with fast and slow (worked) responses.

Vocabulary (:data:`TOKENS`): the digits ``0``-``9`` (token id = digit), ``+``, ``=``, ``;``,
``<eos>``, the format tokens ``<fast>`` / ``<slow>`` and ``<pad>``. Operands are written with
``n`` digits (leading zeros), most significant first; the answer with ``n + 1`` digits.

A problem a + b (here 47 + 85 = 132, n = 2) and its responses::

    prompt      <slow> 4 7 + 8 5 =          (<fast> for the fast format)
    fast        1 3 2 <eos>
    slow        7 + 5 + 0 = 1 2 ; 4 + 8 + 1 = 1 3 ; 1 3 2 <eos>
    irrelevant  <steps of another problem, same length> 1 3 2 <eos>
    subtle      the slow response with one step's sum digit wrong, e.g. 7 + 5 + 0 = 1 6 ;
    corrupted   the slow response with ceil(corrupt_fraction × n) steps' sum digits wrong

A step, for digit position i from the least significant: ``a_i + b_i + c_i = c_{i+1} s_i ;``
(carry in c_i, carry out c_{i+1}, sum digit s_i), 9 tokens. The prompt's format token tells the
model which format to answer in, so one model knows both. Every response ends with the correct
answer; only the steps differ. A wrong digit is the true one plus a seeded offset in 1..9 (mod 10).

Sequences are prompt + response, right-padded; ``tokens`` are the sequence without its last
token and ``targets`` the sequence shifted by one (next-token prediction). ``mask`` is True where
the target is a response token (the loss is taken on those only, as in Li et al.);
``answer_mask`` where it is one of the n + 1 answer digits or ``<eos>`` (the tokens a fast
response consists of: the "answer-tokens-only" control of a slow sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from .config import TaskConfig

TOKENS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=", ";", "<eos>", "<fast>", "<slow>", "<pad>")
PLUS, EQUALS, SEP, EOS, FAST, SLOW, PAD = range(10, 17)
VOCAB_SIZE = len(TOKENS)
RESPONSES = ("fast", "slow", "irrelevant", "subtle", "corrupted")
STEP_LENGTH = 9


@dataclass(frozen=True)
class Problems:
    """N addition problems with everything their responses need; rows are problems.

    Attributes:
        a, b: (N,) operands in [0, 10**n_digits).
        donor_a, donor_b: (N,) operands of another problem of the same split, whose steps the
            ``irrelevant`` response uses.
        wrong_order: (N, n_digits) a random order of step positions: ``subtle`` corrupts step
            ``wrong_order[:, 0]``, ``corrupted`` the first ``n_wrong``.
        wrong_offset: (N, n_digits) in 1..9: a corrupted step's sum digit becomes (s + offset) mod 10.
        n_digits: operand width. n_wrong: wrong steps of a ``corrupted`` response.
    """

    a: np.ndarray
    b: np.ndarray
    donor_a: np.ndarray
    donor_b: np.ndarray
    wrong_order: np.ndarray
    wrong_offset: np.ndarray
    n_digits: int
    n_wrong: int

    def __len__(self) -> int:
        return len(self.a)

    def subset(self, index) -> "Problems":
        """The problems at ``index`` (a slice, or an integer array)."""
        arrays = {f.name: getattr(self, f.name)[index] for f in fields(self) if f.name not in ("n_digits", "n_wrong")}
        return Problems(**arrays, n_digits=self.n_digits, n_wrong=self.n_wrong)


@dataclass(frozen=True)
class Batch:
    """Encoded sequences: tokens, targets (N, T) long; mask, answer_mask (N, T) bool."""

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    answer_mask: torch.Tensor

    def answer_only(self) -> "Batch":
        """The same sequences with the loss on the answer tokens alone."""
        return Batch(self.tokens, self.targets, self.answer_mask, self.answer_mask)


def make_problems(a: np.ndarray, b: np.ndarray, n_digits: int, corrupt_fraction: float,
                  rng: np.random.Generator) -> Problems:
    """Problems a + b with seeded donors (a derangement: never the problem itself) and corruptions."""
    n = len(a)
    if n < 2:
        raise ValueError("irrelevant responses need at least 2 problems to take steps from")
    cycle = rng.permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[cycle] = np.roll(cycle, -1)  # one n-cycle: donor[i] != i
    order = np.argsort(rng.random((n, n_digits)), axis=1)
    return Problems(a=a, b=b, donor_a=a[donor], donor_b=b[donor], wrong_order=order,
                    wrong_offset=rng.integers(1, 10, size=(n, n_digits)), n_digits=n_digits,
                    n_wrong=math.ceil(corrupt_fraction * n_digits))


def task_splits(config: TaskConfig) -> tuple[Problems, Problems]:
    """(training, held-out) problems: distinct operand pairs drawn from ``config.split_seed``."""
    rng = np.random.default_rng(config.split_seed)
    n, total = config.n_digits, config.n_train + config.n_test
    codes = rng.choice(10 ** (2 * n), size=total, replace=False)
    a, b = codes // 10**n, codes % 10**n
    cut = config.n_train
    return (make_problems(a[:cut], b[:cut], n, config.corrupt_fraction, rng),
            make_problems(a[cut:], b[cut:], n, config.corrupt_fraction, rng))


def digits(x: np.ndarray, width: int) -> np.ndarray:
    """(N,) integers -> (N, width) decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (x[:, None] // powers) % 10


def prompt_tokens(problems: Problems, response: str) -> np.ndarray:
    """(N, 2n + 3): format token, a, ``+``, b, ``=``."""
    _check_response(response)
    n, rows = problems.n_digits, len(problems)
    fmt = np.full((rows, 1), FAST if response == "fast" else SLOW)
    return np.concatenate([fmt, digits(problems.a, n), np.full((rows, 1), PLUS),
                           digits(problems.b, n), np.full((rows, 1), EQUALS)], axis=1)


def _steps(a: np.ndarray, b: np.ndarray, n: int, wrong: np.ndarray | None, offset: np.ndarray) -> np.ndarray:
    """(N, 9n) step tokens, least significant digit first.

    ``wrong`` (N, n) marks the steps whose sum digit is shifted by ``offset``.
    """
    da, db = digits(a, n)[:, ::-1], digits(b, n)[:, ::-1]  # (N, n), least significant first
    carry = np.zeros(len(a), dtype=np.int64)
    rows = []
    for i in range(n):
        total = da[:, i] + db[:, i] + carry
        s = total % 10 if wrong is None else np.where(wrong[:, i], (total + offset[:, i]) % 10, total % 10)
        step = [da[:, i], np.full_like(s, PLUS), db[:, i], np.full_like(s, PLUS), carry,
                np.full_like(s, EQUALS), total // 10, s, np.full_like(s, SEP)]
        rows.append(np.stack(step, axis=1))  # (N, 9)
        carry = total // 10
    return np.concatenate(rows, axis=1)


def response_tokens(problems: Problems, response: str) -> np.ndarray:
    """(N, R) response tokens in the given format, ending with the answer and ``<eos>``."""
    _check_response(response)
    p, n = problems, problems.n_digits
    answer = np.concatenate([digits(p.a + p.b, n + 1), np.full((len(p), 1), EOS)], axis=1)
    if response == "fast":
        return answer
    wrong = None
    if response in ("subtle", "corrupted"):
        k = 1 if response == "subtle" else p.n_wrong
        wrong = np.zeros((len(p), n), dtype=bool)
        np.put_along_axis(wrong, p.wrong_order[:, :k], True, axis=1)
    a, b = (p.donor_a, p.donor_b) if response == "irrelevant" else (p.a, p.b)
    return np.concatenate([_steps(a, b, n, wrong, p.wrong_offset), answer], axis=1)


def sequence_length(n_digits: int, response: str) -> int:
    """Prompt plus response length in tokens (the model's ``max_len`` is the slow one)."""
    return 2 * n_digits + 3 + (n_digits + 2) + (0 if response == "fast" else STEP_LENGTH * n_digits)


def encode(problems: Problems, response: str, length: int | None = None) -> Batch:
    """Next-token training sequences of ``problems`` answered in format ``response``.

    Args:
        problems: N problems. response: one of :data:`RESPONSES`.
        length: pad ``tokens`` to this many positions (>= the format's own length minus 1), so
            that batches of different formats can be stacked; None = no padding.

    Returns:
        Batch with tokens/targets (N, T), mask True on response targets, answer_mask True on the
        answer digits and ``<eos>``.
    """
    prompt, resp = prompt_tokens(problems, response), response_tokens(problems, response)
    seq = np.concatenate([prompt, resp], axis=1)  # (N, P + R)
    t = seq.shape[1] - 1 if length is None else length
    if t < seq.shape[1] - 1:
        raise ValueError(f"length={length} is shorter than the {response} sequences ({seq.shape[1] - 1})")
    seq = np.pad(seq, ((0, 0), (0, t + 1 - seq.shape[1])), constant_values=PAD)
    seq_t = torch.from_numpy(seq).long()
    # Target j is sequence token j + 1; the response occupies sequence tokens P .. P + R - 1.
    position = torch.arange(t).expand(len(problems), t)  # (N, T)
    first, end = prompt.shape[1] - 1, prompt.shape[1] - 1 + resp.shape[1]
    mask = (position >= first) & (position < end)
    answer_mask = (position >= end - (problems.n_digits + 2)) & (position < end)
    return Batch(seq_t[:, :-1], seq_t[:, 1:], mask, answer_mask)


def decode_answers(responses: torch.Tensor | np.ndarray, n_digits: int) -> np.ndarray:
    """(N, R) response tokens -> (N,) the integer their answer digits spell; -1 where a non-digit sits there."""
    tokens = np.asarray(responses)[:, -(n_digits + 2):-1]  # the answer digits before <eos>
    value = (tokens * 10 ** np.arange(n_digits, -1, -1)).sum(axis=1)
    return np.where((tokens <= 9).all(axis=1), value, -1)


def decode_steps(responses: torch.Tensor | np.ndarray, n_digits: int) -> np.ndarray:
    """(N, R) slow-type response tokens -> (N, n_digits, 9) step tokens, least significant first."""
    return np.asarray(responses)[:, : STEP_LENGTH * n_digits].reshape(-1, n_digits, STEP_LENGTH)


@torch.no_grad()
def greedy_responses(model: torch.nn.Module, problems: Problems, response: str) -> torch.Tensor:
    """The model's greedy (argmax) continuation of each prompt, as long as a ``response`` answer.

    All problems are decoded together, one forward pass per generated token.

    Args:
        model: tokens (N, T) -> logits (N, T, V). problems: N problems.
        response: ``"fast"`` or ``"slow"`` (the format token of the prompt).

    Returns:
        (N, R) generated tokens on the model's device.
    """
    if response not in ("fast", "slow"):
        raise ValueError(f"greedy decoding answers in 'fast' or 'slow' format, not {response!r}")
    device = next(model.parameters()).device
    seq = torch.from_numpy(prompt_tokens(problems, response)).long().to(device)  # (N, P)
    start = seq.shape[1]
    was_training = model.training
    model.eval()
    try:
        for _ in range(sequence_length(problems.n_digits, response) - start):
            next_token = model(seq)[:, -1].argmax(dim=-1, keepdim=True)  # (N, 1)
            seq = torch.cat([seq, next_token], dim=1)
    finally:
        model.train(was_training)
    return seq[:, start:]


def greedy_accuracy(model: torch.nn.Module, problems: Problems, response: str) -> dict[str, float]:
    """Greedy exact-match accuracy in one format.

    Returns:
        ``answer``: share of problems whose generated answer digits are the right sum;
        ``sequence``: share whose whole generated response (steps included) is the target.
    """
    generated = greedy_responses(model, problems, response).cpu().numpy()
    target = response_tokens(problems, response)
    return {"answer": float((decode_answers(generated, problems.n_digits) == problems.a + problems.b).mean()),
            "sequence": float((generated == target).all(axis=1).mean())}


def response_exact_match(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Whether each sequence's teacher-forced argmax equals its target at every masked position.

    Greedy decoding reproduces a whole response exactly when, and only when, the argmax given
    the correct prefix is the target at every response position (each greedy step then sees that
    prefix), so this is greedy whole-response exact match, up to floating-point ties between
    logits, from one forward pass instead of one per generated token.

    Args:
        logits: (N, T, V) of ``batch.tokens``. batch: its targets and mask.

    Returns:
        (N,) bool.
    """
    hit = (logits.argmax(dim=-1) == batch.targets) | ~batch.mask  # (N, T)
    return hit.all(dim=1)


def detokenize(tokens) -> str:
    """Token ids -> readable text, e.g. ``"<slow> 4 7 + 8 5 = ..."``."""
    return " ".join(TOKENS[int(t)] for t in tokens)


def _check_response(response: str) -> None:
    if response not in RESPONSES:
        raise ValueError(f"unknown response format {response!r}: one of {', '.join(RESPONSES)}")
