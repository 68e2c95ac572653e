# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Per-layer training dynamics: SGD vs Adam, and layer rotation vs generalisation
#
# Where, layer by layer, do SGD and Adam train differently: in gradient norms, in update-to-weight ratios, in how far each layer's weights rotate? And does a larger final layer rotation go with better test accuracy across training settings, as Carbonnelle & De Vleeschouwer (2019) report?
#
# MNIST-1D (generated locally) with a 3-hidden-layer MLP and a 3-layer 1-D CNN. Seeds are the replicates; within a seed every optimiser starts from the same initial weights and sees the same data order, so optimisers are compared **paired by seed**. Claims tested (see `PHENOMENA.md`): layer rotation (claim 3), and the observation behind LARS (You et al., 2017) that SGD's update-to-weight ratio differs across layers by large factors while Adam's per-parameter normalisation evens it out.
#
# Render: `papermill notebooks/01-layer-dynamics.ipynb out.ipynb -f notebooks/params/01-layer-dynamics/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/01-layer-dynamics/smoke.yaml (quick to explore);
# the published report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; each seed fixes init and data order in every arm
data: dict = {"name": "mnist1d", "n_train": 1000, "n_test": 500}  # analysis_lib.config.DataConfig
model: dict = {"kind": "mlp", "depth": 2, "width": 16}  # base ModelConfig; arms override
train: dict = {"batch_size": 100, "steps": 40}  # base TrainConfig; arms override
probes: dict = {"schedule": "every", "every": 20}  # ProbeConfig: when per-layer probes run
arms: dict = {  # named arms of the grid: dotted config keys -> lists of values
    "main-sgd-mlp": {"model.kind": ["mlp"], "train.optimizer": ["sgd"], "train.lr": [0.05], "train.momentum": [0.9]},
    "main-adam-mlp": {"model.kind": ["mlp"], "train.optimizer": ["adam"], "train.lr": [0.002]},
    "main-sgd-cnn": {"model.kind": ["cnn"], "model.width": [16], "train.optimizer": ["sgd"], "train.lr": [0.05], "train.momentum": [0.9]},
    "main-adam-cnn": {"model.kind": ["cnn"], "model.width": [16], "train.optimizer": ["adam"], "train.lr": [0.002]},
    "sweep-sgd": {"train.optimizer": ["sgd"], "train.lr": [0.01, 0.05], "train.momentum": [0.9]},
}
main_arms: list = ["main-sgd-mlp", "main-adam-mlp", "main-sgd-cnn", "main-adam-cnn"]  # compared per layer, paired by seed
sweep_arms: list = ["sweep-sgd"]  # pooled for the rotation-vs-accuracy correlation (MLP)
alpha: float = 0.05  # family-wise error rate (Holm) of the per-layer tests
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes, or N batch workers; results do not depend on it
scheduler: str = ""  # "": this machine; "tcp://host:8786": an existing Dask cluster; "slurm" / "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/01-layer-dynamics

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
import pandas as pd

from analysis_lib import plots, stats
from analysis_lib.config import check_fraction, check_subset
from analysis_lib.executors import grid_executor
from analysis_lib.grid import expand_grid, run_grid
from analysis_lib.outputs import StudyOutputs
from analysis_lib.summaries import final_values, layer_spread, log10_values, mean_over_training, run_table
from analysis_lib.verdicts import verdict_row, verdict_table

check_subset("main_arms", main_arms, arms)
check_subset("sweep_arms", sweep_arms, arms)
check_fraction("alpha", alpha)
configs = expand_grid({"data": data, "model": model, "train": train, "probes": probes}, arms, seeds)
out = StudyOutputs("01-layer-dynamics", output_dir)
print(f"{len(configs)} runs: {len(arms)} arms x their conditions x {len(seeds)} seeds")

# %% [markdown]
# Train (or reuse from the run store) every run. Finished runs are cached in `data/runs/`, so a second render only re-reads them, and an interrupted render resumes where it stopped.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics = result.metrics
result.runs.groupby(["arm", "status"]).size().rename("runs").reset_index()

# %% [markdown]
# Per-run summaries: gradient norms and update ratios are averaged over training (log10, so differences are ratios); rotation is taken at the end.

# %%
layer_metrics = ["grad_norm", "update_ratio", "rotation"]
averaged = log10_values(mean_over_training(metrics[metrics["metric"].isin(["grad_norm", "update_ratio"])]),
                        ["grad_norm", "update_ratio"])
final = final_values(metrics)
per_layer = pd.concat([averaged, final[final["metric"] == "rotation"]], ignore_index=True)
main = per_layer[per_layer["arm"].isin(main_arms)]
main_curves = metrics[metrics["arm"].isin(main_arms)]

# %% [markdown]
# **Gradient norm per layer over training (MLP).** Look for layers whose gradient norm differs by optimiser, and for layers that shrink at different rates.

# %%
fig = plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "grad_norm", hue="optimizer", logy=True)
out.save_figure("grad_norm_over_training", fig)

# %% [markdown]
# **Update-to-weight ratio ‖Δθ_l‖/‖θ_l‖ per layer over training (MLP).** Under SGD the layers' lines should sit far apart; under Adam closer together.

# %%
fig = plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "update_ratio", hue="optimizer", logy=True)
out.save_figure("update_ratio_over_training", fig)

# %% [markdown]
# **Layer rotation 1 − cos(θ_l(t), θ_l(0)) over training (MLP).** Which layers move away from their initial direction, and how fast.

# %%
fig = plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "rotation", hue="optimizer")
out.save_figure("rotation_over_training", fig)

# %% [markdown]
# **Layer profiles, MLP.** Each summary across layers in forward order; look for where the optimisers' lines cross or diverge.

# %%
fig = plots.plot_layer_profile(main[main["model"] == "mlp"], ["log10 grad_norm", "log10 update_ratio", "rotation"], hue="optimizer")
out.save_figure("layer_profile_mlp", fig)

# %% [markdown]
# **Layer profiles, 1-D CNN** (empty when the parameter set has no CNN runs).

# %%
cnn = main[main["model"] == "cnn"]
fig = plots.plot_layer_profile(cnn, ["log10 grad_norm", "log10 update_ratio", "rotation"], hue="optimizer") if len(cnn) else None
out.save_figure("layer_profile_cnn", fig) if fig else print("no CNN runs in this parameter set")

# %% [markdown]
# **Where do the optimisers differ, per layer?** Adam minus SGD, paired by seed, paired t-test, Holm-adjusted over every layer × metric × architecture. Estimates of log10 quantities are log10 ratios. Bold rows: p_adj < alpha.

# %%
tests = stats.compare_conditions(main[main["metric"].isin(["log10 grad_norm", "log10 update_ratio", "rotation"])],
                                 "optimizer", baseline="sgd", by=("model", "metric", "layer"), n_boot=n_boot)
out.save_table("optimizer_tests", tests)
plots.format_test_table(tests, alpha=alpha)

# %% [markdown]
# **One model for the whole MLP profile.** A linear mixed model `log10 update ratio ~ optimizer * layer` with a random intercept per seed: the interaction terms say whether the optimiser effect differs between layers (fc1 is the reference layer).

# %%
mlp_ratio = main[(main["model"] == "mlp") & (main["metric"] == "log10 update_ratio") & (main["layer"] != "model")]
mixed = stats.mixed_model(mlp_ratio, "value ~ C(optimizer, Treatment('sgd')) * C(layer)", groups="seed")
out.save_table("update_ratio_mixed_model", mixed)
plots.format_test_table(mixed, alpha=alpha)

# %% [markdown]
# **Effect sizes with 95% CIs per layer.** Filled red markers are significant after adjustment; the dashed line is no difference.

# %%
fig = plots.plot_effect_sizes(tests, alpha=alpha, col="metric", row="contrast")
out.save_figure("optimizer_effects", fig)

# %% [markdown]
# **Spread of update ratios across layers** (standard deviation of log10 ‖Δθ_l‖/‖θ_l‖ over layers, averaged over training; one dot per run). LARS's premise predicts a larger spread under SGD than under Adam.

# %%
spread = mean_over_training(layer_spread(metrics[metrics["arm"].isin(main_arms)], "update_ratio"))
fig = plots.plot_run_values(spread, x="optimizer", col="model", ylabel="SD over layers of log10 update ratio")
out.save_figure("update_ratio_spread", fig)

# %%
spread_tests = stats.compare_conditions(spread, "optimizer", baseline="sgd", by=("model", "metric", "layer"), n_boot=n_boot)
out.save_table("update_ratio_spread_tests", spread_tests)
plots.format_test_table(spread_tests, alpha=alpha)

# %% [markdown]
# **Claim 3: final layer rotation vs test accuracy across the sweep** (one dot per run; rotation averaged over layers). The claim predicts a positive rank correlation.

# %%
sweep = run_table(final[final["arm"].isin(sweep_arms)], {"rotation": ("rotation", "mean"), "test_acc": ("test_acc", "model")})
fig = plots.plot_correlation(sweep, "rotation", "test_acc", hue="optimizer", style="lr")
out.save_figure("rotation_vs_accuracy", fig)

# %%
rho = stats.spearman_ci(sweep, "rotation", "test_acc", n_boot=n_boot, metric="final rotation vs test accuracy")
out.save_table("rotation_accuracy_correlation", rho)
plots.format_test_table(rho, alpha=alpha)

# %% [markdown]
# **The same correlation within each optimiser.** Learning rate moves both rotation and how far training gets in a fixed number of steps, so a pooled correlation can come from the optimiser or the learning rate alone; within-optimiser correlations are the stricter check. Read the pooled verdict with these rows beside it.

# %%
rho_within = pd.concat([stats.spearman_ci(runs, "rotation", "test_acc", n_boot=n_boot, metric=f"within {opt}")
                        for opt, runs in sweep.groupby("optimizer")], ignore_index=True)
out.save_table("rotation_accuracy_within_optimizer", rho_within)
plots.format_test_table(rho_within, alpha=alpha)

# %% [markdown]
# ## Verdict
#
# A claim reproduces when the whole 95% CI of its effect lies on the predicted side of zero, is contradicted when it lies on the other side, and is inconclusive otherwise.

# %%
verdict = verdict_table(
    [verdict_row("Larger final layer rotation goes with higher test accuracy across training settings",
                 "Carbonnelle & De Vleeschouwer 2019 (claim 3)", rho.iloc[0], "Spearman rho", "positive")]
    + [verdict_row(f"... and {row.metric} (learning rate and weight decay varied)",
                   "Carbonnelle & De Vleeschouwer 2019 (claim 3)", row, "Spearman rho", "positive")
       for _, row in rho_within.iterrows()]
    + [verdict_row(f"Adam's update ratios are more even across layers than SGD's ({row.contrast})",
                   "You et al. 2017 (LARS), premise", row, "Δ spread", "negative")
       for _, row in spread_tests.iterrows()])
out.save_table("verdict", verdict)
out.save_summary(title="Per-layer training dynamics: SGD vs Adam, and layer rotation vs generalisation",
                 question="Where, layer by layer, do SGD and Adam differ, and does larger layer rotation go with better test accuracy?",
                 verdict=verdict, runs=result.status_counts(), params={"seeds": seeds, "arms": arms, "train": train})
verdict.style.format(escape="html").hide(axis="index")
