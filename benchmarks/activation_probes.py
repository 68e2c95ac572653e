"""Overhead of the activation probes per training step, side by side with the same statistics by hand.

Issue 12. One process, one torch thread, the default tiny transformer of an LM run
(``LMRunConfig()``: 2-digit addition, T = 28, 4 layers, d_model 48, 4 heads, Adam, batch 32),
the same weights and batches for every variant, timed step by step round-robin after warm-up
(median wall and thread CPU time per step over ``--repeats`` × ``--steps`` steps; the CPU time is
the steadier of the two on a shared machine). Each step is forward, backward, Adam
update; the variants are:

1. **plain**: the step alone;
2. **probes**: the step with ``activation_stats``, ``attention_stats`` and ``logit_stats`` as the
   training loop runs them on a probed step (``capture`` around forward and backward, then
   ``after_backward``), i.e. the cost when probing *every* step;
3. **by hand**: the same statistics taken the way one writes them without this package: forward
   hooks on every block, attention score hooks through the same observer, ``retain_grad`` on the
   hidden states, each tensor cloned to float64 in the hook and the statistics computed after
   the backward pass with ``torch`` one-liners (quantile for the median, ``torch.special.entr``).

Each row gives ms per step and the ratio to plain. ``--check`` also verifies that the probes'
numbers equal the by-hand ones (the benchmark compares like with like).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/activation_probes.py    # about 30 s on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project, without installing it
from analysis_lib.activations.probes import ActivationStatsProbe, AttentionStatsProbe, LogitStatsProbe  # noqa: E402
from analysis_lib.lm.config import LMRunConfig  # noqa: E402
from analysis_lib.lm.tasks import task_splits  # noqa: E402
from analysis_lib.lm.training import _Pool, batch_loss, build_lm  # noqa: E402
from analysis_lib.training.config import ProbeConfig  # noqa: E402
from analysis_lib.training.probe import ProbeContext  # noqa: E402

torch.set_num_threads(1)
NAMES = ("activation_stats", "attention_stats", "logit_stats")


def _setup(seed: int = 0):
    config = LMRunConfig()
    model = build_lm(config)
    model.train()
    pool = _Pool(task_splits(config.task)[0], torch.device("cpu"))
    stream = pool.batches(config.train.batch_size, seed, config.task.slow_fraction)
    batches = [next(stream) for _ in range(8)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return model, opt, batches


def plain_step(model, opt, batch) -> None:
    opt.zero_grad(set_to_none=True)
    batch_loss(model, batch).backward()
    opt.step()


class ProbedStep:
    """The three probes exactly as ``train_phases`` calls them on a probed update."""

    def __init__(self, model):
        self.rows: list = []
        self.ctx = ProbeContext(model=model, params=dict(model.named_parameters()), objective=None,
                                record=lambda *row: self.rows.append(row), record_layers=lambda *a: None, step=1)
        kinds = (ActivationStatsProbe, AttentionStatsProbe, LogitStatsProbe)
        self.probes = [cls(ProbeConfig(names=NAMES)) for cls in kinds]
        for probe in self.probes:
            probe.start(self.ctx)

    def __call__(self, model, opt, batch) -> None:
        self.rows.clear()
        opt.zero_grad(set_to_none=True)
        with contextlib.ExitStack() as stack:
            for probe in self.probes:
                stack.enter_context(probe.capture(self.ctx))
            batch_loss(model, batch).backward()
        for probe in self.probes:
            probe.after_backward(self.ctx)
        opt.step()


class ByHandStep:
    """The same statistics through hand-written hooks (clone to float64 in the hook, compute after)."""

    def __init__(self, model):
        self.model, self.out = model, {}

    def __call__(self, model, opt, batch) -> None:
        store: dict = {"h": [], "up": [], "attn": [], "logits": None}
        handles = []
        for block in model.blocks:
            def keep(module, args, output):
                output.retain_grad()
                store["h"].append(output)
            handles.append(block.register_forward_hook(keep))
            handles.append(block.mlp.up.register_forward_hook(lambda m, a, o: store["up"].append(o.detach().double())))
            block.attn.observer = lambda m, s, p: store["attn"].append((s.detach().double(), p.detach().double()))
        first = model.blocks[0]
        handles.append(first.register_forward_pre_hook(lambda m, a: store.__setitem__("x", a[0].detach().double())))
        handles.append(model.register_forward_hook(lambda m, a, o: store.__setitem__("logits", o.detach().double())))
        opt.zero_grad(set_to_none=True)
        batch_loss(model, batch).backward()
        for h in handles:
            h.remove()
        for block in model.blocks:
            block.attn.observer = None
        out = {}
        prev = store["x"].square().mean().sqrt()
        for i, h in enumerate(store["h"]):
            x = h.detach().double()
            rms = x.square().mean().sqrt()
            c = x - x.mean()
            out[i, "hidden_rms"], out[i, "hidden_growth"] = rms.item(), (rms / prev).item()
            out[i, "hidden_variance"] = c.square().mean().item()
            out[i, "massive_ratio"] = (x.abs().max() / x.abs().flatten().quantile(0.5)).item()
            out[i, "kurtosis"] = (c.pow(4).mean() / c.square().mean().square() - 3).item()
            out[i, "act_grad_norm"] = h.grad.double().norm().item()
            out[i, "dead_fraction"] = 1 - (store["up"][i] > 0).flatten(0, -2).any(0).double().mean().item()
            s, p = store["attn"][i]
            out[i, "attn_entropy"] = torch.special.entr(p).sum(-1).mean((0, 2)).tolist()
            out[i, "attn_logit_max"] = s.amax((0, 2, 3)).tolist()
            prev = rms
        z = store["logits"].logsumexp(-1)
        out["log_z_mean"], out["log_z_max"] = z.mean().item(), z.max().item()
        self.out = out
        opt.step()


def check(model, opt, batches) -> None:
    """The probes' rows equal the by-hand statistics on the same step (from the same weights)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    probed, by_hand = ProbedStep(model), ByHandStep(model)
    opt_state = opt.state_dict()
    probed(model, opt, batches[0])
    model.load_state_dict(state)
    opt.load_state_dict(opt_state)
    by_hand(model, opt, batches[0])
    model.load_state_dict(state)
    rows = {(layer, metric): value for _, layer, metric, value in probed.rows}
    for i in range(len(model.blocks)):
        for metric in ("hidden_rms", "hidden_growth", "hidden_variance", "massive_ratio", "kurtosis", "act_grad_norm"):
            expected = by_hand.out[i, metric]
            assert abs(rows[f"blocks.{i}", metric] - expected) <= 1e-9 * abs(expected), metric
        assert rows[f"blocks.{i}.mlp.up", "dead_fraction"] == by_hand.out[i, "dead_fraction"]
        for h, value in enumerate(by_hand.out[i, "attn_entropy"]):
            assert abs(rows[f"blocks.{i}.attn", f"attn_entropy.head{h}"] - value) <= 1e-9 * value
        for h, value in enumerate(by_hand.out[i, "attn_logit_max"]):
            assert rows[f"blocks.{i}.attn", f"attn_logit_max.head{h}"] == value
    assert abs(rows["model", "log_z_mean"] - by_hand.out["log_z_mean"]) <= 1e-12 * abs(by_hand.out["log_z_mean"])
    print("check: the probes' numbers equal the by-hand ones")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per variant (median reported)")
    parser.add_argument("--check", action="store_true", help="verify the probes against the by-hand numbers first")
    args = parser.parse_args()
    model, opt, batches = _setup()
    if args.check:
        check(model, opt, batches)
    variants = {"plain": plain_step, "probes (every step)": ProbedStep(model), "by hand (hooks)": ByHandStep(model)}
    for step in variants.values():  # warm-up
        for b in batches[:3]:
            step(model, opt, b)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(args.repeats * args.steps):  # interleaved step by step: load changes hit every variant alike
        for name, step in variants.items():
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            step(model, opt, batches[k % len(batches)])
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.thread_time() - start_cpu)
    base_wall, base_cpu = statistics.median(wall["plain"]), statistics.median(cpu["plain"])
    print(f"tiny transformer {model.config}, batch {len(batches[0].tokens)}, T = {batches[0].tokens.shape[1]}, "
          f"1 thread, median of {args.repeats * args.steps} interleaved steps, load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<22}{'wall ms':>10}{'× plain':>10}{'CPU ms':>10}{'× plain':>10}")
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<22}{1e3 * w:>10.2f}{w / base_wall:>10.2f}{1e3 * c:>10.2f}{c / base_cpu:>10.2f}")

if __name__ == "__main__":
    main()
