# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: analysis-lib (.venv)
#     language: python
#     name: analysis-lib
# ---

# %% [markdown]
# # Weights and the phases of training
#
# With small initialisation and well-separated binary data, do the first-layer neurons of a two-layer ReLU network align early with the positive or the negative data, within a time growing like log n/√μ (Min, Mallada & Vidal, ICLR 2024); does the loss then fall like 1/t, and does the first layer end approximately low-rank?
#
# Two Gaussian clusters (`gaussian_mixture` with two classes, within-class noise `data.noise`, features standardised on the training split), a two-layer ReLU MLP (`model.depth` 1) with every layer's default initialisation multiplied by `model.init_scale`, full-batch gradient descent on the mean cross-entropy. The separation μ is the paper's: the smallest cosine between label-signed training inputs, min_{i,j} ⟨ỹ_i x_i, ỹ_j x_j⟩/(‖x_i‖‖x_j‖), computed on the data the runs see. Neuron j's alignment is max(cos(w_j, x̄₊), cos(w_j, x̄₋)), x̄₊ and x̄₋ the means of the class-1 and class-0 training inputs (`neuron_alignment` probe); the first layer's stable rank ‖W‖_F²/‖W‖_2² comes from the `weight_spectra` probe. Protocol fixed in advance: a run *aligns* at the first probe where a `fraction` of the neurons is at max cos ≥ `threshold`, *early* when the train loss is then still ≥ `early_loss`·L(0); times are gradient-flow times η·step; the loss *falls at the rate 1/t or faster* (the paper's O(1/t)) when the CI of the log-log slope over the steps ≥ `tail`·T lies at or below −1 + `slope_margin` (the slope is reported: −1 is exactly 1/t); the first layer is *low-rank* when the CI of its final stable rank lies below `low_rank`. Claim 18 of `docs/claims.md` (published as `claims.html` beside this report).
#
# Render: `papermill notebooks/10-weights-and-phases.ipynb out.ipynb -f notebooks/params/10-weights-and-phases/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/10-weights-and-phases/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; a seed fixes the initial weights in every arm
data: dict = {"name": "gaussian_mixture", "n_classes": 2, "n_features": 20, "noise": 0.05, "n_train": 200,
              "n_test": 100}  # DataConfig: two separated Gaussian clusters
model: dict = {"kind": "mlp", "depth": 1, "width": 20, "activation": "relu", "init_scale": 0.001}  # ModelConfig
train: dict = {"optimizer": "sgd", "lr": 0.1, "batch_size": 0, "steps": 500}  # TrainConfig: full-batch GD
probes: dict = {"names": ["eval", "neuron_alignment", "weight_spectra"], "schedule": "log", "points": 30}  # ProbeConfig
arms: dict = {  # named arms: dotted config keys -> lists of values
    "scales": {"model.init_scale": [0.001, 1.0]},  # claim 18 over init scales (the reference among them)
    "sweep": {"data.n_train": [50, 200], "data.noise": [0.05, 0.1]},  # time to alignment against n and μ
}
reference_scale: float = 1.0  # the default initialisation the small scales are compared with
threshold: float = 0.9  # a neuron is aligned when max(cos(w, x̄₊), cos(w, x̄₋)) reaches this
fraction: float = 0.75  # a run is aligned when this fraction of neurons is (0.5, 0.75, 0.9 or 1.0)
early_loss: float = 0.9  # alignment is early when the train loss is still at least early_loss * L(0)
tail: float = 0.1  # the 1/t fit uses the probes from step tail * T on (T the last step)
slope_margin: float = 0.25  # the loss falls as fast as 1/t when the slope's CI lies below -1 + margin
low_rank: float = 2.0  # the first layer is low-rank when the CI of its final stable rank lies below this
phase_data: dict = {"name": "gaussian_mixture", "n_classes": 2, "n_features": 12, "noise": 1.0, "n_train": 400,
                    "n_test": 100}  # claim 19: DataConfig of its runs (overlapping clusters: training error stays > 0)
phase_model: dict = {"kind": "mlp", "depth": 3, "width": 8}  # claim 19: a plain MLP; activation from phase_activations
phase_train: dict = {"batch_size": 32, "steps": 300}  # claim 19: overrides of `train` (same optimiser and η), mini-batches
phase_probes: dict = {"names": ["eval", "gradient_snr", "weights"], "schedule": "log", "points": 12, "snr_batches": 16,
                      "snr_batch_size": 32}  # claim 19: ProbeConfig; SNR over 16 mini-batches of 32 at each probe
phase_activations: list = ["tanh", "relu"]  # claim 19: saturating vs not (Saxe et al. 2018)
phase_bins: list = [10, 30]  # claim 19: equal-width bin counts of the information plane
phase_protocol_bins: int = 30  # claim 19: the bin count of the compression rows (Shwartz-Ziv & Tishby used 30)
snr_threshold: float = 1.0  # claim 19: drift while the SNR is at or above this, diffusion below
snr_window: int = 3  # claim 19: odd number of probes of the running median smoothing the SNR before thresholding
small_error: float = 0.1  # claim 19: the training error is small when 1 - train_acc is at most this
info_samples: int = 200  # claim 19: the first n training samples are the information plane's evaluation set
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/10-weights-and-phases

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training (generating the data to compute μ trains nothing).

# %%
import pandas as pd

from analysis_lib import (StudyOutputs, expand_grid, format_test_table, format_verdict_table, grid_executor, mean_ci,
                          run_grid, verdict_table)
from analysis_lib.plots import alignment as alignment_plots, stats as stat_plots
from analysis_lib.studies import weights_and_phases as study

configs = expand_grid({"data": data, "model": model, "train": train, "probes": probes}, arms, seeds)
separation = study.check_parameters(configs, arms, threshold=threshold, fraction=fraction, early_loss=early_loss,
                                    tail=tail, slope_margin=slope_margin, low_rank=low_rank,
                                    reference_scale=reference_scale, n_boot=n_boot)
init_scales = sorted({c.model.init_scale for c in configs if c.label("arm") == "scales"})
out = StudyOutputs("10-weights-and-phases", output_dir)
print(f"{len(configs)} runs: {len(arms)} arms x their conditions x {len(seeds)} seeds")

# %% [markdown]
# Claim-19 configuration, validated here before any training: its own runs, mini-batch SGD with `train`'s optimiser and η (overridden by `phase_train`), one per activation and seed.

# %%
from analysis_lib.plots import phases as phase_plots
from analysis_lib.studies import drift_diffusion

phase_configs = drift_diffusion.phase_configs(phase_data, phase_model, {**train, **phase_train}, phase_probes,
                                              phase_activations, seeds)
drift_diffusion.check_parameters(phase_configs, activations=phase_activations, bins=phase_bins,
                                 protocol_bins=phase_protocol_bins, threshold=snr_threshold, window=snr_window,
                                 small_error=small_error, info_samples=info_samples, n_boot=n_boot)
print(f"claim 19: {len(phase_configs)} runs: {len(phase_activations)} activations x {len(seeds)} seeds")

# %% [markdown]
# **The datasets and their separation μ** (training split as the runs see it): log n/√μ is the claim's scale of the time to alignment.

# %%
out.save_table("separation", separation)
separation

# %% [markdown]
# Train (or reuse from the run store) every run. Runs whose loss became non-finite are listed as `diverged` and kept; only finished runs enter the analysis.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
finished = result.runs.loc[result.runs["status"] == "finished", "run_id"]
metrics = result.metrics[result.metrics["run_id"].isin(finished)]
learning_rates = result.parameter("train.lr")
result.runs.groupby(["arm", "init_scale", "n_train", "noise", "status"]).size().rename("runs").reset_index()

# %%
protocol = {"threshold": threshold, "fraction": fraction, "early_loss": early_loss, "tail": tail}
summary = study.alignment_table(metrics, learning_rates, **protocol)
scale_curves = metrics[metrics["arm"] == "scales"]

# %% [markdown]
# **Mean alignment of the first-layer neurons over training, one panel per init scale** (one line per seed; mean over neurons of max(cos(w_j, x̄₊), cos(w_j, x̄₋)); symmetric-log step axis). Look for the rise to near 1 under small init, and its absence at the reference scale.

# %%
fig = alignment_plots.plot_runs_over_training(scale_curves, "alignment_mean", col="init_scale", layer=study.LAYER,
                                              ylabel="mean max cos(w_j, x̄±)")
out.save_figure("alignment_over_training", fig)

# %% [markdown]
# **Training loss over training, one panel per init scale** (log-log). Under small init it stays at L(0) = ln 2 while the neurons align, then falls; a 1/t decay is a straight line of slope −1, a faster one steeper.

# %%
fig = alignment_plots.plot_runs_over_training(scale_curves, "train_loss", col="init_scale", logy=True,
                                              loss_unit=result.loss_unit())
out.save_figure("loss_over_training", fig)

# %% [markdown]
# **Stable rank ‖W‖_F²/‖W‖_2² of the first layer over training, one panel per init scale** (`weight_spectra` probe). Low-rank means near 1–2, against at most min(width, features).

# %%
fig = alignment_plots.plot_runs_over_training(scale_curves, "stable_rank", col="init_scale", layer=study.LAYER,
                                              ylabel="stable rank of fc1")
out.save_figure("stable_rank_over_training", fig)

# %% [markdown]
# **Per init scale** (mean over seeds, 95% bootstrap CI): share of runs aligned, time to alignment (η·steps), whether it was early, the loss there relative to L(0), the log-log slope of the loss at the end, the final stable rank of the first layer and the final mean alignment.

# %%
scale_summary = mean_ci(summary[summary["arm"] == "scales"], ["init_scale", "metric"], n_boot=n_boot)
out.save_table("scale_summary", scale_summary)
scale_summary.pivot(index="metric", columns="init_scale", values="mean")

# %% [markdown]
# **Final stable rank of the first layer, each small init scale minus the reference**, paired by seed.

# %%
rank_tests = study.stable_rank_tests(summary, reference_scale=reference_scale, n_boot=n_boot)
out.save_table("stable_rank_tests", rank_tests)
format_test_table(rank_tests) if len(rank_tests) else rank_tests

# %% [markdown]
# **Time to alignment against log n/√μ** across the sweep (one point per run, coloured by the noise; red: least-squares fit, CI of the slope by resampling seeds). The claim bounds the time by a multiple of log n/√μ.

# %%
scaling = study.scaling_fit(summary, separation, n_boot=n_boot)
times = summary[(summary["arm"] == "sweep") & (summary["metric"] == "align_time")].merge(separation,
                                                                                        on=["n_train", "noise"])
fig = alignment_plots.plot_time_against(times, x="log_n_over_sqrt_mu", hue="noise", slope=scaling["slope"],
                                        intercept=scaling["intercept"], xlabel="log n / √μ",
                                        ylabel="time to alignment (η·steps)")
out.save_figure("alignment_time_scaling", fig)
pd.DataFrame([scaling])

# %% [markdown]
# **Time to alignment per dataset of the sweep** (mean over seeds, 95% bootstrap CI, η·steps), with n, μ and log n/√μ.

# %%
sweep_summary = mean_ci(times, ["n_train", "noise", "mu", "log_n_over_sqrt_mu"], n_boot=n_boot)
out.save_table("sweep_summary", sweep_summary)
sweep_summary

# %% [markdown]
# ## How much do the claim-18 verdicts hang on our choices?
#
# The same runs re-read under other choices, one at a time: when a neuron counts as aligned (`threshold`), how many must be (`fraction`), what counts as early (`early_loss`), where the 1/t fit starts (`tail`), how close to −1 its slope must be (`slope_margin`) and what counts as low rank (`low_rank`). The verdict table below says, for each "no" or "partly", whether it is robust or conditional.

# %%
alignment_rows, alignment_sensitivity = study.robust_verdict_rows(
    metrics, learning_rates, separation, rank_tests, init_scales=init_scales, threshold=threshold, fraction=fraction,
    early_loss=early_loss, tail=tail, slope_margin=slope_margin, low_rank=low_rank, reference_scale=reference_scale,
    n_boot=n_boot)

# %% [markdown]
# ## Drift then diffusion (claim 19)
#
# Shwartz-Ziv & Tishby (2017) see two phases of SGD: *drift*, where the mini-batch gradients agree (per-layer SNR ‖E_b g_b‖ / (E_b‖g_b − E g‖²)^½ above 1), then *diffusion*, where noise dominates (SNR below 1), after the training error is small; in the binned information plane the hidden layers then *compress* (I(X; T) falls). Saxe et al. (2018) find the compression only with saturating (tanh) activations and depending on the binning. Claim 4's per-layer gradient noise has this as its testable form.
#
# Small MLPs (`phase_model`, tanh and relu) on two overlapping Gaussian clusters (`phase_data`) trained by mini-batch SGD. The `gradient_snr` probe measures, at each probed θ, the SNR over `snr_batches` fresh mini-batches of `snr_batch_size` samples (its own step-seeded generator; signal ‖ḡ‖² − s²/K bias-corrected; this is the mini-batch SNR, the square root of B·(N−1)/(N−B) times claim 4's per-sample ratio). Protocol fixed in advance: a layer *switches* at the first probe from which its SNR (running median over `snr_window` probes) stays below `snr_threshold`, having started at or above it; the training error is *small* at the switch when 1 − train_acc ≤ `small_error`. The information plane is computed afterwards from the stored weight trajectory (every bin count from the same runs): each hidden layer's activations on the first `info_samples` training samples, equal-width bins over their range, plug-in I(X; T) = H(T) and I(T; Y) in bits. A layer *compresses* when I(X; T) at the run's whole-model switch minus I(X; T) at the end is > 0; per activation and bin count, the CI over seeds of that difference (mean over hidden layers) decides.
#
# Train (or reuse) the claim-19 runs; only finished runs enter the analysis, and a run whose training loss ends above 100 times its start counts as diverged (a saturated tanh network at a huge step size keeps a finite loss).

# %%
with grid_executor(workers, scheduler) as executor:
    phase_result = run_grid(phase_configs, executor=executor)
phase_table = drift_diffusion.run_status(phase_result.runs, phase_result.metrics)  # a blown-up loss counts as diverged
phase_runs = drift_diffusion.status_counts(phase_table)
phase_finished = list(phase_table.loc[phase_table["status"] == "finished", "run_id"])
phase_metrics = phase_result.metrics[phase_result.metrics["run_id"].isin(phase_finished)]
phase_labels = phase_table[["run_id", "activation", "seed"]].drop_duplicates("run_id")
info = drift_diffusion.information_table(phase_result, phase_finished, bins=phase_bins,
                                         info_samples=info_samples).merge(phase_labels, on="run_id")
switches = drift_diffusion.switch_table(phase_metrics, threshold=snr_threshold, window=snr_window)
phase_table.groupby(["activation", "status"]).size().rename("runs").reset_index()

# %% [markdown]
# **Per-layer mini-batch gradient SNR over training, one panel per activation** (mean over seeds, 95% bootstrap band; log-log, step 0 kept; dashed: the threshold). Drift then diffusion is a fall from above the line to below it, for good.

# %%
fig = phase_plots.plot_snr_over_training(phase_metrics, threshold=snr_threshold)
out.save_figure("snr_over_training", fig)

# %% [markdown]
# **The phase switch per activation and layer** (mean over seeds, 95% bootstrap CI): the switch step, the share of runs that switched (high first, below the threshold for good) and the training error at the switch.

# %%
switch_long = switches.melt(id_vars=["run_id", "activation", "seed", "layer"],
                            value_vars=["switch_step", "switched", "error_at_switch"], var_name="metric")
phase_switches = mean_ci(switch_long, ["activation", "layer", "metric"], n_boot=n_boot)
out.save_table("phase_switches", phase_switches)
phase_switches.pivot(index=["activation", "layer"], columns="metric", values="mean")

# %% [markdown]
# **The binned information plane at `phase_protocol_bins` bins, one panel per activation**: I(T; Y) against I(X; T) for each hidden layer through training (mean over seeds per probed step; points coloured by log step, light late). Compression is a move to the left late in training.

# %%
fig = phase_plots.plot_information_plane(info, bins=phase_protocol_bins)
out.save_figure("information_plane", fig)

# %% [markdown]
# **Compression per activation and bin count**: ΔI(X; T) = I(X; T) at the run's switch − at the end, mean over hidden layers, mean over seeds with its 95% bootstrap CI (above 0: compression). Runs without a whole-model switch are left out.

# %%
compression = drift_diffusion.compression_table(info, switches)
compression_cells = (drift_diffusion.compression_cells(compression, n_boot=n_boot) if len(compression)
                     else pd.DataFrame(columns=["activation", "bins", "mean", "ci_low", "ci_high", "n", "outcome"]))
out.save_table("compression", compression_cells)
fig = phase_plots.plot_compression(compression_cells)
out.save_figure("compression", fig)

# %% [markdown]
# **Claim-19 verdicts under other choices**: the running-median window (1, 3, 5 probes), what counts as a small training error (0.05, 0.1, 0.2) and the bin count of the compression rows (each of `phase_bins`), one at a time; no new training.

# %%
phase_rows, phase_sensitivity = drift_diffusion.robust_verdict_rows(
    phase_metrics, info, threshold=snr_threshold, window=snr_window, small_error=small_error, bins=phase_bins,
    protocol_bins=phase_protocol_bins, n_boot=n_boot)
pd.DataFrame(phase_rows)[["claim", "measured", "reproduced"]]

# %% [markdown]
# ## Robustness of every verdict
#
# Each claim's verdict under the protocol and under each alternative choice (one at a time).

# %%
sensitivity = pd.concat([t for t in (alignment_sensitivity, phase_sensitivity) if t is not None], ignore_index=True)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: early alignment when every run at a small init scale aligns while the loss is still near L(0); the scaling when the CI of the slope of the time to alignment on log n/√μ lies above 0; 1/t (the paper's O(1/t) rate) when the CI of the late log-log slope of the loss lies at or below −1 + `slope_margin`; low rank when the CI of the final stable rank lies below `low_rank`, and lower than at the reference scale by the paired difference's CI.

# %%
verdict_rows = alignment_rows + phase_rows
runs = {k: v + phase_runs.get(k, 0) for k, v in result.status_counts().items()}
verdict = verdict_table(verdict_rows, runs=runs)
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=runs,
                 params={"seeds": seeds, "arms": arms, "data": data, "model": model, "train": train,
                         "phase_data": phase_data, "phase_model": phase_model, "phase_train": phase_train,
                         "phase_activations": phase_activations, "phase_bins": phase_bins})
format_verdict_table(verdict)
