"""Speed and accuracy of our curvature code against the reference tools, side by side in one process.

The reference tools: PyHessian, hessian-eigenthings, curvlinops and BackPACK.

One trained MNIST-1D MLP (40-256-256-10, ReLU: 78,858 parameters) and its 4,000 training samples
are loaded into every tool. For each task the script prints wall time (median of ``--repeats``
runs, construction included), Hessian-vector products (HVPs) and the relative error against a
reference computed here in float64:

- eigenvalues: our Lanczos on a float64 copy of the model at tol 1e-10 (cross-checked by
  ``scipy.sparse.linalg.eigsh`` on the same float64 operator in ``--check-reference``);
- trace: the exact Hessian diagonal in float64 (BackPACK's DiagHessian when installed, else the
  exact Gauss-Newton diagonal, which equals the Hessian diagonal for a ReLU MLP: each logit is
  piecewise linear in any single weight).

The dense Hessian (78,858² float64 = 50 GB) does not fit; ``--tiny`` runs everything on a small
MLP instead, where the reference is ``torch.linalg.eigvalsh`` of a dense ``torch.func.hessian``.

Run (reference tools in their own venv, see benchmarks/README.md):

    /tmp/benchvenv/bin/python benchmarks/curvature.py            # about 4 minutes on 2 cores
    /tmp/benchvenv/bin/python benchmarks/curvature.py --quick    # about 45 seconds

A tool that is missing or fails on our torch is reported with the reason, never silently skipped.
"""

from __future__ import annotations

import os

# Before torch is imported: spinning OpenMP threads cost up to 8x on a loaded 2-core machine
# (docs/architecture.md, "Threads"); every tool gets the same single thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ANALYSIS_LIB_DATA", "/tmp/benchdata")

import argparse  # noqa: E402
import copy  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from analysis_lib.curvature.density import slq_nodes  # noqa: E402
from analysis_lib.curvature.diagonal import hessian_diagonal  # noqa: E402
from analysis_lib.curvature.hessian import HessianOperator  # noqa: E402
from analysis_lib.curvature.lanczos import top_eigenpairs  # noqa: E402
from analysis_lib.curvature.trace import hutchinson, hutchpp  # noqa: E402
from analysis_lib.training.config import DataConfig, ModelConfig  # noqa: E402
from analysis_lib.training.data import load_dataset  # noqa: E402
from analysis_lib.training.models import build_model  # noqa: E402

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Problem: a trained model and its data
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    model: nn.Module  # float32, trained
    x: torch.Tensor  # (N, 40) float32
    y: torch.Tensor  # (N,) int64
    description: str
    ref_eigs: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # float64, descending
    ref_trace: float = math.nan
    ref_layer_traces: dict = field(default_factory=dict)
    ref_info: str = ""

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def trained_problem(n_samples: int, width: int, steps: int, seed: int,
                    cache: Path | None) -> Problem:
    """MNIST-1D MLP 40-width-width-10 trained by Adam on ``n_samples`` training samples.

    Weights are cached in ``cache``: training is seeded, so the cache only saves time.
    """
    data = load_dataset(DataConfig(name="mnist1d", n_train=n_samples, n_test=100, split_seed=seed))
    model = build_model(ModelConfig(kind="mlp", depth=2, width=width, activation="relu"),
                        data.n_features, data.n_classes, seed)
    x, y = data.x_train, data.y_train
    if cache is not None and cache.exists():
        model.load_state_dict(torch.load(cache))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (128,), generator=gen)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        for p in model.parameters():
            p.grad = None
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), cache)
    with torch.no_grad():
        logits = model(x)
        loss, acc = F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
    n = sum(p.numel() for p in model.parameters())
    desc = (f"MNIST-1D MLP 40-{width}-{width}-10 ReLU, {n:,} parameters, {len(y):,} samples; "
            f"Adam lr 1e-3, {steps} steps of batch 128: train loss {loss:.3f}, accuracy {acc:.3f}")
    return Problem(model, x, y, desc)


def as_sequential(model: nn.Module) -> nn.Sequential:
    """The same MLP as an nn.Sequential (BackPACK needs one module instance per call site)."""
    layers: list[nn.Module] = []
    for i in range(1, model.depth + 1):
        layers += [copy.deepcopy(getattr(model, f"fc{i}")), nn.ReLU()]
    return nn.Sequential(*layers, copy.deepcopy(model.out))


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The reference: ``torch.func.hessian`` of the mean cross-entropy of the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    shapes, sizes = [params[n].shape for n in names], [params[n].numel() for n in names]

    def loss(flat: torch.Tensor) -> torch.Tensor:
        state = {n: p.reshape(s) for n, p, s in zip(names, torch.split(flat, sizes), shapes)}
        return F.cross_entropy(torch.func.functional_call(model, state, (x,)), y)

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return torch.func.hessian(loss)(flat).to(torch.float64)


def relu_mlp_hessian_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The library's exact Hessian diagonal (:func:`analysis_lib.curvature.diagonal.hessian_diagonal`)."""
    diag = hessian_diagonal(model, F.cross_entropy, (x, y))
    if diag is None:
        raise ValueError("hessian_diagonal holds only for Linear + piecewise-linear models")
    return diag


# --------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    task: str
    tool: str
    seconds: float | None = None  # median wall time
    cpu: float | None = None  # median CPU time of this process (less sensitive to other load)
    n_repeats: int = 0
    hvps: int | str | None = None
    error: float | None = None
    note: str = ""


@dataclass
class Entry:
    """One tool on one task.

    ``fn()`` does the whole job (construction included); ``score(out)`` gives (HVPs, relative
    error or None, extra note).
    """

    tool: str
    fn: Callable
    score: Callable
    note: str = ""


ROWS: list[Row] = []
SLOW_AFTER = 10.0  # seconds: a run slower than this is not repeated (the table shows n)


def compare(task: str, entries: list[Entry], repeats: int) -> list[Row]:
    """Time the entries round-robin, ``repeats`` rounds, and report medians.

    Round-robin, so a change in the machine's load hits all tools alike; a tool that raises is
    reported as FAILED with the reason.
    """
    walls: dict[int, list[float]] = {i: [] for i in range(len(entries))}
    cpus: dict[int, list[float]] = {i: [] for i in range(len(entries))}
    scores: dict[int, list] = {i: [] for i in range(len(entries))}
    failed: dict[int, str] = {}
    for r in range(repeats):
        for i, e in enumerate(entries):
            if i in failed or (r > 0 and walls[i][0] > SLOW_AFTER):
                continue
            try:
                c0, t0 = time.process_time(), time.perf_counter()
                out = e.fn()
                walls[i].append(time.perf_counter() - t0)
                cpus[i].append(time.process_time() - c0)
                scores[i].append(e.score(out))  # runs with a random start differ: keep each
            except Exception as exc:  # a reference tool failing on our torch is a result
                msg = str(exc).splitlines()[0][:160] if str(exc) else ""
                failed[i] = f"FAILED ({type(exc).__name__}: {msg})"
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
    rows = []
    for i, e in enumerate(entries):
        if i in failed:
            row = Row(task, e.tool, note=f"{failed[i]}{'; ' + e.note if e.note else ''}")
        else:
            hvps, err, extra = _median_score(scores[i])
            row = Row(task, e.tool, statistics.median(walls[i]), statistics.median(cpus[i]),
                      len(walls[i]), hvps, err, "; ".join(x for x in (e.note, extra) if x))
        ROWS.append(row)
        rows.append(row)
        print(f"  {fmt_row(row)}", flush=True)
    return rows


def _median_score(scores: list) -> tuple:
    """Median HVPs and error over the repeats; the spread is noted when the runs differ."""
    hvps = [s[0] for s in scores]
    errs = [s[1] for s in scores if s[1] is not None]
    extra = scores[-1][2]
    if len(set(hvps)) > 1:
        extra = "; ".join(x for x in (extra, f"HVPs {min(hvps)}-{max(hvps)}, err "
                                      f"{min(errs):.1e}-{max(errs):.1e} over runs") if x)
    return (int(statistics.median(hvps)), statistics.median(errs) if errs else None, extra)


def skipped(task: str, tool: str, reason: str) -> None:
    row = Row(task, tool, note=f"not run: {reason}")
    ROWS.append(row)
    print(f"  {fmt_row(row)}", flush=True)


def rel_eig_error(found, ref: torch.Tensor) -> float:
    """max_i |λ_i − λ_i*| / |λ_i*| over the k largest, both sorted descending."""
    found = torch.as_tensor(np.asarray(found, dtype=np.float64)).sort(descending=True).values
    ref = ref[: len(found)]
    return ((found - ref).abs() / ref.abs()).max().item()


HEADER = (f"{'task':<8} {'tool':<50} {'wall s':>7} {'cpu s':>7} {'n':>2} {'HVPs':>5} "
          f"{'rel err':>8}  note")


def fmt_row(r: Row) -> str:
    sec = f"{r.seconds:7.2f}" if r.seconds is not None else "      -"
    cpu = f"{r.cpu:7.2f}" if r.cpu is not None else "      -"
    err = f"{r.error:8.1e}" if r.error is not None else "       -"
    hv = f"{r.hvps!s:>5}" if r.hvps is not None else "    -"
    return f"{r.task:<8} {r.tool:<50} {sec} {cpu} {r.n_repeats:>2} {hv} {err}  {r.note}"


class Counter:
    """Counts products through any matvec."""

    def __init__(self, f: Callable):
        self.f, self.n = f, 0

    def __call__(self, v, *args):
        if args:  # PyHessian's hessian_vector_product(gradsH, params, v): one product
            self.n += 1
            return self.f(v, *args)
        self.n += 1 if v.ndim == 1 else v.shape[1]
        return self.f(v)


def tool_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------------
# Reference values
# --------------------------------------------------------------------------------------------
def compute_reference(prob: Problem, k: int, check: bool, cache: Path | None) -> None:
    """Top-k eigenvalues and exact trace (total and per layer) in float64; dense when tiny."""
    t0 = time.perf_counter()
    if cache is not None and cache.exists() and not check:
        saved = torch.load(cache)
        if len(saved["eigs"]) >= k:
            prob.ref_eigs, prob.ref_trace = saved["eigs"], saved["trace"]
            prob.ref_layer_traces, prob.ref_info = saved["layers"], saved["info"] + " (cached)"
    if not len(prob.ref_eigs):
        m64, x64 = copy.deepcopy(prob.model).double(), prob.x.double()
        diag = relu_mlp_hessian_diagonal(m64, x64, prob.y)
        if prob.dim <= 3000:
            H = dense_hessian(m64, x64, prob.y)
            prob.ref_eigs = torch.linalg.eigvalsh(H).flip(0)
            prob.ref_trace = torch.trace(H).item()
            flat = torch.cat([d.reshape(-1) for d in diag.values()])
            prob.ref_info = (f"dense float64 Hessian (torch.func.hessian, eigvalsh); prototype "
                             f"diagonal matches diag(H) to "
                             f"{((flat - H.diagonal()).abs().max() / H.diagonal().abs().max()):.1e}")
        else:
            op = HessianOperator(m64, F.cross_entropy, (x64, prob.y))
            res = top_eigenpairs(op.matvec, op.dim, k=k, tol=1e-10, max_steps=400, strict=True)
            prob.ref_eigs = res.eigenvalues
            prob.ref_trace = sum(d.sum().item() for d in diag.values())
            prob.ref_info = (f"float64 Lanczos tol 1e-10 ({res.n_matvecs} HVPs); trace from the "
                             f"exact float64 diagonal")
            if check:
                prob.ref_info += cross_check(op, prob, m64, x64, k)
        prob.ref_layer_traces = {}
        for name, d in diag.items():
            layer = name.rsplit(".", 1)[0]
            prob.ref_layer_traces[layer] = prob.ref_layer_traces.get(layer, 0.0) + d.sum().item()
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"eigs": prob.ref_eigs, "trace": prob.ref_trace, "info": prob.ref_info,
                        "layers": prob.ref_layer_traces}, cache)
    print(f"reference: {prob.ref_info}; {time.perf_counter() - t0:.1f} s")
    print(f"  top eigenvalues: {[round(v, 6) for v in prob.ref_eigs[:k].tolist()]}")
    print(f"  trace {prob.ref_trace:.6f}; per layer "
          f"{ {n: round(v, 4) for n, v in prob.ref_layer_traces.items()} }")


def cross_check(op: HessianOperator, prob: Problem, m64, x64, k: int) -> str:
    """Scipy eigsh on the same float64 operator, BackPACK's DiagHessian in float64."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    lin = LinearOperator((op.dim, op.dim), dtype=np.float64,
                         matvec=lambda v: op.matvec(torch.from_numpy(np.ravel(v))).numpy())
    vals = np.sort(eigsh(lin, k=k, which="LA", tol=1e-12, return_eigenvectors=False))[::-1]
    out = f"; scipy eigsh agrees to {np.max(np.abs(vals - prob.ref_eigs.numpy()) / np.abs(vals)):.1e}"
    bp = backpack_diag_hessian(m64, x64, prob.y)
    if bp is not None:
        t = sum(d.sum().item() for d in bp.values())
        out += f"; BackPACK DiagHessian trace agrees to {abs(t - prob.ref_trace) / abs(prob.ref_trace):.1e}"
    return out


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------
def ours_eigs(prob: Problem, k: int, tol: float, start: str = "random"):
    """Our Lanczos; ``start="gradient"`` starts from the loss gradient, free from the cached graph."""
    op = HessianOperator(prob.model, F.cross_entropy, (prob.x, prob.y))
    v0 = op.gradient() if start == "gradient" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return top_eigenpairs(op.matvec, op.dim, k=k, tol=tol, v0=v0)


def pyhessian_hessian(prob: Problem):
    from pyhessian import hessian as pyh_hessian

    model = copy.deepcopy(prob.model)  # PyHessian writes .grad and sets eval(): use a copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its backward(create_graph=True) reference-cycle warning
        return pyh_hessian(model, nn.CrossEntropyLoss(), data=(prob.x, prob.y), cuda=False)


def count_pyhessian_hvps() -> Counter:
    """Wrap PyHessian's module-level HVP so every product is counted."""
    import pyhessian  # noqa: F401  (the package re-exports a class named like the module)

    ph = sys.modules["pyhessian.hessian"]
    if not isinstance(ph.hessian_vector_product, Counter):
        ph.hessian_vector_product = Counter(ph.hessian_vector_product)
    return ph.hessian_vector_product


def curvlinops_operator(prob: Problem):
    from curvlinops import HessianLinearOperator

    model = copy.deepcopy(prob.model)
    params = [p for p in model.parameters() if p.requires_grad]
    # check_deterministic=False: its check costs extra products we would otherwise have to time
    return HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(prob.x, prob.y)],
                                 check_deterministic=False)


def eigenthings_operator(prob: Problem):
    from hessian_eigenthings import HessianOperator as HEOp
    from hessian_eigenthings import supervised_loss

    model = copy.deepcopy(prob.model)
    return HEOp(model, [(prob.x, prob.y)], supervised_loss(F.cross_entropy))


def backpack_diag_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict | None:
    """BackPACK's exact Hessian diagonal, per parameter of ``model`` (run on a Sequential copy)."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import DiagHessian
    except ImportError:
        return None
    seq = extend(as_sequential(model))
    loss = extend(nn.CrossEntropyLoss())(seq(x), y)
    with backpack(DiagHessian()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # full-backward-hook warning on the input layer
        loss.backward()
    names = [n for n, _ in model.named_parameters()]
    return {n: p.diag_h.detach() for n, p in zip(names, seq.parameters())}


# --------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------
def eig_score(ref: torch.Tensor, k: int):
    return lambda r: (r.n_matvecs, rel_eig_error(r.eigenvalues, ref),
                      f"converged {int(r.converged.sum())}/{k}")


def he_score(ref: torch.Tensor, k: int):
    return lambda r: (r.iterations, rel_eig_error(r.eigenvalues, ref),
                      f"converged {int(r.converged.sum())}/{k} (its own test)")


def pyh_top(prob: Problem, k: int) -> Callable:
    counter = count_pyhessian_hvps()

    def run():
        counter.n = 0
        vals, _ = pyhessian_hessian(prob).eigenvalues(top_n=k)  # defaults: maxIter=100, tol=1e-3
        return vals, counter.n
    return run


def cl_eigsh(prob: Problem, k: int) -> Callable:
    def run():
        from scipy.sparse.linalg import LinearOperator, eigsh

        lin = curvlinops_operator(prob).to_scipy(dtype=np.float64)
        count = Counter(lin.matvec)
        wrapped = LinearOperator(lin.shape, matvec=count, dtype=np.float64)
        return eigsh(wrapped, k=k, which="LA", tol=1e-4, return_eigenvectors=False), count.n
    return run


def bench_eigenvalues(prob: Problem, ks: list[int], repeats: int, everything: bool) -> None:
    print("\n== top-k eigenvalues (ours: Lanczos, full reorthogonalisation, cached double backward)")
    ref = prob.ref_eigs
    from_pair = lambda o: (o[1], rel_eig_error(o[0], ref), "")  # noqa: E731
    have_pyh, have_cl = tool_version("pyhessian"), tool_version("curvlinops-for-pytorch")
    have_he = tool_version("hessian-eigenthings")

    # top-1 at PyHessian's default tolerance (relative change 1e-3 between iterations)
    entries = [Entry("ours tol=1e-3", lambda: ours_eigs(prob, 1, 1e-3), eig_score(ref, 1))]
    if have_pyh:
        entries.append(Entry("PyHessian power iteration (defaults)", pyh_top(prob, 1), from_pair))
    compare("top-1", entries, repeats)
    if not have_pyh:
        skipped("top-1", "PyHessian", "pyhessian not installed")

    for k in ks:
        task = f"top-{k}"
        entries = [Entry("ours tol=1e-4", lambda k=k: ours_eigs(prob, k, 1e-4), eig_score(ref, k)),
                   Entry("ours tol=1e-4 v0=gradient",
                         lambda k=k: ours_eigs(prob, k, 1e-4, start="gradient"), eig_score(ref, k))]
        if have_pyh:
            entries.append(Entry("PyHessian deflated power iteration (defaults)",
                                 pyh_top(prob, k), from_pair))
        if have_cl:
            entries.append(Entry("curvlinops + scipy eigsh(which=LA, tol=1e-4)",
                                 cl_eigsh(prob, k), from_pair))
        if have_he:
            from hessian_eigenthings import deflated_power_iteration, lanczos

            entries.append(Entry("hessian-eigenthings lanczos (default max_iter=2k)",
                                 lambda k=k: lanczos(eigenthings_operator(prob), k=k, which="LA",
                                                     seed=0, tol=1e-4),
                                 he_score(ref, k)))
            if everything and k <= 5:
                entries.append(Entry("hessian-eigenthings deflated power tol=1e-4",
                                     lambda k=k: deflated_power_iteration(
                                         eigenthings_operator(prob), k=k, seed=0, tol=1e-4),
                                     he_score(ref, k)))
        rows = compare(task, entries, repeats)
        if have_he and rows[0].hvps:  # same Krylov dimension as ours: the cost per product
            steps = rows[0].hvps
            compare(task, [Entry(f"hessian-eigenthings lanczos max_iter={steps} (= ours)",
                                 lambda k=k, steps=steps: lanczos(
                                     eigenthings_operator(prob), k=k, which="LA", seed=0,
                                     tol=1e-4, max_iter=steps, reorthogonalize=True),
                                 he_score(ref, k))], repeats)
        for dist, have in (("pyhessian", have_pyh), ("curvlinops-for-pytorch", have_cl),
                           ("hessian-eigenthings", have_he)):
            if not have:
                skipped(task, dist, f"{dist} not installed")
        if have_he and not everything and k <= 5:
            skipped(task, "hessian-eigenthings deflated power tol=1e-4",
                    "about 300 HVPs (70 s here); --all runs it")


def bench_trace(prob: Problem, repeats: int, budget: int, everything: bool) -> None:
    print("\n== trace")
    ref = prob.ref_trace
    rel = lambda t: abs(t - ref) / abs(ref)  # noqa: E731
    diag_score = lambda note: lambda d: (0, rel(sum(v.sum().item() for v in d.values())), note)  # noqa: E731

    entries = [Entry("ours exact ReLU-MLP diagonal (per layer)",
                     lambda: relu_mlp_hessian_diagonal(prob.model, prob.x, prob.y),
                     diag_score("analysis_lib.curvature.diagonal.hessian_diagonal"))]
    if tool_version("backpack-for-pytorch"):
        entries.append(Entry("BackPACK DiagHessian (exact, per layer)",
                             lambda: backpack_diag_hessian(prob.model, prob.x, prob.y),
                             diag_score("on an nn.Sequential copy")))
    if tool_version("pyhessian"):
        counter = count_pyhessian_hvps()

        def pyh_trace():
            counter.n = 0
            return float(np.mean(pyhessian_hessian(prob).trace())), counter.n  # defaults: tol 1e-3
        entries.append(Entry("PyHessian Hutchinson (defaults)", pyh_trace,
                             lambda o: (o[1], rel(o[0]), "no standard error")))
    compare("trace", entries, repeats)
    if not tool_version("backpack-for-pytorch"):
        skipped("trace", "BackPACK", "backpack-for-pytorch not installed")

    def ours(fn, m):
        def run():
            op = HessianOperator(prob.model, F.cross_entropy, (prob.x, prob.y))
            return fn(op.matvec, op.dim, m, seed=0)
        return run
    se_note = lambda t: (t.n_matvecs, rel(t.estimate),  # noqa: E731
                         f"se {t.se / abs(ref):.1e} rel; 1% se needs ~{needed(t, ref)} HVPs")
    entries = [Entry(f"ours Hutch++ m={budget}", ours(hutchpp, budget), se_note),
               Entry(f"ours Hutchinson m={budget}", ours(hutchinson, budget), se_note)]
    if tool_version("curvlinops-for-pytorch"):
        from curvlinops import hutchpp_trace

        m3 = budget - budget % 3

        def cl_hpp():
            torch.manual_seed(0)
            return hutchpp_trace(curvlinops_operator(prob), m3).item()
        entries.append(Entry(f"curvlinops hutchpp_trace m={m3}", cl_hpp,
                             lambda t: (m3, rel(t), "no standard error")))
    layer_traces = getattr(importlib.import_module("analysis_lib.curvature.trace"), "layer_traces", None)
    if everything and layer_traces is not None:  # per layer: Hutch++ per block (4 x m products)
        entries.append(Entry(f"ours layer_traces (Hutch++ m={budget} per block)",
                             lambda: layer_traces(prob.model, F.cross_entropy, (prob.x, prob.y), n_matvecs=budget),
                             lambda df: (int(df["n_matvecs"].sum()),
                                         rel(df.loc[df.layer == "model", "estimate"].item()),
                                         "per layer " + ", ".join(
                                             f"{r.layer} {r.estimate:.2f}±{r.se:.2f}"
                                             for r in df.itertuples() if r.layer != "model"))))
    if tool_version("hessian-eigenthings") and everything:
        from hessian_eigenthings import hutch_plus_plus

        entries.append(Entry(f"hessian-eigenthings hutch++ m={budget}",
                             lambda: hutch_plus_plus(eigenthings_operator(prob),
                                                     num_matvecs=budget, seed=0),
                             lambda r: (budget, rel(float(r.estimate)),
                                        f"se {float(r.stderr) / abs(ref):.1e} rel")))
    compare("trace", entries, 1)


def needed(t, ref: float) -> int:
    """Products for a standard error of 1% of the trace, scaling se ∝ 1/√m from this run.

    Conservative for Hutch++, whose error falls faster once the sketch holds the outliers.
    """
    return int(math.ceil(t.n_matvecs * (t.se / (0.01 * abs(ref))) ** 2))


def bench_density(prob: Problem, probes: int, steps: int, everything: bool) -> None:
    print(f"\n== spectral density (SLQ, {probes} probes x {steps} steps; error: trace implied by "
          f"the quadrature, dim * mean over probes of Σ w θ, against the exact trace)")
    ref, dim = prob.ref_trace, prob.dim

    def slq_trace_score(nodes):
        per_probe = nodes.assign(wt=nodes["weight"] * nodes["node"]).groupby("probe")["wt"].sum() * dim
        se = per_probe.std() / math.sqrt(len(per_probe))
        top = nodes.groupby("probe")["node"].max()
        return (probes * steps, abs(per_probe.mean() - ref) / abs(ref),
                f"per-probe trace spread se {se / abs(ref):.1e} rel; per-probe λ_max "
                f"{top.min():.4f}..{top.max():.4f} (λ1 {prob.ref_eigs[0].item():.4f})")

    def ours():
        op = HessianOperator(prob.model, F.cross_entropy, (prob.x, prob.y))
        return slq_nodes(op.matvec, op.dim, n_probes=probes, steps=steps, seed=0)
    entries = [Entry("ours slq_nodes (probes one after another)", ours, slq_trace_score)]
    if tool_version("hessian-eigenthings"):
        from hessian_eigenthings import spectral_density

        def he():
            return spectral_density(eigenthings_operator(prob), num_runs=probes,
                                    lanczos_steps=steps, seed=0)

        def he_score(r):
            per = (r.raw_weights * r.raw_eigenvalues).sum(1).double() * dim
            return (probes * steps, abs(per.mean().item() - ref) / abs(ref),
                    f"per-probe trace spread se {per.std().item() / math.sqrt(probes) / abs(ref):.1e} rel")
        entries.append(Entry("hessian-eigenthings spectral_density", he, he_score))
    if tool_version("pyhessian"):
        counter = count_pyhessian_hvps()

        def pyh():  # 2 steps, 1 probe: enough to reach the end of the method
            counter.n = 0
            eigs, _ = pyhessian_hessian(prob).density(iter=2, n_v=1)
            return eigs, counter.n
        entries.append(Entry("PyHessian density (run with iter=2, n_v=1)", pyh,
                             lambda o: (o[1], None, "")))
    if tool_version("curvlinops-for-pytorch") and everything:
        from curvlinops import lanczos_approximate_spectrum

        def cl():
            op = curvlinops_operator(prob)
            counter = Counter(op.__matmul__)
            lanczos_approximate_spectrum(_CountedOp(op, counter), ncv=steps, num_repeats=probes)
            return counter.n
        entries.append(Entry("curvlinops lanczos_approximate_spectrum", cl,
                             lambda n: (n, None, "count excludes its ARPACK boundary estimate (via to_scipy)")))
    compare("density", entries, 1)


class _CountedOp:
    """Forward attribute access to a curvlinops operator, counting ``@`` products."""

    def __init__(self, op, counter: Counter):
        self._op, self._counter = op, counter

    def __getattr__(self, name):
        return getattr(self._op, name)

    def __matmul__(self, v):
        return self._counter(v)


def bench_hvp_engines(prob: Problem, repeats: int, n_vectors: int) -> None:
    """Cached double backward (ours) vs torch.func jvp-of-grad, one vector and vmapped."""
    print(f"\n== Hessian-vector product engines ({n_vectors} products each; error vs ours)")
    from torch.func import functional_call, grad, jvp, vmap

    model, x, y = prob.model, prob.x, prob.y
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    V = torch.randn(n_vectors, prob.dim, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    exact = torch.stack([op.matvec(v) for v in V])  # also builds the cached graph

    def loss(ps):
        return F.cross_entropy(functional_call(model, ps, (x,)), y)

    def func_hvp(v):  # forward-over-reverse
        return jvp(grad(loss), (params,), (dict(zip(names, op._unflat(v))),))[1]

    def flat(d):
        return torch.cat([d[n].reshape(-1) for n in names]).double()

    def rebuilt(v):  # reverse-over-reverse, gradient graph rebuilt per product (most tools)
        ps = [p.detach().requires_grad_(True) for p in params.values()]
        g = torch.autograd.grad(loss(dict(zip(names, ps))), ps, create_graph=True)
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(g, ps, op._unflat(v))]).double()

    def score(out):
        err = ((out - exact).norm() / exact.norm()).item()
        return n_vectors, err, ""
    entries = [
        Entry("ours: cached double backward (graph already built)",
              lambda: torch.stack([op.matvec(v) for v in V]), score),
        Entry("ours: incl. building the gradient graph",
              lambda: (lambda o: torch.stack([o.matvec(v) for v in V]))(
                  HessianOperator(model, F.cross_entropy, (x, y))),
              score),
        Entry("double backward, gradient rebuilt per product", lambda: torch.stack([rebuilt(v) for v in V]),
              score),
        Entry("torch.func jvp(grad), one vector at a time",
              lambda: torch.stack([flat(func_hvp(v)) for v in V]), score),
        Entry(f"torch.func vmap(jvp(grad)) over {n_vectors} vectors",
              lambda: _vmap_flat(vmap(func_hvp)(V), names, n_vectors), score),
    ]
    for row in compare("hvp", entries, repeats):
        if row.seconds is not None:
            wall, cpu = row.seconds / n_vectors * 1e3, row.cpu / n_vectors * 1e3
            row.note = f"{wall:.0f} ms wall, {cpu:.0f} ms cpu per product"
            print(f"      -> {row.tool}: {row.note}")


def _vmap_flat(out: dict, names: list[str], m: int) -> torch.Tensor:
    return torch.cat([out[n].reshape(m, -1) for n in names], dim=1).double()


def check_no_mutation(prob: Problem) -> None:
    """Ours leaves the model untouched; PyHessian constructed twice doubles the Hessian."""
    print("\n== state: does the tool mutate the model or accumulate between calls?")
    model = prob.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    a = ours_eigs(prob, 1, 1e-4).eigenvalues[0].item()
    b = ours_eigs(prob, 1, 1e-4).eigenvalues[0].item()
    same = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    grads = all(p.grad is None for p in model.parameters())
    print(f"  ours: λ1 twice {a:.6f}, {b:.6f}; weights unchanged {same}; .grad untouched {grads}; "
          f"train/eval mode unchanged {model.training == was_training}")
    if tool_version("pyhessian"):
        try:
            pyhessian_doubling(prob)
        except Exception as exc:
            print(f"  PyHessian: FAILED ({type(exc).__name__}: {exc})")


def pyhessian_doubling(prob: Problem) -> None:
    """PyHessian's constructor backpropagates into .grad: a second one on the same model adds up."""
    from pyhessian import hessian as pyh_hessian

    model = prob.model
    m = copy.deepcopy(model)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        alone = pyh_hessian(copy.deepcopy(m), nn.CrossEntropyLoss(), data=(prob.x, prob.y),
                            cuda=False).eigenvalues()[0][0]
        pyh_hessian(m, nn.CrossEntropyLoss(), data=(prob.x, prob.y), cuda=False)  # e.g. a first try
        grad_left = all(p.grad is not None and p.grad.requires_grad for p in m.parameters())
        torch.manual_seed(0)
        second = pyh_hessian(m, nn.CrossEntropyLoss(), data=(prob.x, prob.y), cuda=False)
        doubled = second.eigenvalues()[0][0]
    print(f"  PyHessian: λ1 {alone:.6f} on a fresh model, {doubled:.6f} (x{doubled / alone:.2f}) when "
          f"hessian() was constructed on it once before; the constructor leaves graph-carrying "
          f".grad on the model: {grad_left}; model left in {'train' if m.training else 'eval'} mode "
          f"(was train)")


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
def find(task: str, prefix: str) -> Row | None:
    return next((r for r in ROWS if r.task == task and r.tool.startswith(prefix)
                 and r.seconds is not None), None)


def summary(ks: list[int], dim: int) -> None:
    print("\n== ratios: other tool's median time / ours (wall; CPU in brackets); targets in benchmarks/README.md")

    def ratio(task, other, ours):
        o, m = find(task, other), find(task, ours)
        if o is None or m is None:
            return None, None
        return o.seconds / m.seconds, o.cpu / m.cpu

    def fmt(r):
        return "n/a" if r[0] is None else f"{r[0]:.1f}x [{r[1]:.1f}x]"

    for k in ks:
        task = f"top-{k}"
        for ours_label in ("ours tol=1e-4", "ours tol=1e-4 v0=gradient"):
            ours = find(task, ours_label)
            if ours is None:
                continue
            ok = ours.error is not None and ours.error <= 1e-4 and f"converged {k}/{k}" in ours.note
            r_pyh, r_cl = ratio(task, "PyHessian", ours_label), ratio(task, "curvlinops", ours_label)
            r_he = ratio(task, "hessian-eigenthings lanczos max_iter", ours_label)
            print(f"  {task} {ours_label}: err {ours.error:.1e}, all converged {ok}; PyHessian "
                  f"{fmt(r_pyh)} (target 5x: {_ok(r_pyh[0], 5)}); curvlinops eigsh {fmt(r_cl)} "
                  f"(target 3x: {_ok(r_cl[0], 3)}); eigenthings lanczos, same steps {fmt(r_he)}")
    for ours_label in ("ours tol=1e-3",):
        o, p = find("top-1", ours_label), find("top-1", "PyHessian")
        if o and p:
            r = (p.seconds / o.seconds, p.cpu / o.cpu)
            print(f"  top-1 {ours_label}: PyHessian/ours {fmt(r)} (target >= 1x: {_ok(r[0], 1)}); "
                  f"error {o.error:.1e} vs PyHessian {p.error:.1e}: {p.error / max(o.error, 1e-300):.0f}x "
                  f"smaller (target 10x: {'MET' if p.error >= 10 * o.error else 'not met'})")
    bp, proto = find("trace", "BackPACK"), find("trace", "prototype")
    if bp and proto:
        print(f"  exact trace: prototype diagonal / BackPACK time {proto.seconds / bp.seconds:.2f} "
              f"[{proto.cpu / bp.cpu:.2f}] (target <= 1.5; analysis_lib has no exact diagonal yet: "
              f"its exact_trace needs dim = {dim:,} HVPs)")
    hpp, hut = find("trace", "ours Hutch++"), find("trace", "ours Hutchinson")
    if hpp and hut:
        n_hpp, n_hut = _needed(hpp), _needed(hut)
        print(f"  stochastic trace: HVPs for a 1% standard error: Hutch++ ~{n_hpp}, Hutchinson "
              f"~{n_hut} (target Hutch++ <= half: {'MET' if n_hpp <= n_hut / 2 else 'not met'})")


def _needed(row: Row) -> int:
    return int(row.note.split("1% se needs ~")[1].split()[0])


def _x(r):
    return "n/a" if r is None else f"{r:.1f}x"


def _ok(r, target):
    return "n/a" if r is None else ("MET" if r >= target else "not met")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="about 45 s: 1,000 samples, top-5 only")
    ap.add_argument("--tiny", action="store_true", help="40-16-16-10 MLP, dense-Hessian reference")
    ap.add_argument("--all", action="store_true",
                    help="also the slow extras (eigenthings deflated power and Hutch++, curvlinops SLQ)")
    ap.add_argument("--repeats", type=int, default=None, help="timings per measurement (median)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cache", action="store_true", help="retrain and recompute the reference")
    ap.add_argument("--check-reference", action="store_true",
                    help="cross-check the float64 reference with scipy eigsh and BackPACK")
    ap.add_argument("--only", default="eig,trace,density,hvp,state",
                    help="comma-separated subset of eig,trace,density,hvp,state")
    args = ap.parse_args(argv)

    width = args.width or (16 if args.tiny else 256)
    samples = args.samples or (500 if args.tiny else 1000 if args.quick else 4000)
    repeats = args.repeats or (1 if args.quick else 3)
    steps = 300 if args.quick else 600
    ks = [5] if args.quick else [5, 10]
    parts = set(args.only.split(","))

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for dist in ("pyhessian", "hessian-eigenthings", "curvlinops-for-pytorch", "backpack-for-pytorch"):
        print(f"  {dist}: {tool_version(dist) or 'NOT INSTALLED (its rows say so)'}")
    t0 = time.perf_counter()
    cache = None if args.no_cache else (Path(os.environ["ANALYSIS_LIB_DATA"]) / "bench-curvature"
                                        / f"mlp{width}-n{samples}-s{steps}-seed{args.seed}.pt")
    prob = trained_problem(samples, width, steps, args.seed, cache)
    print(f"model: {prob.description} ({time.perf_counter() - t0:.1f} s)")
    compute_reference(prob, max(ks), args.check_reference,
                      None if cache is None else cache.with_suffix(".ref.pt"))

    if "eig" in parts:
        bench_eigenvalues(prob, ks, repeats, args.all)
    if "trace" in parts:
        bench_trace(prob, repeats, budget=30 if args.quick else 45, everything=args.all)
    if "density" in parts and not args.quick:
        bench_density(prob, probes=4, steps=20, everything=args.all)
    if "hvp" in parts:
        bench_hvp_engines(prob, repeats, n_vectors=4)
    if "state" in parts:
        check_no_mutation(prob)

    print(f"\n== table ({prob.description})\n{HEADER}")
    for row in ROWS:
        print(fmt_row(row))
    summary(ks, prob.dim)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
