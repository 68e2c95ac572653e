"""Cost of per-layer gradient statistics, and per-sample gradients side by side with BackPACK.

Issue 3. Every tool runs in one process on the same model, weights and batch, one torch thread,
timed round-robin after warm-up (median wall and CPU time per call):

1. **Probe cost** relative to a plain SGD step (forward, backward, update): the norm-only probe
   (``analysis_lib.gradients.norms.layer_gradient_norms``, what ``grad_norm`` records) and the per-sample noise probe
   (:class:`analysis_lib.gradients.noise.GradientNoiseProbe`: per-layer tr Σ, SNR, noise scale).
2. **The same per-layer noise statistics from BackPACK** 1.7 first-order extensions, each as a
   training step: BatchGrad (per-sample gradients, then their norms), BatchL2Grad (per-sample
   squared norms) and Variance (tr Σ from the element-wise variance); the numbers are checked
   against ours.
3. **Per-example gradients for spectra** (:mod:`analysis_lib.gradients.spectra`): ours (forward hooks +
   one backward + einsum) against ``torch.func`` ``vmap(grad)`` in chunks, BackPACK BatchGrad and
   one backward pass per example; then the SVD statistics of all of them.

Models: an MLP 40-256-256-10 and a 1-D CNN (two stride-2 convolutions of 64 channels) on
MNIST-1D-sized input (batch 128); a per-token MLP on sequences (one-hot tokens, V = 17, T = 28,
width 64, 100 sequences, loss = mean over sequences of each sequence's mean over response
tokens). BackPACK does not support attention, so it only sees those three; sections 1 and 3 add
the tiny transformer of the fast-vs-slow study (2-digit addition, T = 28, 3 layers, d_model 48;
3-digit, T = 40, 4 layers, d_model 64), trained with Adam as the study does.

    /tmp/benchvenv/bin/python benchmarks/gradient_stats.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads cost a lot here
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, without installing it
from analysis_lib.gradients import norms as probes  # noqa: E402
from analysis_lib.gradients import spectra as gradstats  # noqa: E402
from analysis_lib.gradients.noise import GradientNoiseProbe, noise_statistics  # noqa: E402
from analysis_lib.lm.config import TaskConfig, TransformerConfig  # noqa: E402
from analysis_lib.lm.tasks import VOCAB_SIZE, encode, sequence_length, task_splits  # noqa: E402
from analysis_lib.lm.transformer import build_transformer  # noqa: E402
from analysis_lib.training.config import ModelConfig  # noqa: E402
from analysis_lib.training.losses import sequence_losses  # noqa: E402
from analysis_lib.training.models import build_model  # noqa: E402

torch.set_num_threads(1)


def median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """Name -> (median wall s, median CPU s) per call, the tools interleaved round-robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def print_table(title: str, times: dict[str, tuple[float, float]], base: str, notes: dict | None = None) -> None:
    print(f"\n{title}\n  {'':46s} {'wall ms':>9s} {'cpu ms':>9s} {'x ' + base:>12s}")
    for name, (w, c) in times.items():
        note = (notes or {}).get(name, "")
        print(f"  {name:46s} {w * 1e3:9.2f} {c * 1e3:9.2f} {c / times[base][1]:11.2f}x  {note}")


# --------------------------------------------------------------------------------------------
# Models and batches (the same weights for every tool; BackPACK gets a deep copy it may extend)
# --------------------------------------------------------------------------------------------
def mlp_case(batch: int) -> tuple[nn.Module, tuple, Callable]:
    """MLP 40-256-256-10 as an nn.Sequential (BackPACK needs one), MNIST-1D-sized random input."""
    mlp = build_model(ModelConfig(depth=2, width=256), n_features=40, n_classes=10, seed=0)
    model = nn.Sequential(mlp.fc1, nn.ReLU(), mlp.fc2, nn.ReLU(), mlp.out)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 40, generator=gen), torch.randint(10, (batch,), generator=gen)
    return model, (x, y, None), lambda m, b: F.cross_entropy(m(b[0]), b[1])


def cnn_case(batch: int) -> tuple[nn.Module, tuple, Callable]:
    """1-D CNN: two stride-2 Conv1d of 64 channels (kernel 5) and a Linear head, as an nn.Sequential."""
    cnn = build_model(ModelConfig(kind="cnn", depth=2, width=64), n_features=40, n_classes=10, seed=0)
    model = nn.Sequential(cnn.conv1, nn.ReLU(), cnn.conv2, nn.ReLU(), nn.Flatten(), cnn.out)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 1, 40, generator=gen), torch.randint(10, (batch,), generator=gen)
    return model, (x, y, None), lambda m, b: F.cross_entropy(m(b[0]), b[1])


def token_mlp_case(n_seq: int) -> tuple[nn.Module, tuple, Callable]:
    """Per-token MLP V-64-64-V on one-hot tokens of slow-format 2-digit addition sequences."""
    batch = encode(task_splits(TaskConfig(n_digits=2, n_train=n_seq, n_test=2))[0], "slow")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(VOCAB_SIZE, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                              nn.Linear(64, VOCAB_SIZE))
    x = F.one_hot(batch.tokens, VOCAB_SIZE).float()  # (N, T, V)
    return model, (x, batch.targets, batch.mask), sequence_loss


def sequence_loss(model: nn.Module, b: tuple) -> torch.Tensor:
    return sequence_losses(model(b[0]), b[1], b[2]).mean()


def transformer_case(n_digits: int, n_layers: int, d: int, n_seq: int) -> tuple[nn.Module, tuple]:
    config = TransformerConfig(n_layers=n_layers, d_model=d, n_heads=4, d_mlp=4 * d)
    model = build_transformer(config, VOCAB_SIZE, sequence_length(n_digits, "slow"), seed=0)
    batch = encode(task_splits(TaskConfig(n_digits=n_digits, n_train=n_seq, n_test=2))[0], "slow")
    return model, (batch.tokens, batch.targets, batch.mask)


# --------------------------------------------------------------------------------------------
# Sections 1 and 2: one training step with each way of getting per-layer statistics
# --------------------------------------------------------------------------------------------
def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def backpack_noise(model: nn.Module, kind: str, n: int) -> dict[str, float]:
    """Per-layer tr Σ from a BackPACK quantity; BackPACK's per-sample gradients are g_i / N."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d)):
            continue
        params = [m.weight, m.bias]
        mean_sq = sum(float(p.grad.double().square().sum()) for p in params)
        if kind == "variance":  # Σ var = (N−1)/N · tr Σ / N²
            out[name] = sum(float(p.variance.double().sum()) for p in params) * n**3 / (n - 1)
            continue
        if kind == "batch_grad":
            sq = sum(torch.linalg.vector_norm(p.grad_batch.flatten(1), dim=1).double().square() for p in params)
        else:
            sq = sum(p.batch_l2.double() for p in params)
        sq = sq * n**2
        out[name] = noise_statistics(n, float(sq.sum()), mean_sq)["grad_var_trace"]
    return out


def step_tools(model: nn.Module, batch: tuple, loss_fn: Callable, optimizer: type,
               with_backpack: bool) -> tuple[dict, dict]:
    """Name -> a training step with that way of computing statistics; and tr Σ of each, for checks."""
    # lr = 0: the update costs the same, and every tool sees the same weights on every call.
    opt = optimizer(model.parameters(), lr=0.0)
    traces: dict[str, dict[str, float]] = {}

    def plain(stat: Callable | None = None) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        if stat:
            stat()
        opt.step()

    def grad_norm() -> None:
        plain(lambda: probes.layer_gradient_norms({k: p.grad for k, p in model.named_parameters()}))

    def grad_noise() -> None:
        opt.zero_grad(set_to_none=True)
        with GradientNoiseProbe(model) as probe:
            loss_fn(model, batch).backward()
        rows = probe.statistics()
        traces["ours"] = {layer: v for layer, metric, v in rows if metric == "grad_var_trace" and layer != "model"}
        opt.step()

    tools = {"plain step": plain, "+ grad_norm (norm-only probe)": grad_norm,
             "+ GradientNoiseProbe (ours: tr Σ, SNR, B_noise)": grad_noise}
    if with_backpack:
        tools.update(backpack_steps(model, batch, loss_fn, optimizer, traces))
    return tools, traces


def backpack_steps(model: nn.Module, batch: tuple, loss_fn: Callable, optimizer: type, traces: dict) -> dict:
    """The same step with each BackPACK extension, on a deep copy that BackPACK may extend."""
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad, BatchL2Grad, Variance

    extended = extend(copy.deepcopy(model))
    opt = optimizer(extended.parameters(), lr=0.0)

    def step_with(extension, kind: str) -> Callable[[], None]:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with backpack(extension):
                loss_fn(extended, batch).backward()
            traces[kind] = backpack_noise(extended, kind, batch[0].shape[0])
            opt.step()
        return step

    return {"BackPACK BatchL2Grad step + same statistics": step_with(BatchL2Grad(), "batch_l2"),
            "BackPACK BatchGrad step + same statistics": step_with(BatchGrad(), "batch_grad"),
            "BackPACK Variance step + same statistics": step_with(Variance(), "variance")}


def check_traces(traces: dict) -> dict[str, str]:
    """Largest relative difference of each BackPACK tr Σ from ours, at the same weights."""
    notes = {}
    for kind, label in (("batch_l2", "BatchL2Grad"), ("batch_grad", "BatchGrad"), ("variance", "Variance")):
        err = max(abs(traces[kind][k] - v) / abs(v) for k, v in traces["ours"].items())
        notes[f"BackPACK {label} step + same statistics"] = f"tr Σ vs ours: max rel diff {err:.1e}"
    return notes


def section_steps(title: str, model: nn.Module, batch: tuple, loss_fn: Callable, repeats: int,
                  optimizer: type = torch.optim.SGD, with_backpack: bool = True) -> None:
    tools, traces = step_tools(model, batch, loss_fn, optimizer, with_backpack)
    for name in list(tools)[2:]:  # fills ``traces`` for the check
        tools[name]()
    notes = check_traces(traces) if with_backpack else {}
    print_table(title, median_times(tools, repeats), "plain step", notes)


# --------------------------------------------------------------------------------------------
# Section 3: per-example gradients of every weight matrix, as gradient spectra need them
# --------------------------------------------------------------------------------------------
def vmap_gradients(model: nn.Module, batch: tuple, chunk: int) -> dict[str, torch.Tensor]:
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = list(linear_layers(model))

    def loss(p, x, y, m):
        return sequence_losses(functional_call(model, p, (x.unsqueeze(0),)), y.unsqueeze(0),
                                         m.unsqueeze(0)).sum()

    per_example = vmap(grad(loss), in_dims=(None, 0, 0, 0))
    parts = [per_example(params, *(t[s: s + chunk] for t in batch)) for s in range(0, len(batch[0]), chunk)]
    return {k: torch.cat([p[k + ".weight"] for p in parts]) for k in names}


def loop_gradients(model: nn.Module, batch: tuple) -> dict[str, torch.Tensor]:
    weights = {k: m.weight for k, m in linear_layers(model).items()}
    rows = []
    for i in range(len(batch[0])):
        loss = sequence_losses(model(batch[0][i:i + 1]), batch[1][i:i + 1], batch[2][i:i + 1]).sum()
        rows.append(torch.autograd.grad(loss, list(weights.values())))
    return {k: torch.stack([r[j] for r in rows]) for j, k in enumerate(weights)}


def backpack_gradients(extended: nn.Module, batch: tuple) -> dict[str, torch.Tensor]:
    from backpack import backpack
    from backpack.extensions import BatchGrad

    extended.zero_grad(set_to_none=True)
    with backpack(BatchGrad()):
        sequence_losses(extended(batch[0]), batch[1], batch[2]).sum().backward()
    return {k: m.weight.grad_batch for k, m in linear_layers(extended).items()}


def section_per_example(title: str, model: nn.Module, batch: tuple, repeats: int, with_backpack: bool) -> None:
    model.eval()
    ours = lambda: gradstats.per_example_gradients(model, *batch)  # noqa: E731
    tools = {"ours: hooks + one backward + einsum": ours,
             "torch.func vmap(grad), chunks of 25": lambda: vmap_gradients(model, batch, 25),
             "torch.func vmap(grad), one chunk": lambda: vmap_gradients(model, batch, len(batch[0]))}
    if with_backpack:
        from backpack import extend

        extended = extend(copy.deepcopy(model))
        tools["BackPACK BatchGrad"] = lambda: backpack_gradients(extended, batch)
    tools["one backward per example (loop)"] = lambda: loop_gradients(model, batch)
    reference = ours()
    notes = {}
    for name, fn in list(tools.items())[1:]:
        got = fn()
        err = max(float((got[k] - g).abs().max() / g.abs().max()) for k, g in reference.items())
        notes[name] = f"max rel diff from ours {err:.1e}"
    tools["SVD statistics of all matrices (svdvals)"] = lambda: [gradstats.spectral_statistics(g)
                                                                  for g in reference.values()]
    tools["ours end to end: gradient_spectra table"] = lambda: gradstats.gradient_spectra(model, *batch,
                                                                                          chunk_size=len(batch[0]))
    print_table(title, median_times(tools, repeats, warmup=1), "ours: hooks + one backward + einsum", notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=60, help="timed steps per tool (sections 1-2)")
    parser.add_argument("--repeats-per-example", type=int, default=7, help="timed calls per tool (section 3)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average at start "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    mlp, mlp_batch, mlp_loss = mlp_case(128)
    section_steps("[1-2] MLP 40-256-256-10, batch 128: one SGD step", mlp, mlp_batch, mlp_loss, args.repeats)
    cnn, cnn_batch, cnn_loss = cnn_case(128)
    section_steps("[1-2] CNN 1x40 -> conv 64x20 -> conv 64x10 -> 10, batch 128: one SGD step", cnn, cnn_batch,
                  cnn_loss, args.repeats)
    tok, tok_batch, tok_loss = token_mlp_case(100)
    section_steps("[1-2] per-token MLP 17-64-64-17 on 100 sequences (T = 28): one SGD step",
                  tok, tok_batch, tok_loss, args.repeats)
    for digits_, layers, d in ((2, 3, 48), (3, 4, 64)):
        model, batch = transformer_case(digits_, layers, d, 64)
        section_steps(f"[1] transformer {layers} layers, d_model {d}, batch 64 (T = {batch[0].shape[1]}): one Adam "
                      "step; BackPACK: no attention support", model, batch, sequence_loss, args.repeats // 2,
                      optimizer=torch.optim.Adam, with_backpack=False)
    section_per_example("[3] per-example gradients, per-token MLP, 100 sequences (T = 28)",
                        tok, tok_batch, args.repeats_per_example, with_backpack=True)
    for digits_, layers, d in ((2, 3, 48), (3, 4, 64)):
        model, batch = transformer_case(digits_, layers, d, 100)
        section_per_example(f"[3] per-example gradients, transformer {layers} layers, d_model {d}, "
                            f"100 sequences (T = {batch[0].shape[1]}); BackPACK: no attention support",
                            model, batch, args.repeats_per_example, with_backpack=False)
    print(f"\nload average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
