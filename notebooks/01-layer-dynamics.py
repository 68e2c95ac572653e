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
# # Per-layer training dynamics: SGD vs Adam, and layer rotation vs generalisation
#
# Where, layer by layer, do SGD and Adam train differently: in gradient norms, in update-to-weight ratios, in how far each layer's weights rotate? And does a larger final layer rotation go with better test accuracy across training settings, as Carbonnelle & De Vleeschouwer (2019) report?
#
# MNIST-1D (generated locally) with a 3-hidden-layer MLP and a 3-layer 1-D CNN. Seeds are the replicates; within a seed every optimiser starts from the same initial weights and sees the same data order, so optimisers are compared **paired by seed**. Claims tested (see `docs/claims.md`, published as `claims.html` beside this report): layer rotation (claim 3), and the observation behind LARS (You et al., 2017) that SGD's update-to-weight ratio differs across layers by large factors while Adam's per-parameter normalisation evens it out.
#
# Render: `papermill notebooks/01-layer-dynamics.ipynb out.ipynb -f notebooks/params/01-layer-dynamics/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/01-layer-dynamics/smoke.yaml (quick to explore);
# the published report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; each seed fixes init and data order in every arm
data: dict = {"name": "mnist1d", "n_train": 1000, "n_test": 500}  # analysis_lib.training.config.DataConfig
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

from analysis_lib import (StudyOutputs, compare_conditions, expand_grid, final_values, format_test_table,
                          format_verdict_table, grid_executor, layer_spread, log10_values, mean_over_training,
                          mixed_model, run_grid, verdict_table)
from analysis_lib.plots import stats as stat_plots, training as training_plots
from analysis_lib.studies import layer_dynamics as study

study.check_parameters(arms, main_arms=main_arms, sweep_arms=sweep_arms, alpha=alpha, n_boot=n_boot)
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
fig = training_plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "grad_norm", hue="optimizer", logy=True)
out.save_figure("grad_norm_over_training", fig)

# %% [markdown]
# **Update-to-weight ratio ‖Δθ_l‖/‖θ_l‖ per layer over training (MLP).** Under SGD the layers' lines should sit far apart; under Adam closer together.

# %%
fig = training_plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "update_ratio", hue="optimizer", logy=True)
out.save_figure("update_ratio_over_training", fig)

# %% [markdown]
# **Layer rotation 1 − cos(θ_l(t), θ_l(0)) over training (MLP).** Which layers move away from their initial direction, and how fast.

# %%
fig = training_plots.plot_metric_over_training(main_curves[main_curves["model"] == "mlp"], "rotation", hue="optimizer")
out.save_figure("rotation_over_training", fig)

# %% [markdown]
# **Layer profiles, MLP.** Each summary across layers in forward order; look for where the optimisers' lines cross or diverge.

# %%
fig = training_plots.plot_layer_profile(main[main["model"] == "mlp"], ["log10 grad_norm", "log10 update_ratio", "rotation"], hue="optimizer")
out.save_figure("layer_profile_mlp", fig)

# %% [markdown]
# **Layer profiles, 1-D CNN** (empty when the parameter set has no CNN runs).

# %%
cnn = main[main["model"] == "cnn"]
fig = training_plots.plot_layer_profile(cnn, ["log10 grad_norm", "log10 update_ratio", "rotation"], hue="optimizer") if len(cnn) else None
out.save_figure("layer_profile_cnn", fig) if fig else print("no CNN runs in this parameter set")

# %% [markdown]
# **Where do the optimisers differ, per layer?** Adam minus SGD, paired by seed, paired t-test, Holm-adjusted over every layer × metric × architecture. Estimates of log10 quantities are log10 ratios. Bold rows: p_adj < alpha.

# %%
tests = compare_conditions(main[main["metric"].isin(study.LAYER_METRICS)],
                                 "optimizer", baseline="sgd", by=("model", "metric", "layer"), n_boot=n_boot)
out.save_table("optimizer_tests", tests)
format_test_table(tests, alpha=alpha)

# %% [markdown]
# **One model for the whole MLP profile.** A linear mixed model `log10 update ratio ~ optimizer * layer` with a random intercept per seed: the interaction terms say whether the optimiser effect differs between layers (fc1 is the reference layer).

# %%
mlp_ratio = main[(main["model"] == "mlp") & (main["metric"] == "log10 update_ratio") & (main["layer"] != "model")]
mixed = mixed_model(mlp_ratio, "value ~ C(optimizer, Treatment('sgd')) * C(layer)", groups="seed")
out.save_table("update_ratio_mixed_model", mixed)
format_test_table(mixed, alpha=alpha)

# %% [markdown]
# **Effect sizes with 95% CIs per layer.** Filled red markers are significant after adjustment; the dashed line is no difference.

# %%
fig = stat_plots.plot_effect_sizes(tests, alpha=alpha, col="metric", row="contrast")
out.save_figure("optimizer_effects", fig)

# %% [markdown]
# **Spread of update ratios across layers** (standard deviation of log10 ‖Δθ_l‖/‖θ_l‖ over layers, averaged over training; one dot per run). LARS's premise predicts a larger spread under SGD than under Adam.

# %%
spread = mean_over_training(layer_spread(metrics[metrics["arm"].isin(main_arms)], "update_ratio"))
fig = training_plots.plot_run_values(spread, x="optimizer", col="model", ylabel="SD over layers of log10 update ratio")
out.save_figure("update_ratio_spread", fig)

# %%
spread_tests = compare_conditions(spread, "optimizer", baseline="sgd", by=("model", "metric", "layer"), n_boot=n_boot)
out.save_table("update_ratio_spread_tests", spread_tests)
format_test_table(spread_tests, alpha=alpha)

# %% [markdown]
# **Claim 3: final layer rotation vs test accuracy across the sweep** (one dot per run; rotation averaged over layers). The claim predicts a positive rank correlation.

# %%
sweep = study.rotation_table(final, sweep_arms)
fig = training_plots.plot_correlation(sweep, "rotation", "test_acc", hue="optimizer", style="lr")
out.save_figure("rotation_vs_accuracy", fig)

# %%
rho, rho_within = study.rotation_correlations(sweep, n_boot=n_boot)
out.save_table("rotation_accuracy_correlation", rho)
format_test_table(rho, alpha=alpha)

# %% [markdown]
# **The same correlation within each optimiser.** Learning rate moves both rotation and how far training gets in a fixed number of steps, so a pooled correlation can come from the optimiser or the learning rate alone; within-optimiser correlations are the stricter check. Read the pooled verdict with these rows beside it.

# %%
out.save_table("rotation_accuracy_within_optimizer", rho_within)
format_test_table(rho_within, alpha=alpha)

# %% [markdown]
# ## Verdict
#
# A claim reproduces when the whole 95% CI of its effect lies on the predicted side of zero (and p < 0.05), is contradicted when it lies on the other side, and is inconclusive otherwise. Each "no" or "partly" also says whether it holds when a run's rotation is read from its first or last layer instead of the mean over layers, and generalisation from the test loss instead of the accuracy (the grid below).

# %%
rows, sensitivity = study.robust_verdict_rows(final, sweep_arms, spread_tests, n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "arms": arms, "train": train})
format_verdict_table(verdict)
