"""Weight spectra: the probe's cost against the training step, and WeightWatcher on the same models.

Issue 13. One torch thread, MNIST-1D (4,000 training samples, batch 128, SGD lr 0.05), three
models trained for ``--steps`` steps from seed 0: the default MLP 40-64-64-10, wide MLPs
40-512-512-10 and 40-1024-1024-10, and the default 1-D CNN (two stride-2 convolutions of 64
channels, kernel 5).

1. **Cost.** A run with the ``weight_spectra`` probe every 10 steps against the same run without
   it: the loop's own ``train_seconds`` per step and ``probe_seconds`` per probed step
   (identical ``batch_loss`` checked), and the median time of the probe's function
   (:func:`analysis_lib.weights.spectra.probe_spectra`) on the final weights.
2. **WeightWatcher** 0.7.7 (``weightwatcher.WeightWatcher(model).analyze()``) on the trained
   models against :func:`analysis_lib.weights.layer_weight_spectra` (``n_boot=200``): per layer
   σ_max against WW's ``sv_max``, the eigenvalues (ours λ = σ²/N; WW's ESD is σ², so it is
   compared as σ²), stable rank, the power-law α and the tail's size (WW's ``num_pl_spikes``,
   ours ``n_tail``); ``alpha_any`` is our KS point estimate whatever the tail's size (the
   estimator compared alone), ``alpha`` ours where identifiable (tail of ≥ 50 eigenvalues).
   Also the number of singular values above the MP edge, for W and for its shuffled null. Wall
   time of each tool on the whole model.

WeightWatcher goes in its own venv with the torch pin (benchmarks/README.md); without it part 2
prints "skipped: weightwatcher not installed".

    /tmp/ww-venv/bin/python benchmarks/weight_spectra.py            # about 2 minutes on 2 cores
    /tmp/ww-venv/bin/python benchmarks/weight_spectra.py --steps 100 --repeats 5   # about 40 s
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads cost a lot here
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from analysis_lib.training.classifier import run_model, train_classifier  # noqa: E402
from analysis_lib.training.config import config_from_dict  # noqa: E402
from analysis_lib.weights import layer_weight_spectra  # noqa: E402
from analysis_lib.weights.powerlaw_fit import ks_fit  # noqa: E402
from analysis_lib.weights.spectra import probe_spectra, weight_matrices, weight_matrix  # noqa: E402

MODELS = {
    "mlp-64 (default)": {"kind": "mlp", "depth": 2, "width": 64},
    "mlp-512": {"kind": "mlp", "depth": 2, "width": 512},
    "mlp-1024": {"kind": "mlp", "depth": 2, "width": 1024},
    "cnn-64": {"kind": "cnn", "depth": 2, "width": 64, "kernel_size": 5},
}


def config(model: dict, steps: int, probes: list[str], every: int):
    return config_from_dict({"model": model, "train": {"steps": steps},
                             "probes": {"names": probes, "schedule": "every", "every": every}, "seed": 0})


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cost(name: str, model: dict, steps: int, repeats: int):
    """Part 1; returns the trained model (from the ``weights`` probe's final state dict)."""
    probed = train_classifier(config(model, steps, ["weight_spectra"], 10))
    plain_config = config(model, steps, ["weights"], steps)
    plain = train_classifier(plain_config)
    loss = lambda m: m[m["metric"] == "batch_loss"].set_index("step")["value"]  # noqa: E731
    same = loss(probed.metrics).equals(loss(plain.metrics))
    step = plain.timings["train_seconds"] / steps
    per_probe = probed.timings["probe_seconds"] / len(set(probed.metrics.query("metric == 'sigma_max'")["step"]))
    trained = run_model(plain_config, plain.tables["final"])
    params = dict(trained.named_parameters())
    direct = median_seconds(lambda: probe_spectra(params), repeats)
    shapes = " ".join("x".join(map(str, weight_matrix(p).shape)) for p in weight_matrices(trained).values())
    print(f"{name:18s} matrices {shapes:24s} step {step * 1e3:7.2f} ms | probe in the loop {per_probe * 1e3:7.2f} ms"
          f" ({per_probe / step:5.2f} steps) | probe_spectra alone {direct * 1e3:7.2f} ms"
          f" ({direct / step:5.2f} steps) | batch_loss identical: {same}")
    return trained


def ours(model: torch.nn.Module) -> tuple[pd.DataFrame, float]:
    t = time.perf_counter()
    table = layer_weight_spectra(model, n_boot=200)
    seconds = time.perf_counter() - t
    null = layer_weight_spectra(model, null=True, fit_tail=False).query("matrix == 'shuffled'")
    table["null_above_mp"] = null["n_above_mp"].to_numpy()
    forced = []
    for name, p in weight_matrices(model).items():
        s = np.linalg.svd(weight_matrix(p).double().numpy(), compute_uv=False)
        lam = s**2 / max(weight_matrix(p).shape)
        forced.append(ks_fit(lam[lam > 0])[0] if len(np.unique(lam)) >= 2 else np.nan)
    table["alpha_any"] = forced
    return table, seconds


def compare(name: str, model: torch.nn.Module) -> None:
    import weightwatcher

    table, our_seconds = ours(model)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        watcher = weightwatcher.WeightWatcher(model=model)
        details = watcher.analyze()
        ww_seconds = time.perf_counter() - t
    details = details.set_index("longname")
    rows = []
    for _, row in table.iterrows():
        layer, w = row["layer"], dict(model.named_parameters())[f"{row['layer']}.{row['tensor']}"]
        s = np.sort(np.linalg.svd(weight_matrix(w).double().numpy(), compute_uv=False) ** 2)
        out = {"model": name, "layer": layer, "shape": f"{row['rows']}x{row['cols']}", "status": row["status"][:40],
               "alpha": row["alpha"], "alpha_lo": row["alpha_lo"], "alpha_hi": row["alpha_hi"],
               "alpha_any": row["alpha_any"], "n_tail": row["n_tail"], "R_exp": row["R_exponential"],
               "p_exp": row["p_exponential"], "R_logn": row["R_lognormal"], "p_logn": row["p_lognormal"],
               "above_mp": row["n_above_mp"], "null_above_mp": row["null_above_mp"]}
        if layer in details.index:
            d = details.loc[layer]
            esd = np.sort(np.asarray(watcher.get_ESD(layer=int(d["layer_id"])), dtype=np.float64))
            out.update(ww_alpha=d["alpha"], ww_tail=d["num_pl_spikes"], ww_warning=d["warning"],
                       sigma_max_rel=abs(d["sv_max"] / row["sigma_max"] - 1),
                       stable_rank_rel=abs(d["stable_rank"] / row["stable_rank"] - 1),
                       esd_rel=float(np.max(np.abs(esd - s[-len(esd):])) / s[-1]) if len(esd) == len(s) else np.nan)
        else:
            out.update(ww_alpha=np.nan, ww_tail=np.nan, ww_warning="not analysed by WW")
        rows.append(out)
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(frame.to_string(index=False))
    print(f"  wall: ours {our_seconds * 1e3:.0f} ms (SVDs, KS fits, 200 bootstraps, likelihood ratios), "
          f"WeightWatcher analyze {ww_seconds * 1e3:.0f} ms\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"1. Cost of weight_spectra (one float64 SVD per matrix) against a training step, {args.steps} steps")
    trained = {name: cost(name, model, args.steps, args.repeats) for name, model in MODELS.items()}
    try:
        import weightwatcher  # noqa: F401
    except ImportError:
        print("\n2. skipped: weightwatcher not installed (benchmarks/README.md says how)")
        return
    print(f"\n2. Against WeightWatcher {weightwatcher.__version__} on the trained models")
    for name, model in trained.items():
        compare(name, model)


if __name__ == "__main__":
    main()
