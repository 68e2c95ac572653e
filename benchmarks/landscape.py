"""A 25×25 filter-normalised 2-D loss surface three ways, side by side in one process.

The three: loss-landscapes 3.0.6 (``random_plane``), a plain Python loop of ``functional_call`` over the grid
points, and ours (:func:`analysis_lib.landscape.surfaces.loss_surface`, every evaluation strategy), against
the floor: 625 evaluation passes over the data (one pass = forward and mean cross-entropy).
Every method computes the loss only, as loss-landscapes' ``Loss`` metric does; one more row
gives ours with the accuracy too (the argmax costs 10-15% of a small MLP's forward pass).

Models: MLPs 40-64-64-10 and 40-256-256-10 and a 3-layer 1-D CNN (32 channels), each trained for
300 SGD steps on MNIST-1D; the surface uses the 4,000 training samples. Every method gets one
torch thread and ``OMP_WAIT_POLICY=PASSIVE``; times are medians of ``--repeats`` round-robin runs.

Then loss-landscapes' defects, measured rather than asserted: a metric that records the
coordinates (α, β) of every point it is evaluated at (least squares on the library's own two
directions, regenerated from the same global seed with its own functions) shows where each entry
of the returned matrix really comes from; our evaluator at the intended coordinates shows how far
the returned grid is off; the raw directions are summarised (uniform on [0, 1), not Gaussian);
and the model passed in is compared before and after.

    /tmp/benchvenv/bin/python benchmarks/landscape.py            # about 11 minutes on 2 busy cores
    /tmp/benchvenv/bin/python benchmarks/landscape.py --quick    # 11x11 grid, one repeat
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (docs/architecture.md, "Threads")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call  # noqa: E402

from analysis_lib.landscape.directions import random_directions  # noqa: E402
from analysis_lib.landscape.evaluate import evaluate_params, flat_parameters, unflatten  # noqa: E402
from analysis_lib.landscape.surfaces import loss_surface  # noqa: E402
from analysis_lib.training.classifier import train_classifier  # noqa: E402
from analysis_lib.training.config import DataConfig, ModelConfig, ProbeConfig, RunConfig, TrainConfig  # noqa: E402
from analysis_lib.training.data import load_dataset  # noqa: E402
from analysis_lib.training.models import build_model  # noqa: E402

torch.set_num_threads(1)
MODELS = {"mlp 40-64-64-10": ModelConfig(kind="mlp", depth=2, width=64),
          "mlp 40-256-256-10": ModelConfig(kind="mlp", depth=2, width=256),
          "cnn 3x32 channels": ModelConfig(kind="cnn", depth=3, width=32)}


def trained(config: ModelConfig, data) -> torch.nn.Module:
    run = RunConfig(data=DataConfig(n_train=4000, n_test=500), model=config,
                    train=TrainConfig(lr=0.05, steps=300), probes=ProbeConfig(names=("weights",), every=300))
    model = build_model(config, data.n_features, data.n_classes, seed=0)
    model.load_state_dict(train_classifier(run, data).tables["final"])
    return model.eval()


# --------------------------------------------------------------------------------------------
# The methods, each computing the whole grid
# --------------------------------------------------------------------------------------------
def floor(model, D, x, y, grid):
    """625 evaluation passes (forward and mean cross-entropy) of the model itself: the cost floor."""
    with torch.no_grad():
        for _ in range(len(grid) ** 2):
            F.cross_entropy(model(x), y).item()


def loss_landscapes(model, D, x, y, grid):
    import loss_landscapes as ll
    from loss_landscapes.metrics import Loss

    torch.manual_seed(0)  # it draws from the global RNG
    return ll.random_plane(copy.deepcopy(model), Loss(F.cross_entropy, x, y), distance=1,
                           steps=len(grid), normalization="filter")


def functional_call_loop(model, D, x, y, grid):
    theta, buffers = flat_parameters(model), dict(model.named_buffers())
    out = np.empty((len(grid), len(grid)))
    with torch.no_grad():
        for i, a in enumerate(grid):
            for j, b in enumerate(grid):
                params = unflatten(model, theta + a * D[0] + b * D[1])
                out[i, j] = F.cross_entropy(functional_call(model, (params, buffers), (x,)), y).item()
    return out


def ours(strategy, metrics=("loss",)):
    def run(model, D, x, y, grid):
        return loss_surface(model, D, (x, y), grid, grid, strategy=strategy, metrics=metrics)
    return run


def time_methods(models, data, grid, repeats):
    methods = {"floor: 625 evaluation passes": floor, "loss-landscapes random_plane": loss_landscapes,
               "functional_call loop": functional_call_loop, "vmap over grid points": ours("vmap"),
               "ours (auto = inplace on CPU)": ours("auto"),
               "ours, loss and accuracy": ours("auto", ("loss", "acc"))}
    times = {(m, k): [] for m in models for k in methods}
    for _ in range(repeats):  # round robin: load changes hit every method alike
        for name, model in models.items():
            D = random_directions(model, seed=0, k=2)
            for key, fn in methods.items():
                start = time.perf_counter()
                fn(model, D, data.x_train, data.y_train, grid)
                times[name, key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, list(methods)


def print_times(times, methods, models, n_points, load_before):
    print(f"\n{n_points} grid points, 4,000 samples, 1 thread; median wall seconds; loss only unless "
          f"said; load average (1 min) before: {load_before:.2f}")
    print(f"{'model':20s} {'method':32s} {'seconds':>8s} {'x floor':>8s} {'x best ref':>10s}")
    for name in models:
        base = times[name, methods[0]]
        best_ref = min(times[name, m] for m in methods[1:4])  # loss-landscapes, loop, vmap
        for m in methods:
            print(f"{name:20s} {m:32s} {times[name, m]:8.2f} {times[name, m] / base:8.2f} "
                  f"{times[name, m] / best_ref:10.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# --------------------------------------------------------------------------------------------
# loss-landscapes' defects
# --------------------------------------------------------------------------------------------
def ll_directions(model, steps, seed):
    """The two step vectors random_plane uses, regenerated with its own functions and seed."""
    from loss_landscapes.model_interface.model_parameters import ModelParameters, orthogonal_to, rand_u_like

    start = ModelParameters([p.detach().clone() for p in model.parameters()])
    torch.manual_seed(seed)
    one = rand_u_like(start)
    two = orthogonal_to(one)
    raw = torch.cat([p.reshape(-1) for p in one.parameters]).clone()
    for d in (one, two):
        d.filter_normalize_(start)
        d.mul_(((start.model_norm() / 1) / steps) / d.model_norm())
    flat = [torch.cat([p.reshape(-1) for p in d.parameters]) for d in (one, two)]
    return torch.stack(flat), raw


def check_defects(name, model, data, steps):
    import loss_landscapes as ll
    from loss_landscapes.metrics import Metric

    x, y = data.x_train, data.y_train
    theta = flat_parameters(model)
    U, raw = ll_directions(model, steps, seed=1)  # (2, P) step vectors
    pinv = torch.linalg.pinv(U.T.double())  # (2, P): coordinates of a displacement
    seen = []

    class Recording(Metric):
        def __call__(self, wrapper):
            now = torch.cat([p.reshape(-1) for p in wrapper.get_module_parameters().parameters])
            seen.append((pinv @ (now - theta).double()).tolist())
            return F.cross_entropy(wrapper.forward(x), y).item()

    victim = copy.deepcopy(model)
    torch.manual_seed(1)
    theirs = ll.random_plane(victim, Recording(), distance=1, steps=steps, normalization="filter")
    coords = np.array(seen).reshape(steps, steps, 2)  # in call order: column i, then j
    for i in range(1, steps, 2):
        coords[i] = coords[i][::-1]  # odd columns are inserted at the front
    half = steps / 2
    intended = np.stack(np.meshgrid(np.arange(steps) - half, np.arange(steps) - half, indexing="ij"), -1)
    off = np.abs(coords - intended).max(-1) > 1e-3  # (steps, steps)
    points = theta + torch.from_numpy(intended.reshape(-1, 2)).float() @ U
    ours_at_intended = evaluate_params(model, points, (x, y))["loss"].numpy().reshape(steps, steps)
    err = np.abs(theirs - ours_at_intended)
    span = ours_at_intended.max() - ours_at_intended.min()
    moved = (flat_parameters(victim) - theta).norm() / theta.norm()
    print(f"\n{name}: loss-landscapes random_plane, {steps}x{steps}")
    print(f"  entries evaluated away from their grid position: {off.mean():.0%} "
          f"(columns {sorted(set(np.nonzero(off)[0].tolist()))[:6]}...), "
          f"shift in beta {np.unique(np.round(coords[off][:, 1] - intended[off][:, 1], 3))} steps")
    print(f"  |theirs - ours at intended point|: max {err[~off].max():.1e} where aligned, "
          f"{err[off].max():.3g} where shifted = {err[off].max() / span:.0%} of the plotted range")
    print(f"  centre on the grid: {bool((np.abs(intended) < 1e-9).all(-1).any())} "
          f"(coordinates are half-steps: {intended[0, 0].tolist()} .. {intended[-1, -1].tolist()})")
    print(f"  raw direction: min {raw.min():.3f}, mean {raw.mean():.3f}, fraction > 0 "
          f"{(raw > 0).double().mean():.0%} (uniform on [0, 1), not N(0, 1)); "
          f"cos(d1, d2) after filter normalisation {F.cosine_similarity(U[0], U[1], dim=0):.3f}")
    print(f"  model passed in: moved by {moved:.3f} x |theta|, requires_grad left "
          f"{[p.requires_grad for p in victim.parameters()][0]}; ours: model unchanged "
          f"{torch.equal(flat_parameters(model), theta)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="11x11 grid, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, repeats = (11, 1) if args.quick else (25, args.repeats)
    data = load_dataset(DataConfig(name="mnist1d", n_train=4000, n_test=500))
    models = {name: trained(cfg, data) for name, cfg in MODELS.items()}
    grid = torch.linspace(-1, 1, steps).tolist()
    load_before = os.getloadavg()[0]
    times, methods = time_methods(models, data, grid, repeats)
    print_times(times, methods, models, steps * steps, load_before)
    for name, model in models.items():
        check_defects(name, model, data, steps)


if __name__ == "__main__":
    main()
