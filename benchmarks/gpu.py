"""A GPU path when one exists: loss surfaces, Hessian-vector products and a probed training step.

Issue 15. Three sections, each run with the same code on the CPU and, when
``torch.cuda.is_available()``, on the CUDA device, so that a GPU run prints the speed-up; without a
GPU every CUDA run prints ``<section> on cuda: skipped: no GPU`` and the script still exits 0
after the CPU baselines. Nothing here requires a GPU or downloads anything (MNIST-1D is generated
by ``mnist1d.data.make_dataset`` and cached, as in the other benchmarks).

Model: an MLP 40-256-256-10 (ReLU, 78,858 parameters) at its seed-0 initialisation (the speed
does not depend on the weights) on the first ``--samples`` MNIST-1D training samples.

1. **surfaces**: the loss at every point of a ``--grid`` × ``--grid`` filter-normalised 2-D grid
   (:func:`analysis_lib.landscape.surfaces.loss_surface`, strategies ``"inplace"`` and ``"vmap"``;
   ``"auto"`` picks ``"vmap"`` on CUDA and ``"inplace"`` on CPU), against this script's own
   ``torch.func.vmap`` of ``functional_call`` over stacked parameter sets, in chunks of points
   sized to ``--memory-mb``. The largest absolute difference of every surface from the script's
   (and of the CUDA surface from the CPU one) is printed.
2. **hvp**: ``HessianOperator.matvec`` (double backward through a cached gradient graph; also
   with the graph built in the call), against ``torch.func`` ``jvp(grad)`` one vector at a time
   and ``vmap`` of it over ``--vectors`` vectors; time per product and relative difference.
3. **step**: one SGD step of batch 128 (forward, ``loss.item()`` as the training loop does,
   backward, update; lr 0 so every call sees the same weights), plain and with the library's
   probes called as :func:`analysis_lib.training.loop.train_phases` calls them: ``grad_norm``,
   ``grad_noise``, both, and ``sharpness`` (λ_max by Lanczos from a cold start on
   ``--curvature-samples`` samples; a fresh probe per call, so every call does the same work).

Timing: wall and CPU (``time.thread_time``) seconds, median of ``--repeats`` (sections 1-2) or
``--step-repeats`` (section 3) round-robin runs after one warm-up call of every entry; on CUDA
``torch.cuda.synchronize()`` before and after each timed call. The CPU runs use ``--threads``
torch threads (1 by default, like the other benchmarks, which understates a many-core host). An
entry that fails on a device is a row saying so and why.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/gpu.py            # about 2 minutes on 2 cores (CPU only)
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/gpu.py --quick    # about 15 seconds on 2 cores (CPU only)
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/gpu.py --cpu-only --only hvp,step
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (docs/architecture.md, "Threads")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, jvp, vmap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, without installing it
from analysis_lib.curvature.hessian import HessianOperator  # noqa: E402
from analysis_lib.curvature.probes import SharpnessProbe  # noqa: E402
from analysis_lib.gradients.probes import GradNoiseProbe, GradNormProbe  # noqa: E402
from analysis_lib.landscape.directions import random_directions  # noqa: E402
from analysis_lib.landscape.evaluate import flat_parameters, unflatten  # noqa: E402
from analysis_lib.landscape.surfaces import grid_coefficients, loss_surface  # noqa: E402
from analysis_lib.training.config import DataConfig, ModelConfig, ProbeConfig  # noqa: E402
from analysis_lib.training.data import Dataset, load_dataset  # noqa: E402
from analysis_lib.training.loop import Recorder  # noqa: E402
from analysis_lib.training.models import build_model  # noqa: E402
from analysis_lib.training.objective import Classification  # noqa: E402
from analysis_lib.training.probe import ProbeContext  # noqa: E402

SECTIONS = ("surfaces", "hvp", "step")
WIDTH = 256


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                 errors: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Name -> (median wall s, median CPU s) per call, round-robin after one warm-up call each.

    An entry that raises in its warm-up is left out of the timing, its error kept in ``errors``.
    """
    ok = {}
    for name, fn in fns.items():
        try:
            fn()
            sync(device)
            ok[name] = fn
        except Exception as err:  # noqa: BLE001 - a failing entry is a row saying why
            errors[name] = f"FAILED ({type(err).__name__}: {str(err).splitlines()[0][:110]})"
    wall: dict[str, list[float]] = {k: [] for k in ok}
    cpu: dict[str, list[float]] = {k: [] for k in ok}
    for _ in range(repeats):
        for name, fn in ok.items():
            sync(device)
            w, c = time.perf_counter(), time.thread_time()
            fn()
            sync(device)
            cpu[name].append(time.thread_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in ok}


def mlp(device: torch.device) -> nn.Module:
    return build_model(ModelConfig(kind="mlp", depth=2, width=WIDTH), 40, 10, seed=0).to(device)


# --------------------------------------------------------------------------------------------
# 1. Loss surfaces
# --------------------------------------------------------------------------------------------
def vmap_surface(model: nn.Module, D: torch.Tensor, x: torch.Tensor, y: torch.Tensor, grid: list[float],
                 memory_mb: float) -> torch.Tensor:
    """(G,) losses: ``torch.func.vmap`` of functional_call over chunks of stacked parameter sets."""
    theta, buffers = flat_parameters(model), dict(model.named_buffers())
    coeffs = grid_coefficients(grid, grid).to(theta.device, theta.dtype)  # (G, 2), α-major
    units = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    per_point = 2 * units * x.shape[0] + theta.numel()  # floats: pre- and post-activations, parameters
    chunk = max(1, int(memory_mb * 2**20 / theta.element_size() // per_point))
    batched = vmap(lambda params: F.cross_entropy(functional_call(model, (params, buffers), (x,)), y))
    out = []
    with torch.no_grad():
        for lo in range(0, len(coeffs), chunk):
            out.append(batched(unflatten(model, theta + coeffs[lo:lo + chunk] @ D)))
    return torch.cat(out).double()


def kept(results: dict, name: str, fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """``fn`` whose last result is kept in ``results[name]`` (on the CPU, float64) for the checks."""
    def run() -> None:
        results[name] = fn().detach().double().cpu()
    return run


def differences(results: dict, ref: str, what: str, relative: bool = False) -> dict[str, str]:
    """Name -> 'max |diff|' (or relative 2-norm difference) of each result from ``results[ref]``."""
    if ref not in results:
        return {}
    r = results[ref]
    return {k: (f"rel diff from {what} {((v - r).norm() / r.norm()).item():.1e}" if relative
                else f"max |diff| from {what} {(v - r).abs().max().item():.1e}")
            for k, v in results.items() if k != ref}


SURFACE_REF = "torch.func.vmap over points (this script)"


def surface_tools(device, data, args, results: dict) -> dict[str, Callable]:
    model = mlp(device)
    D = random_directions(model, seed=0, k=2)
    x, y = data.x_train[:args.samples].to(device), data.y_train[:args.samples].to(device)
    grid = torch.linspace(-1, 1, args.grid).tolist()

    def ours(strategy):
        return lambda: torch.tensor(loss_surface(model, D, (x, y), grid, grid, metrics=("loss",), strategy=strategy,
                                                    memory_mb=args.memory_mb)["value"].to_numpy())

    fns = {"loss_surface strategy=inplace (auto on CPU)": ours("inplace"),
           "loss_surface strategy=vmap (auto on CUDA)": ours("vmap"),
           SURFACE_REF: lambda: vmap_surface(model, D, x, y, grid, args.memory_mb)}
    return {k: kept(results, k, fn) for k, fn in fns.items()}


def surface_notes(results: dict) -> dict[str, str]:
    return differences(results, SURFACE_REF, "the script's vmap")


# --------------------------------------------------------------------------------------------
# 2. Hessian-vector products
# --------------------------------------------------------------------------------------------
HVP_REF = "HessianOperator.matvec, cached gradient graph"


def hvp_tools(device, data, args, results: dict) -> dict[str, Callable]:
    model = mlp(device)
    x, y = data.x_train[:args.samples].to(device), data.y_train[:args.samples].to(device)
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    op = HessianOperator(model, F.cross_entropy, (x, y))
    V = torch.randn(args.vectors, op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)

    def loss(ps):
        return F.cross_entropy(functional_call(model, ps, (x,)), y)

    def func_hvp(v):  # forward-over-reverse
        return jvp(grad(loss), (params,), (unflatten(model, v.to(x.dtype)),))[1]

    def flat(d):  # {name: (..., *shape)} -> (..., P)
        return torch.cat([d[n].reshape(*d[n].shape[:d[n].dim() - params[n].dim()], -1) for n in names], -1)

    fns = {HVP_REF: lambda: torch.stack([op.matvec(v) for v in V]),
           "HessianOperator incl. building the graph": lambda: (lambda o: torch.stack([o.matvec(v) for v in V]))(
               HessianOperator(model, F.cross_entropy, (x, y))),
           "torch.func jvp(grad), one vector at a time": lambda: torch.stack([flat(func_hvp(v)) for v in V]),
           f"torch.func vmap(jvp(grad)) over {args.vectors} vectors": lambda: flat(vmap(func_hvp)(V))}
    return {k: kept(results, k, fn) for k, fn in fns.items()}


def hvp_notes(results: dict) -> dict[str, str]:
    return differences(results, HVP_REF, "matvec", relative=True)


# --------------------------------------------------------------------------------------------
# 3. A training step with the library's probes
# --------------------------------------------------------------------------------------------
def step_tools(device, data, args, results: dict) -> dict[str, Callable]:
    model = mlp(device).train()
    on_device = data.to(device, torch.float32)
    objective = Classification(on_device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the same weights on every call
    batch = torch.arange(128, device=device)
    config = ProbeConfig(names=("grad_norm", "grad_noise", "sharpness"), curvature_samples=args.curvature_samples)
    rec = Recorder()
    ctx = ProbeContext(model, dict(model.named_parameters()), objective, rec.add, rec.add_layers)

    def step(make_probes: Callable[[], list]) -> None:
        probes = make_probes()
        ctx.step += 1
        opt.zero_grad(set_to_none=True)
        with contextlib.ExitStack() as hooks:
            for probe in probes:
                manager = probe.capture(ctx)
                if manager is not None:
                    hooks.enter_context(manager)
            loss = objective.loss(model, batch)
            loss.item()  # the loop records every mini-batch loss
            loss.backward()
        for probe in probes:
            probe.after_backward(ctx)
        opt.step()
        for probe in probes:
            probe.after_update(ctx)
        ctx.cache.clear()
        results.update({metric: value for _, _, metric, value in rec.rows if metric == "lambda_max_hvps"})
        rec.rows.clear()

    norm, noise = GradNormProbe(config), GradNoiseProbe(config)
    return {"plain step": lambda: step(list),
            "+ grad_norm probe": lambda: step(lambda: [norm]),
            "+ grad_noise probe": lambda: step(lambda: [noise]),
            "+ grad_norm + grad_noise": lambda: step(lambda: [norm, noise]),
            f"+ sharpness probe (cold Lanczos, {args.curvature_samples} samples)":
            lambda: step(lambda: [SharpnessProbe(config)])}


# --------------------------------------------------------------------------------------------
# Running and printing
# --------------------------------------------------------------------------------------------
def run_section(name: str, title: str, unit: tuple[str, float], make: Callable, notes_of: Callable | None,
                devices: list[torch.device], data: Dataset, args) -> None:
    times, errors, notes, results = {}, {}, {}, {}
    for device in devices:
        results[device.type], errors[device.type] = {}, {}
        try:
            fns = make(device, data, args, results[device.type])
        except Exception as err:  # noqa: BLE001 - reported, and the other devices still run
            print(f"\n{name} on {device.type}: FAILED setting up ({type(err).__name__}: {err})")
            times[device.type] = {}
            continue
        repeats = args.step_repeats if name == "step" else args.repeats
        times[device.type] = median_times(fns, device, repeats, errors[device.type])
        notes[device.type] = notes_of(results[device.type]) if notes_of else {}
        if name == "step" and "plain step" in times[device.type]:
            plain = times[device.type]["plain step"][0]
            notes[device.type].update({k: f"{w / plain:.2f}x plain" for k, (w, _) in times[device.type].items()})
            if (hvps := results[device.type].get("lambda_max_hvps")) is not None:
                key = next(k for k in times[device.type] if k.startswith("+ sharpness"))
                notes[device.type][key] += f", {hvps:.0f} HVPs"
    label, scale = unit
    print(f"\n{title}\n  {'':52s} {'cpu wall':>9s} {'cpu cpu':>9s} {'cuda wall':>10s} {'cuda cpu':>9s} "
          f"{'speed-up':>8s}   ({label})")
    names = list(dict.fromkeys(k for d in devices for k in (*times[d.type], *errors[d.type])))
    for key in names:
        cells = []
        for dev in ("cpu", "cuda"):
            w, c = times.get(dev, {}).get(key, (None, None))
            cells += [f"{w * scale:9.2f}" if w is not None else f"{'-':>9s}",
                      f"{c * scale:9.2f}" if c is not None else f"{'-':>9s}"]
        cw, gw = times.get("cpu", {}).get(key, (None,))[0], times.get("cuda", {}).get(key, (None,))[0]
        speed = f"{cw / gw:7.1f}x" if cw and gw else f"{'-':>8s}"
        why = "; ".join(f"{d}: {x}" for d in ("cpu", "cuda") if (x := {**notes.get(d, {}),
                                                                        **errors.get(d, {})}.get(key)))
        print(f"  {key:52s} {cells[0]} {cells[1]} {cells[2]:>10s} {cells[3]} {speed}   {why}")
    if name == "surfaces" and SURFACE_REF in results.get("cuda", {}) and SURFACE_REF in results.get("cpu", {}):
        diff = (results["cuda"][SURFACE_REF] - results["cpu"][SURFACE_REF]).abs().max().item()
        print(f"  CUDA surface vs CPU surface (the script's vmap): max |diff| {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="11x11 grid, 1,000 samples, 500 for sharpness, 20 steps")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA runs even when a GPU is present")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per entry of sections 1-2")
    parser.add_argument("--step-repeats", type=int, default=None, help="timed steps per entry (50; 20 with --quick)")
    parser.add_argument("--grid", type=int, default=None, help="points per axis of the surface (default 21)")
    parser.add_argument("--samples", type=int, default=None, help="samples of surfaces and HVPs (default 4000)")
    parser.add_argument("--vectors", type=int, default=4, help="vectors per HVP call")
    parser.add_argument("--curvature-samples", type=int, default=None, help="sharpness probe's samples (1000)")
    parser.add_argument("--memory-mb", type=float, default=1024, help="budget of one chunk of vmapped points")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the CPU runs")
    args = parser.parse_args()
    quick = args.quick
    args.step_repeats = args.step_repeats or (20 if quick else 50)
    args.grid = args.grid or (11 if quick else 21)
    args.samples = args.samples or (1000 if quick else 4000)
    args.curvature_samples = args.curvature_samples or (500 if quick else 1000)
    sections = [s for s in args.only.split(",") if s]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    torch.set_num_threads(args.threads)

    have_gpu = torch.cuda.is_available()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if have_gpu and not args.cpu_only else [])
    gpu = torch.cuda.get_device_name(0) if have_gpu else "none"
    print(f"torch {torch.__version__}, CPU: {args.threads} torch thread(s) of {os.cpu_count()} cores, "
          f"GPU: {gpu}; load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    data = load_dataset(DataConfig(name="mnist1d", n_train=4000, n_test=500))
    n_params = sum(p.numel() for p in mlp(torch.device("cpu")).parameters())
    model = f"MLP 40-{WIDTH}-{WIDTH}-10 ({n_params:,} parameters)"
    plan = {
        "surfaces": (f"[1] 2-D loss surface, {args.grid}x{args.grid} = {args.grid ** 2} points, {model}, "
                     f"{args.samples:,} samples, loss only", ("s per surface", 1.0), surface_tools, surface_notes),
        "hvp": (f"[2] Hessian-vector products, {model}, {args.samples:,} samples, {args.vectors} vectors per call",
                ("ms per product", 1e3 / args.vectors), hvp_tools, hvp_notes),
        "step": (f"[3] one SGD step, {model}, batch 128, with the library's probes",
                 ("ms per step", 1e3), step_tools, None),
    }
    for name in sections:
        title, unit, make, notes_of = plan[name]
        if not have_gpu:
            print(f"\n{name} on cuda: skipped: no GPU")
        elif args.cpu_only:
            print(f"\n{name} on cuda: skipped: --cpu-only")
        run_section(name, title, unit, make, notes_of, devices, data, args)
    print(f"\nload average at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
