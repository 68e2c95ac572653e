"""HessianOperator against independent dense references in float64.

References come from tests.reference with the test-side loss tests.cases.cross_entropy: products of the whole
model and of layer blocks, chunked sums, a tiny transformer with a masked sequence loss, the Gauss-Newton kind,
an interrupted first product, and the caller's model left as it was.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis_lib.curvature.hessian import HessianOperator
from analysis_lib.layers import layer_blocks
from tests.cases import MODEL_CASES, classification_problem, cross_entropy, sequence_problem
from tests.reference import dense_hessian, fd_hessian


@pytest.fixture(params=MODEL_CASES, ids=[m[0] for m in MODEL_CASES])
def problem(request):
    _, config, n_features = request.param
    return classification_problem(config, n_features)


def _vector(dim: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_hvp_matches_dense_hessian(problem):
    model, x, y = problem
    H = dense_hessian(model, cross_entropy, x, y)
    op = HessianOperator(model, F.cross_entropy, (x, y), chunk_size=7)  # chunks must add up to the mean loss
    v = _vector(op.dim)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.dense(), H, rtol=1e-10, atol=1e-12)


def test_block_hvp_matches_the_block_of_the_dense_hessian(problem):
    model, x, y = problem
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    H = dense_hessian(model, cross_entropy, x, y)
    for layer, block in layer_blocks(model).items():
        idx = torch.cat([torch.arange(starts[names.index(b)], starts[names.index(b)] + sizes[names.index(b)])
                         for b in block])
        op = HessianOperator(model, F.cross_entropy, (x, y), params=block)
        torch.testing.assert_close(op.dense(), H[idx][:, idx], rtol=1e-10, atol=1e-12, msg=layer)


def test_operator_leaves_the_model_untouched_and_does_not_accumulate():
    model, x, y = classification_problem(*MODEL_CASES[2][1:])  # BatchNorm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    ops = [HessianOperator(model, F.cross_entropy, (x, y), train_mode=mode) for mode in (False, True, False)]
    v = torch.ones(ops[0].dim, dtype=torch.float64)
    results = [op.matvec(v) for op in ops]
    torch.testing.assert_close(results[0], results[2], rtol=0, atol=0)  # no accumulation
    assert not torch.allclose(results[0], results[1])  # BatchNorm mode matters and is honoured
    assert model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_ggn_of_a_linear_model_equals_its_hessian_and_is_psd():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (20,), generator=gen)
    linear = nn.Sequential(nn.Linear(4, 3)).double()
    G = HessianOperator(linear, F.cross_entropy, (x, y), kind="ggn").dense()
    torch.testing.assert_close(G, dense_hessian(linear, cross_entropy, x, y), rtol=1e-10, atol=1e-12)
    model, x, y = classification_problem(*MODEL_CASES[0][1:])
    assert torch.linalg.eigvalsh(HessianOperator(model, F.cross_entropy, (x, y), kind="ggn").dense()).min() > -1e-12


def test_ggn_refuses_a_loss_other_than_cross_entropy():
    model, x, y = classification_problem(*MODEL_CASES[0][1:])
    with pytest.raises(ValueError, match="loss_fn"):
        HessianOperator(model, cross_entropy, (x, y), kind="ggn")


def _masked_sequence_loss(logits: torch.Tensor, targets) -> torch.Tensor:
    """Mean over sequences of each sequence's mean cross-entropy over its masked tokens."""
    tokens, mask = targets
    nll = -F.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0]  # (n, T)
    mask = mask.to(nll.dtype)
    return ((nll * mask).sum(dim=1) / mask.sum(dim=1)).mean()


def test_transformer_with_a_masked_sequence_loss_matches_finite_differences():
    model, tokens, targets = sequence_problem()
    H = fd_hessian(model, _masked_sequence_loss, tokens, targets)
    op = HessianOperator(model, _masked_sequence_loss, (tokens, targets), chunk_size=4)  # chunks of 4 and 2
    assert op.dim == H.shape[0] and len(tokens) == 6
    dense = op.dense()
    assert (dense - H).abs().max().item() <= 1e-5 * H.abs().max().item()
    v = _vector(op.dim)
    assert (op.matvec(v) - H @ v).norm().item() <= 1e-5 * (H @ v).norm().item()


def test_an_interrupted_first_product_leaves_no_partial_cache():
    model, x, y = classification_problem(*MODEL_CASES[0][1:])
    calls = []

    def failing_once(outputs, targets):
        calls.append(len(targets))
        if len(calls) == 2:  # the second chunk of the first product
            raise RuntimeError("interrupted")
        return cross_entropy(outputs, targets)

    op = HessianOperator(model, failing_once, (x, y), chunk_size=7)
    v = _vector(op.dim)
    with pytest.raises(RuntimeError, match="interrupted"):
        op.matvec(v)
    H = dense_hessian(model, cross_entropy, x, y)
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert len(calls) == 2 + 5  # the retry rebuilt every chunk (30 samples in chunks of 7)


class _TwoInputs(nn.Module):
    """logits = W₂ tanh(W₁ x) + b ⊙ s: a model called as ``model(x, s)`` or ``model(x=x, s=s)``."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.inner = nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
        self.outer = nn.Parameter(torch.randn(2, 4, generator=gen, dtype=torch.float64))
        self.scale = nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64))

    def forward(self, x, s):
        return torch.tanh(x @ self.inner.T) @ self.outer.T + self.scale * s


@pytest.mark.parametrize("packing", ["tuple", "dict"])
def test_tuple_and_dict_inputs_in_chunks_match_the_dense_hessian(packing):
    gen = torch.Generator().manual_seed(4)
    x, s = torch.randn(9, 3, generator=gen, dtype=torch.float64), torch.randn(9, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (9,), generator=gen)
    model = _TwoInputs()
    inputs = (x, s) if packing == "tuple" else {"x": x, "s": s}
    op = HessianOperator(model, F.cross_entropy, (inputs, y), chunk_size=4)  # chunks of 4, 4 and 1

    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def loss(flat):  # the reference's own plumbing: the two inputs passed by hand
        inner, outer, scale = (p.reshape(shape) for p, shape in zip(torch.split(flat, sizes), shapes))
        return cross_entropy(torch.tanh(x @ inner.T) @ outer.T + scale * s, y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    expected = torch.autograd.functional.hessian(loss, flat)
    assert names == ["inner", "outer", "scale"]
    torch.testing.assert_close(op.dense(), expected, rtol=1e-10, atol=1e-12)
    assert op.loss() == pytest.approx(loss(flat).item(), rel=1e-12)


class _Attention(nn.Module):
    """Multi-head self-attention over (B, T, D) through F.scaled_dot_product_attention (4-D: the fused kernel)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 3)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 2).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, 2)
        return self.out(h.transpose(1, 2).reshape(x.shape[0], x.shape[1], 4)).mean(dim=1)


def test_attention_through_the_fused_kernel_has_a_hessian():
    """The fused CPU attention kernel has no second derivative; the operator switches to the math kernel."""
    model = _Attention().double()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 6, 4, generator=gen, dtype=torch.float64), torch.arange(5) % 3
    q = torch.randn(1, 2, 6, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(F.scaled_dot_product_attention(q, q, q).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):  # what a plain double backward does
        torch.autograd.grad(g.sum(), q)
    H = HessianOperator(model, F.cross_entropy, (x, y)).dense()
    torch.testing.assert_close(H, fd_hessian(model, cross_entropy, x, y), rtol=1e-5, atol=1e-7)


class _OnceDifferentiable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2


def test_an_operation_without_a_second_derivative_is_refused_by_name():
    class Cubed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return _OnceDifferentiable.apply(self.fc(x))

    x, y = torch.randn(4, 3), torch.arange(4) % 2
    op = HessianOperator(Cubed(), F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match=r"fc\.weight.*cannot be differentiated again"):  # not rows of zeros
        op.matvec(torch.ones(op.dim, dtype=torch.float64))
