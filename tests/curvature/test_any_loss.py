"""Curvature of losses other than one batch of class labels, against the independent dense references.

Every number of :class:`~analysis_lib.curvature.hessian.HessianOperator` (``dense``, ``matvec``,
``gradient``, ``loss``, ``kind="ggn"``), :func:`~analysis_lib.curvature.lanczos.top_eigenpairs`,
the trace estimators, :func:`~analysis_lib.curvature.trace.layer_traces` and
:func:`~analysis_lib.curvature.diagonal.hessian_diagonal` is compared in float64 with
:mod:`tests.curvature.any_loss_reference`, which concatenates the batches itself, writes its own
losses in plain torch and differentiates with ``torch.autograd.functional`` (Hessian, Jacobian) or
central differences of gradients. Cases: squared error with 1 and 3 outputs (tanh MLP), a
token-level language model (Embedding, LayerNorm, Linear; T = V; ``CrossEntropy`` with ignored
targets spread unevenly over batches of 3 and 5 sequences), dict and tuple inputs over batches of 4
and 7, a Conv2d classifier, a shared layer and a functional ``torch.tanh`` (where the exact
diagonal does not hold), a ReLU MLP (where it does), chunking, a loss that supplies its own output
Hessian, an interrupted first product, and the refusals (each a ValueError naming the argument).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.curvature.diagonal import hessian_diagonal, piecewise_linear_structure
from analysis_lib.curvature.hessian import HessianOperator
from analysis_lib.curvature.lanczos import top_eigenpairs
from analysis_lib.curvature.trace import exact_trace, hutchpp, layer_traces
from analysis_lib.training.losses import MSE, CrossEntropy
from tests.curvature import any_loss_reference as ref

RTOL, ATOL = 1e-9, 1e-12


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL, atol: float = ATOL, msg=None):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=msg)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def _seeded(seed: int, build):
    """``build()`` with torch's global RNG seeded and restored afterwards, in float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().double()


def _block_traces(model: nn.Module, H: torch.Tensor) -> dict[str, float]:
    traces = {layer: torch.trace(H[idx][:, idx]).item() for layer, idx in ref.layer_indices(model).items()}
    return {"model": torch.trace(H).item(), **traces}


# -- squared error, 1 and 3 outputs -----------------------------------------------------------------


def _regression(n_outputs: int, sizes=(6, 9), seed: int = 0):
    model = _seeded(seed, lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, n_outputs)))
    data = [(_randn(n, 3, seed=seed + 10 + i), _randn(n, n_outputs, seed=seed + 20 + i))
            for i, n in enumerate(sizes)]
    return model, data


@pytest.fixture(params=[1, 3], ids=["1-output", "3-outputs"])
def regression(request):
    return _regression(request.param)


@pytest.mark.parametrize("loss_fn", [F.mse_loss, MSE(), nn.MSELoss()], ids=["F.mse_loss", "MSE", "nn.MSELoss"])
def test_mse_products_match_the_reference(regression, loss_fn):
    model, data = regression
    H = ref.dense_hessian(model, ref.squared_error, data)
    op = HessianOperator(model, loss_fn, data)
    _close(op.dense(), H)
    v = _randn(op.dim, seed=5)
    _close(op.matvec(v), H @ v)
    _close(op.gradient(), ref.gradient(model, ref.squared_error, data))
    assert op.loss() == pytest.approx(ref.loss_at(model, ref.squared_error, data)(ref.flat_parameters(model)).item(),
                                      rel=1e-12)


def test_mse_top_eigenvalues_match_eigvalsh(regression):
    model, data = regression
    H = ref.dense_hessian(model, ref.squared_error, data)
    op = HessianOperator(model, F.mse_loss, data)
    result = top_eigenpairs(op.matvec, op.dim, 3, tol=1e-10, max_steps=op.dim, strict=True)
    expected = torch.linalg.eigvalsh(H).flip(0)[:3]
    _close(result.eigenvalues, expected, rtol=1e-8, atol=1e-10)


def test_mse_traces_match_the_reference(regression):
    model, data = regression
    trace = torch.trace(ref.dense_hessian(model, ref.squared_error, data)).item()
    op = HessianOperator(model, F.mse_loss, data)
    assert exact_trace(op.matvec, op.dim).estimate == pytest.approx(trace, rel=1e-9)
    est = hutchpp(op.matvec, op.dim, 30, seed=0)
    assert est.se > 0
    assert abs(est.estimate - trace) <= 4 * est.se


def test_mse_ggn_matches_the_reference_and_is_psd(regression):
    model, data = regression
    G_ref = ref.dense_ggn(model, ref.squared_error_output_hessian, data)
    _close(ref.dense_ggn(model, ref.autograd_output_hessian(ref.squared_error), data), G_ref)  # the reference itself
    G = HessianOperator(model, F.mse_loss, data, kind="ggn").dense()
    _close(G, G_ref)
    assert torch.linalg.eigvalsh(G).min().item() > -1e-12 * G.abs().max().item()
    assert not torch.allclose(G, ref.dense_hessian(model, ref.squared_error, data))  # tanh: G differs from H


# -- token-level language model ---------------------------------------------------------------------

VOCAB = LENGTH = 4  # T == V: a class axis read as the time axis would go unnoticed by shapes


class TinyLM(nn.Module):
    """(B, T) tokens -> (B, T, V) logits through Embedding, LayerNorm and Linear."""

    def __init__(self, vocab: int = VOCAB, d: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        with torch.no_grad():  # a LayerNorm that is not the identity map
            self.norm.weight.add_(0.3 * torch.randn(d))
            self.norm.bias.add_(0.3 * torch.randn(d))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(tokens)))


def _lm_problem(ignore_index: int = -100):
    """TinyLM and batches of 3 and 5 sequences with 9 and 12 counted targets (ignored unevenly)."""
    model = _seeded(1, TinyLM)
    data = []
    for i, n in enumerate((3, 5)):
        tokens = torch.randint(0, VOCAB, (n, LENGTH), generator=_gen(30 + i))
        targets = torch.randint(0, VOCAB, (n, LENGTH), generator=_gen(40 + i))
        targets[targets == ignore_index] = (ignore_index + 1) % VOCAB  # only the positions below are ignored
        data.append((tokens, targets))
    data[0][1][0, 1] = data[0][1][1, 3] = data[0][1][2, 0] = ignore_index  # 3 of 12 ignored
    data[1][1][2:4] = ignore_index  # rows 2 and 3 entirely: 8 of 20 ignored
    return model, data


def _token_ce(ignore_index: int = -100):
    return functools.partial(ref.token_cross_entropy, ignore_index=ignore_index)


def test_reference_autograd_hessian_of_layernorm_agrees_with_finite_differences():
    model, data = _lm_problem()
    H = ref.dense_hessian(model, _token_ce(), data)
    H_fd = ref.dense_hessian(model, _token_ce(), data, method="fd")
    assert (H - H_fd).abs().max().item() <= 1e-7 * H.abs().max().item()


@pytest.mark.parametrize("ignore_index", [-100, 2], ids=["ignore=-100", "ignore=2"])
def test_token_lm_products_match_the_reference(ignore_index):
    model, data = _lm_problem(ignore_index)
    loss = _token_ce(ignore_index)
    H = ref.dense_hessian(model, loss, data)
    op = HessianOperator(model, CrossEntropy(ignore_index=ignore_index), data)
    assert op.dim == H.shape[0] == 4 * 3 + 3 + 3 + 3 * 4 + 4
    _close(op.dense(), H)
    v = _randn(op.dim, seed=6)
    _close(op.matvec(v), H @ v)
    _close(op.gradient(), ref.gradient(model, loss, data))
    assert op.loss() == pytest.approx(ref.loss_at(model, loss, data)(ref.flat_parameters(model)).item(), rel=1e-12)


def test_token_lm_ggn_matches_the_reference_and_is_psd():
    model, data = _lm_problem()
    G_ref = ref.dense_ggn(model, ref.softmax_output_hessian, data)
    _close(ref.dense_ggn(model, ref.autograd_output_hessian(_token_ce()), data), G_ref)  # the reference itself
    G = HessianOperator(model, CrossEntropy(ignore_index=-100), data, kind="ggn").dense()
    _close(G, G_ref)
    assert torch.linalg.eigvalsh(G).min().item() > -1e-12 * G.abs().max().item()


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_f_cross_entropy_on_time_by_vocab_logits_is_refused_as_ambiguous(kind):
    model, data = _lm_problem()
    op = HessianOperator(model, F.cross_entropy, data, kind=kind)
    with pytest.raises(ValueError, match="ambiguous"):
        op.matvec(torch.ones(op.dim, dtype=torch.float64))


def test_chunks_smaller_than_every_batch_give_the_same_matrix():
    model, data = _lm_problem()  # chunks of 2: (2, 1) and (2, 2, 1); the chunk of rows 2-3 counts no target
    whole = HessianOperator(model, CrossEntropy(), data).dense()
    chunked = HessianOperator(model, CrossEntropy(), data, chunk_size=2).dense()
    _close(chunked, whole, rtol=1e-12, atol=1e-14)
    _close(chunked, ref.dense_hessian(model, _token_ce(), data))
    regression_model, regression_data = _regression(3)
    _close(HessianOperator(regression_model, F.mse_loss, regression_data, chunk_size=4, kind="ggn").dense(),
           ref.dense_ggn(regression_model, ref.squared_error_output_hessian, regression_data))


# -- dict and tuple inputs over batches of unequal size -------------------------------------------


class MaskedMLP(nn.Module):
    """logits = fc2(tanh(fc1(x)) ⊙ mask), called as ``model(x, mask)`` or ``model(x=x, mask=mask)``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x, mask):
        return self.fc2(torch.tanh(self.fc1(x)) * mask)


@pytest.mark.parametrize("packing", ["dict", "tuple"])
def test_dict_and_tuple_inputs_over_unequal_batches_match_the_reference(packing):
    model = _seeded(2, MaskedMLP)
    data = []
    for i, n in enumerate((4, 7)):
        x = _randn(n, 3, seed=50 + i)
        mask = (torch.rand(n, 4, generator=_gen(60 + i)) < 0.7).double()
        y = torch.randint(0, 2, (n,), generator=_gen(70 + i))
        data.append(({"x": x, "mask": mask} if packing == "dict" else (x, mask), y))
    H = ref.dense_hessian(model, ref.token_cross_entropy, data)
    op = HessianOperator(model, F.cross_entropy, data)
    _close(op.dense(), H)
    _close(op.gradient(), ref.gradient(model, ref.token_cross_entropy, data))
    G = HessianOperator(model, F.cross_entropy, data, kind="ggn").dense()
    _close(G, ref.dense_ggn(model, ref.softmax_output_hessian, data))


# -- Conv2d classifier ------------------------------------------------------------------------------


def test_conv2d_products_and_layer_traces_match_the_reference():
    model = _seeded(3, lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)))
    data = [(_randn(n, 1, 5, 5, seed=80 + i), torch.randint(0, 3, (n,), generator=_gen(90 + i)))
            for i, n in enumerate((4, 6))]
    H = ref.dense_hessian(model, ref.token_cross_entropy, data)
    _close(HessianOperator(model, F.cross_entropy, data).dense(), H)
    assert piecewise_linear_structure(model) is not None and hessian_diagonal(model, F.cross_entropy, data) is None
    table = layer_traces(model, F.cross_entropy, data).set_index("layer")
    assert (table["method"] == "exact").all()
    expected = _block_traces(model, H)
    assert set(table.index) == set(expected) == {"model", "0", "3"}
    for layer, value in expected.items():
        assert table.loc[layer, "estimate"] == pytest.approx(value, rel=1e-9), layer


# -- where the exact diagonal does and does not hold ------------------------------------------------


class SharedLayer(nn.Module):
    """One nn.Linear applied twice: out(relu(fc(relu(fc(x)))))."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(F.relu(self.fc(F.relu(self.fc(x)))))


class FunctionalTanh(nn.Module):
    """Only nn.Linear children, with torch.tanh called in forward."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _classes(sizes=(5, 8), n_features: int = 4, n_classes: int = 3, seed: int = 100):
    return [(_randn(n, n_features, seed=seed + i), torch.randint(0, n_classes, (n,), generator=_gen(seed + 10 + i)))
            for i, n in enumerate(sizes)]


@pytest.mark.parametrize("model_class", [SharedLayer, FunctionalTanh], ids=["shared-layer", "functional-tanh"])
def test_layer_traces_fall_back_where_the_diagonal_is_not_exact(model_class):
    model, data = _seeded(4, model_class), _classes()
    assert hessian_diagonal(model, F.cross_entropy, data) is None
    reason = piecewise_linear_structure(model)
    assert isinstance(reason, str) and reason
    H = ref.dense_hessian(model, ref.token_cross_entropy, data)
    table = layer_traces(model, F.cross_entropy, data).set_index("layer")
    assert (table["method"] != "exact diagonal").all()
    expected = _block_traces(model, H)
    assert set(table.index) == set(expected)
    for layer, value in expected.items():
        assert table.loc[layer, "estimate"] == pytest.approx(value, rel=1e-9), layer


def _relu_mse():
    model = _seeded(5, lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)))
    data = [(_randn(n, 4, seed=110 + i), _randn(n, 2, seed=120 + i)) for i, n in enumerate((5, 8))]
    return model, F.mse_loss, ref.squared_error, data


def _relu_ignored_cross_entropy():
    model = _seeded(6, lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)))
    data = _classes(seed=130)
    data[0][1][1] = -100  # 4 of 5 count
    data[1][1][[0, 3, 6]] = -100  # 5 of 8 count: unequal counts, so per-batch weights matter
    return model, F.cross_entropy, ref.token_cross_entropy, data


@pytest.mark.parametrize("case", [_relu_mse, _relu_ignored_cross_entropy], ids=["mse", "cross-entropy-ignored"])
def test_hessian_diagonal_of_a_relu_mlp_matches_the_reference(case):
    model, loss_fn, ref_loss, data = case()
    assert piecewise_linear_structure(model) is None
    H = ref.dense_hessian(model, ref_loss, data)
    diag = hessian_diagonal(model, loss_fn, data)
    flat = torch.cat([diag[n].reshape(-1) for n, _ in model.named_parameters()])
    _close(flat, torch.diagonal(H))
    table = layer_traces(model, loss_fn, data).set_index("layer")
    assert (table["method"] == "exact diagonal").all()
    for layer, value in _block_traces(model, H).items():
        assert table.loc[layer, "estimate"] == pytest.approx(value, rel=1e-9), layer


# -- a loss that supplies its own output Hessian ----------------------------------------------------


class WeightedMSE:
    """Σ_k w_k (o − t)² averaged over every element, with its Hessian in output space."""

    def __init__(self, weights: torch.Tensor):
        self.weights = weights

    def __call__(self, outputs, targets):
        return (self.weights * (outputs - targets) ** 2).mean()

    def output_hessian_vector(self, outputs, targets, v):
        return 2.0 * self.weights * v / outputs.numel()


def test_a_loss_supplying_its_output_hessian_has_the_reference_ggn():
    model, data = _regression(3, sizes=(5, 8), seed=7)
    weights = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    n_total = sum(len(t) for _, t in data)

    def analytic(outputs, targets):
        return torch.diag((2.0 * weights / outputs.numel()).repeat(n_total))

    G_ref = ref.dense_ggn(model, analytic, data)
    _close(ref.dense_ggn(model, ref.autograd_output_hessian(ref.weighted_squared_error(weights)), data), G_ref)
    loss = WeightedMSE(weights)
    G = HessianOperator(model, loss, data, kind="ggn").dense()
    _close(G, G_ref)
    assert torch.linalg.eigvalsh(G).min().item() > -1e-12 * G.abs().max().item()
    H_ref = ref.dense_hessian(model, ref.weighted_squared_error(weights), data)
    _close(HessianOperator(model, loss, data).dense(), H_ref)


# -- an interrupted first product ---------------------------------------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_first_product_leaves_no_partial_cache(error):
    model, data = _regression(3, sizes=(5, 8), seed=8)
    calls = []

    def flaky(outputs, targets):
        calls.append(len(targets))
        if len(calls) == 2:  # the second batch of the first product
            raise error("interrupted")
        return F.mse_loss(outputs, targets)

    op = HessianOperator(model, flaky, data)
    v = _randn(op.dim, seed=9)
    with pytest.raises(error, match="interrupted"):
        op.matvec(v)
    H = ref.dense_hessian(model, ref.squared_error, data)
    _close(op.matvec(v), H @ v)
    _close(op.dense(), H)
    _close(op.gradient(), ref.gradient(model, ref.squared_error, data))
    assert calls == [5, 8, 5, 8]  # the retry rebuilt both batches, and kept them


# -- refusals ---------------------------------------------------------------------------------------


def _refusals():
    model, data = _regression(1)
    x, y = data[0]
    lm, lm_data = _lm_problem()
    all_ignored = [(tokens, torch.full_like(targets, -100)) for tokens, targets in lm_data]
    classifier, features = _seeded(4, FunctionalTanh), _classes()[0][0]
    dim = sum(p.numel() for p in model.parameters())
    ones = torch.ones(dim, dtype=torch.float64)
    flat_y = (x, y[:, 0])  # (N, 1) outputs against (N,) targets
    return {
        "ggn-of-a-lambda": ("loss_fn", lambda: HessianOperator(model, lambda o, t: ((o - t) ** 2).mean(), data,
                                                               kind="ggn")),
        "bogus-kind": ("kind", lambda: HessianOperator(model, F.mse_loss, data, kind="bogus")),
        "unknown-param": ("params", lambda: HessianOperator(model, F.mse_loss, data, params=["0.weight", "9.bias"])),
        "no-params": ("params", lambda: HessianOperator(model, F.mse_loss, data, params=[])),
        "bare-tensor": ("data", lambda: HessianOperator(model, F.mse_loss, x)),
        "empty-list": ("data", lambda: HessianOperator(model, F.mse_loss, [])),
        "list-of-a-tensor": ("data", lambda: HessianOperator(model, F.mse_loss, [x])),
        "mse-N1-vs-N": ("targets", lambda: HessianOperator(model, F.mse_loss, flat_y).matvec(ones)),
        "mse-N1-vs-N-ggn": ("targets", lambda: HessianOperator(model, F.mse_loss, flat_y, kind="ggn").matvec(ones)),
        "mse-module-N1-vs-N": ("targets", lambda: HessianOperator(model, nn.MSELoss(), flat_y).loss()),
        "all-targets-ignored": ("data", lambda: HessianOperator(lm, CrossEntropy(), all_ignored)),
        "all-class-targets-ignored": ("data", lambda: HessianOperator(
            classifier, F.cross_entropy, (features, torch.full((len(features),), -100)))),
        "wrong-length-v": ("v", lambda: HessianOperator(model, F.mse_loss, data).matvec(ones[:-1])),
    }


@pytest.mark.parametrize("case", list(_refusals()))
def test_refusals_name_the_argument(case):
    argument, call = _refusals()[case]
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        call()


def test_a_batch_whose_targets_are_all_ignored_adds_nothing():
    model, data = _lm_problem()
    tokens, targets = data[0]
    with_empty = [*data, (tokens, torch.full_like(targets, -100))]
    _close(HessianOperator(model, CrossEntropy(), with_empty).dense(), ref.dense_hessian(model, _token_ce(), data))


def test_a_dataloader_is_read_once_and_weighted_like_the_concatenated_data():
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(11, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(11, 2, generator=gen, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=gen)  # batches of 4, 4, 3
    from_loader = HessianOperator(model, F.mse_loss, loader)
    assert from_loader.description["n_batches"] == 3
    H = from_loader.dense()
    torch.testing.assert_close(H, from_loader.dense())  # the shuffled loader is read once, not per product
    torch.testing.assert_close(H, HessianOperator(model, F.mse_loss, (x, y)).dense(), rtol=1e-10, atol=1e-12)
