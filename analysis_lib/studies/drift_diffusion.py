"""Study 10, second part: drift then diffusion (claim 19, and so claim 4), its protocol, checks and verdicts.

Claim 19 of ``docs/claims.md`` (Shwartz-Ziv & Tishby 2017; Saxe et al. 2018): the per-layer
mini-batch gradient SNR is high early (drift) and falls below 1 later (diffusion), after the
training error is small; the binned information plane shows compression, I(X; T_l) falling, in
the second phase; Saxe et al. find that compression depends on saturating (tanh) activations and
on the binning. Claim 4 (per-layer gradient noise) has claim 19 as its testable form.

Runs: small MLPs (``fc1..fcD`` hidden layers, no normalisation or residuals) trained by SGD on
mini-batches, one arm ``phases`` over ``model.activation``, with the probes ``eval``,
``gradient_snr`` (:mod:`analysis_lib.gradients.snr`: K mini-batches of B samples at each probed
θ) and ``weights`` (the stored trajectory). The information plane is computed afterwards from the
stored trajectory (cheaper than a probe: every bin count is read from the same runs, no run per
bin count): at each probed step, each hidden layer's activations act(fc_l(h)) on the first
``info_samples`` training samples, binned into equal-width bins over their range
(:mod:`analysis_lib.stats.information`).

Protocol, fixed before looking at results:

- a layer *switches* in a run at the first probe from which its SNR (``grad_snr_mb``, smoothed
  by a centred running median over ``window`` probes) stays below ``threshold`` = 1, having been
  at or above it at the first probe (:func:`~analysis_lib.gradients.snr.phase_switch`);
- the switch comes *after the training error is small* when the training error 1 − train_acc at
  the switch step is at most ``small_error``;
- the second phase of a run starts at the switch of its whole-model SNR (layer ``"model"``); a
  layer *compresses* when ΔI = I(X; T_l) at that step − I(X; T_l) at the last step is > 0; per
  activation and bin count, the per-run mean ΔI over hidden layers has a bootstrap CI over seeds:
  compression when it lies above 0, none when below (runs without a switch are left out).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..gradients.snr import phase_switch
from ..layers import MODEL
from ..stats.effects import mean_ci
from ..stats.information import information_plane
from ..stats.power import power_note
from ..stats.verdicts import NO_POWER, NOT_TESTED, share_verdict, verdict_from_interval
from ..validation import check_int, check_number, check_subset, fail
from .sensitivity import decide, with_alternatives

SOURCE = "Shwartz-Ziv & Tishby 2017; Saxe et al. 2018 (claim 19)"
NOISE_SOURCE = "McCandlish et al. 2018 (claim 4; its testable form is claim 19)"
ARM = "phases"
ACTIVATIONS = ("tanh", "relu")
ID_COLUMNS = ["run_id", "activation", "seed"]


def phase_configs(data: Mapping, model: Mapping, train: Mapping, probes: Mapping, activations: Sequence[str],
                  seeds: Sequence[int]) -> list:
    """The runs of this part: one arm ``phases`` over ``model.activation``, every seed."""
    from ..runs.grid import expand_grid

    return expand_grid({"data": dict(data), "model": dict(model), "train": dict(train), "probes": dict(probes)},
                       {ARM: {"model.activation": list(activations)}}, seeds)


def check_parameters(configs: Sequence, *, activations: Sequence[str], bins: Sequence[int], protocol_bins: int,
                     threshold: float, window: int, small_error: float, info_samples: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad parameter of this part, before any training."""
    check_subset("phase_activations", list(activations), ACTIVATIONS)
    if not activations:
        fail("phase_activations", list(activations), f"must name at least one of {list(ACTIVATIONS)}")
    if isinstance(bins, (str, int)) or not bins:
        fail("phase_bins", bins, "must be a non-empty list of bin counts >= 2")
    for b in bins:
        check_int("phase_bins", b, 2)
    check_subset("phase_protocol_bins", [protocol_bins], list(bins))
    check_number("snr_threshold", threshold, positive=True)
    check_int("snr_window", window, 1)
    if window % 2 == 0:
        fail("snr_window", window, "must be odd (a centred running median)")
    check_number("small_error", small_error, lo=0.0, hi=1.0)
    check_int("info_samples", info_samples, 2)
    check_int("n_boot", n_boot, 1)
    for c in configs:
        names = set(c.probes.names)
        if not {"eval", "gradient_snr", "weights"} <= names:
            fail("phase_probes.names", list(c.probes.names), "must include 'eval', 'gradient_snr' and 'weights'")
        if c.model.kind != "mlp" or c.model.norm != "none" or c.model.residual:
            fail("phase_model", {"kind": c.model.kind, "norm": c.model.norm, "residual": c.model.residual},
                 "must be a plain MLP (kind mlp, norm none, residual false)")
        if c.train.batch_size == 0:
            fail("phase_train.batch_size", 0, "must be > 0: the claim is about mini-batch SGD")
        if info_samples > c.data.n_train:
            fail("info_samples", info_samples, f"must be <= data.n_train (= {c.data.n_train})")
        if c.probes.snr_batch_size > c.data.n_train:
            fail("phase_probes.snr_batch_size", c.probes.snr_batch_size,
                 f"must be <= data.n_train (= {c.data.n_train})")


BLOW_UP = 100.0  # a finished run whose last train loss exceeds BLOW_UP · its first is counted as diverged


def run_status(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The grid's run table with finished runs whose training loss blew up relabelled ``diverged``.

    A saturating (tanh) network at a huge step size keeps a finite loss (its hidden gradients
    vanish, its output layer grows without bound), so the training loop calls it finished; a run
    whose last ``train_loss`` is non-finite or above :data:`BLOW_UP` times its first is left out
    of the analysis and counted as diverged instead.
    """
    loss = metrics[(metrics["metric"] == "train_loss") & (metrics["layer"] == MODEL)].sort_values("step")
    ends = loss.groupby("run_id")["value"].agg(first=lambda v: v.iloc[0], last=lambda v: v.iloc[-1])  # NaN kept
    blown = ends.index[~(ends["last"] <= BLOW_UP * ends["first"])]
    out = runs.copy()
    out.loc[(out["status"] == "finished") & out["run_id"].isin(blown), "status"] = "diverged"
    return out


def status_counts(runs: pd.DataFrame) -> dict[str, int]:
    """Runs finished, diverged and failed of a run table (as :meth:`GridResult.status_counts`)."""
    counts = runs["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in ("finished", "diverged", "failed")}


def _runs(metrics: pd.DataFrame):
    return metrics.groupby(ID_COLUMNS, sort=False)


def switch_table(metrics: pd.DataFrame, *, threshold: float, window: int) -> pd.DataFrame:
    """Per run and layer: the phase switch of ``grad_snr_mb`` and the training error there.

    Returns:
        ``run_id, activation, seed, layer, switch_step, high_early, low_late, switched,
        error_at_switch`` (1 − train_acc at the switch step; NaN without a switch).
    """
    rows = []
    for key, run in _runs(metrics):
        acc = run[(run["metric"] == "train_acc") & (run["layer"] == MODEL)].set_index("step")["value"]
        snr = run[run["metric"] == "grad_snr_mb"]
        for layer, sub in snr.groupby("layer", sort=False):
            sub = sub.sort_values("step")
            found = phase_switch(sub["step"].to_numpy(), sub["value"].to_numpy(), threshold=threshold, window=window)
            step = found["switch_step"]
            error = 1.0 - float(acc.get(step, np.nan)) if not np.isnan(step) else np.nan
            rows.append({**dict(zip(ID_COLUMNS, key)), "layer": layer, **found, "error_at_switch": error})
    return pd.DataFrame(rows, columns=[*ID_COLUMNS, "layer", "switch_step", "high_early", "low_late", "switched",
                                       "error_at_switch"])


def hidden_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Layer ``fc<i>`` -> act(fc_i(h)) of a plain MLP on inputs ``x``, float64 numpy."""
    out, h = {}, x
    with torch.no_grad():
        for i in range(1, model.depth + 1):
            h = model.act(getattr(model, f"fc{i}")(h))
            out[f"fc{i}"] = h.double().numpy()
    return out


def information_table(result, run_ids: Sequence[str], *, bins: Sequence[int], info_samples: int) -> pd.DataFrame:
    """I(X; T_l) and I(T_l; Y) at every stored step of each run's trajectory, per hidden layer and bin count.

    Args:
        result: the grid (:class:`~analysis_lib.runs.grid.GridResult`) the runs belong to.
        run_ids: finished runs with a ``trajectory`` checkpoint.
        bins: bin counts. info_samples: the first n training samples are the evaluation set.

    Returns:
        ``run_id, step, layer, bins, I_XT, I_TY`` (bits).
    """
    rows = []
    for rid in run_ids:
        config = result.configs[rid]
        trajectory = result.store.load_checkpoint(rid, "trajectory")
        data = config.dataset()
        x, y = data.x_train[:info_samples], data.y_train[:info_samples].numpy()
        model = config.build_model().eval()
        for step, flat in zip(trajectory["steps"].tolist(), trajectory["weights"]):
            torch.nn.utils.vector_to_parameters(flat.to(next(model.parameters()).dtype), model.parameters())
            for layer, t in hidden_activations(model, x).items():
                if not np.isfinite(t).all():
                    continue
                for b in bins:
                    rows.append({"run_id": rid, "step": step, "layer": layer, "bins": int(b),
                                 **information_plane(t, y, int(b))})
    return pd.DataFrame(rows, columns=["run_id", "step", "layer", "bins", "I_XT", "I_TY"])


def compression_table(info: pd.DataFrame, switches: pd.DataFrame) -> pd.DataFrame:
    """Per run and bin count: ΔI = I(X; T_l) at the model's switch − at the last step, mean over hidden layers.

    Returns:
        ``run_id, activation, seed, bins, delta_I_XT``; runs without a whole-model switch are left out.
    """
    starts = switches[(switches["layer"] == MODEL) & switches["switched"].eq(1.0)]
    rows = []
    for r in starts.itertuples(index=False):
        sub = info[info["run_id"] == r.run_id]
        for b, by_bins in sub.groupby("bins"):
            deltas = []
            for _, layer in by_bins.groupby("layer"):
                series = layer.set_index("step")["I_XT"].sort_index()
                if r.switch_step in series.index:
                    deltas.append(series[r.switch_step] - series.iloc[-1])
            if deltas:
                rows.append({"run_id": r.run_id, "activation": r.activation, "seed": r.seed, "bins": int(b),
                             "delta_I_XT": float(np.mean(deltas))})
    return pd.DataFrame(rows, columns=[*ID_COLUMNS, "bins", "delta_I_XT"])


def compression_cells(compression: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Per activation and bin count: mean ΔI with its bootstrap CI over seeds and the outcome."""
    cells = mean_ci(compression.rename(columns={"delta_I_XT": "value"}), ["activation", "bins"], n_boot=n_boot)
    cells["outcome"] = [verdict_from_interval(lo, hi) for lo, hi in zip(cells["ci_low"], cells["ci_high"])]
    return cells


def verdict_rows(switches: pd.DataFrame, compression: pd.DataFrame, *, threshold: float, small_error: float,
                 protocol_bins: int, n_boot: int) -> list[dict]:
    """The verdict rows of claims 19 and 4 by the rules of the module docstring."""
    hidden = switches[switches["layer"] != MODEL]
    flags = hidden["switched"].dropna().astype(bool)
    switched = hidden[hidden["switched"] == 1.0]
    small = switched["error_at_switch"].dropna() <= small_error
    phase = {"claim": f"Per-layer mini-batch gradient SNR is high early (≥ {threshold:g}) and falls below "
                      f"{threshold:g} later", "source": SOURCE,
             "measured": f"{int(flags.sum())} of {len(flags)} (run, layer) pairs switched",
             "n": len(flags), "reproduced": share_verdict(flags),
             "rule": "a layer switches when its running-median SNR starts at or above the threshold and stays "
                     "below it from some probe on: yes when every (run, layer) does, partly when some, no when none"}
    after = {"claim": "... after the training error is small", "source": SOURCE,
             "measured": (f"training error ≤ {small_error:g} at the switch in {int(small.sum())} of {len(small)} "
                          f"switches (median error {switched['error_at_switch'].median():.3g})") if len(small)
             else "no layer switched", "n": len(small), "reproduced": share_verdict(small),
             "rule": "yes when the training error at every switch is at most small_error, partly when at some"}
    cells = compression_cells(compression, n_boot=n_boot) if len(compression) else pd.DataFrame(
        columns=["activation", "bins", "mean", "ci_low", "ci_high", "n", "outcome"])
    rows = [phase, after]
    for activation in ACTIVATIONS:
        cell = cells[(cells["activation"] == activation) & (cells["bins"] == protocol_bins)]
        if cell.empty:
            continue
        c = cell.iloc[0]
        estimate = pd.Series({"estimate": c["mean"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "n": c["n"]})
        power = (power_note(estimate, "ΔI(X;T)") or NO_POWER) if c["outcome"] == "inconclusive" else ""
        rows.append({"power": power,
                     "claim": f"The information plane shows compression in the second phase ({activation})",
                     "source": SOURCE, "measured": f"ΔI(X;T) = {c['mean']:.3g} [{c['ci_low']:.3g}, "
                                                   f"{c['ci_high']:.3g}] bits", "n": int(c["n"]),
                     "reproduced": c["outcome"],
                     "rule": "yes when the 95% bootstrap CI over seeds of ΔI(X;T) (switch − end, mean over hidden "
                             "layers) lies above 0, no when below"})
    tested = cells[cells["outcome"] != NOT_TESTED]
    listed = "; ".join(f"{r.activation}/{r.bins}: {r.outcome}" for r in tested.itertuples()) or "no cell tested"
    yes = tested["outcome"] == "yes"
    rows.append({"claim": "Compression is robust across activation × bin count × seed", "source": SOURCE,
                 "measured": listed, "n": len(tested),
                 "reproduced": NOT_TESTED if tested.empty else "yes" if yes.all() else "partly" if yes.any() else "no",
                 "rule": "yes when every (activation, bins) cell compresses by its CI, partly when some, no when none"})
    rows.append({**phase, "claim": "Per-layer gradient noise shows the phase of training (SNR above, then below 1)",
                 "source": NOISE_SOURCE})
    return rows


ALTERNATIVES = {"window": (1, 5), "small_error": (0.05, 0.2)}


def robust_verdict_rows(metrics: pd.DataFrame, info: pd.DataFrame, *, threshold: float, window: int,
                        small_error: float, bins: Sequence[int], protocol_bins: int,
                        n_boot: int) -> tuple[list[dict], pd.DataFrame]:
    """:func:`verdict_rows` with each no / partly's robustness, and the sensitivity table.

    Alternatives, one at a time: the running-median ``window``, ``small_error`` and the bin count
    of the compression rows (every bin count of ``bins``). No new training.
    """
    def evaluate(setting: dict) -> list[dict]:
        switches = switch_table(metrics, threshold=threshold, window=setting["window"])
        return verdict_rows(switches, compression_table(info, switches), threshold=threshold,
                            small_error=setting["small_error"], protocol_bins=setting["bins"], n_boot=n_boot)

    protocol = {"window": window, "small_error": small_error, "bins": protocol_bins}
    choices = {**with_alternatives(protocol, ALTERNATIVES), "bins": sorted({int(b) for b in bins})}
    return decide(evaluate, choices, protocol)
