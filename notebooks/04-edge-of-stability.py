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
# # Progressive sharpening and the edge of stability
#
# Under full-batch gradient descent with step size η, does the top Hessian eigenvalue λ_max rise until it reaches 2/η and then hover there while the loss keeps falling (Cohen et al., ICLR 2021)? Does mini-batch SGD settle below that edge, and does learning-rate warm-up keep the early trajectory out of high-curvature regions?
#
# MNIST-1D (generated locally), a 3-hidden-layer ReLU MLP, cross-entropy loss. λ_max of the full training-loss Hessian is measured every few steps by Lanczos (warm-started from the previous eigenvector, relative residual below a tolerance; unconverged values are recorded as such). Protocol fixed in advance: a run *reaches* the edge at the first probe with λ_max ≥ `threshold`·2/η; the *hover ratio* η·λ_max/2 is averaged over the `window` steps after that; the claim holds when every learning rate's 95% CI of the hover ratio lies within [1 − `margin`, 1 + `margin`]. Claim 7 of `docs/claims.md` (published as `claims.html` beside this report).
#
# Render: `papermill notebooks/04-edge-of-stability.ipynb out.ipynb -f notebooks/params/04-edge-of-stability/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/04-edge-of-stability/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; a seed fixes the initial weights in every arm
data: dict = {"name": "mnist1d", "n_train": 500, "n_test": 200}  # DataConfig
model: dict = {"kind": "mlp", "depth": 2, "width": 32, "activation": "relu"}  # ModelConfig
train: dict = {"optimizer": "sgd", "batch_size": 0, "steps": 200}  # base TrainConfig: full-batch GD
probes: dict = {"names": ["eval", "sharpness"], "every": 20, "sharpness_tol": 0.001}  # ProbeConfig
arms: dict = {  # named arms: dotted config keys -> lists of values
    "gd": {"train.lr": [0.1, 0.2]},
    "sgd": {"train.lr": [0.1], "train.batch_size": [50], "probes.names": [["eval", "sharpness", "hessian_trace"]]},
    "warmup": {"train.lr": [0.2], "train.warmup_steps": [60]},
}
sgd_lr: float = 0.1  # learning rate shared by the gd and sgd arms for the batch-size comparison
warmup_lr: float = 0.2  # learning rate shared by the gd and warmup arms
threshold: float = 0.9  # a run reaches the edge when lambda_max first exceeds threshold times 2/lr
window: int = 100  # steps after reaching the edge over which the hover ratio is averaged
early: int = 60  # the first steps, where warm-up should keep lambda_max down
margin: float = 0.2  # hover ratio counts as about 1 inside [1 - margin, 1 + margin]
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/04-edge-of-stability

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
from analysis_lib import (StudyOutputs, compare_conditions, expand_grid, format_test_table, format_verdict_table,
                          grid_executor, run_grid, verdict_table)
from analysis_lib.plots import curvature as curvature_plots, stats as stat_plots, training as training_plots
from analysis_lib.studies import edge_of_stability as study

configs = expand_grid({"data": data, "model": model, "train": train, "probes": probes}, arms, seeds)
study.check_parameters(configs, arms, sgd_lr=sgd_lr, warmup_lr=warmup_lr, threshold=threshold, margin=margin,
                       window=window, early=early, n_boot=n_boot)
out = StudyOutputs("04-edge-of-stability", output_dir)
print(f"{len(configs)} runs: {len(arms)} arms x their conditions x {len(seeds)} seeds")

# %% [markdown]
# Train (or reuse from the run store) every run. Runs whose loss became non-finite are listed as `diverged` and kept.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics, learning_rates = result.metrics, result.parameter("train.lr")
result.runs.groupby(["arm", "lr", "batch_size", "status"]).size().rename("runs").reset_index()

# %%
summary = study.stability_table(metrics, learning_rates, threshold=threshold, window=window, early=early)
gd_curves = metrics[metrics["arm"] == "gd"]

# %% [markdown]
# **λ_max over full-batch gradient descent, one panel per learning rate** (one line per seed; dashed: 2/η). Look for the rise (progressive sharpening) and whether it stops at the dashed line.

# %%
fig = curvature_plots.plot_sharpness(gd_curves, col="lr", learning_rates=learning_rates)
out.save_figure("sharpness_gd", fig)

# %% [markdown]
# **Training loss under full-batch gradient descent.** At the edge of stability the loss keeps falling over long horizons while rising on some steps.

# %%
fig = curvature_plots.plot_sharpness(gd_curves, col="lr", metric="batch_loss", logy=True, loss_unit=result.loss_unit())
out.save_figure("loss_gd", fig)

# %% [markdown]
# **Edge-of-stability summary per learning rate** (mean over seeds, 95% bootstrap CI): fraction of runs reaching the edge, first step at the edge, hover ratio η·λ_max/2 after it, fraction of runs whose loss still fell over the window, loss increases in the window.

# %%
gd, edge = study.edge_summary(summary, n_boot=n_boot)
out.save_table("edge_summary", edge)
edge

# %% [markdown]
# **Hover ratio per run** (η·λ_max/2 averaged over the window after reaching the edge; 1 means λ_max = 2/η exactly; the band marks the margin fixed in advance).

# %%
fig = training_plots.plot_run_values(gd[gd["metric"] == "hover_ratio"], x="lr", ylabel="η·λ_max/2 after reaching the edge",
                            band=(1 - margin, 1 + margin))
out.save_figure("hover_ratio", fig)

# %% [markdown]
# **Mini-batch SGD at the same learning rate** (λ_max and the Hessian trace, full training set; dashed: 2/η). The stability analysis of SGD bounds the trace rather than λ_max: look for λ_max settling below the edge.

# %%
sgd_curves = metrics[(metrics["lr"] == sgd_lr) & metrics["arm"].isin(["gd", "sgd"])]
fig = curvature_plots.plot_sharpness(sgd_curves, col="batch_size", learning_rates=learning_rates)
out.save_figure("sharpness_sgd", fig)

# %% [markdown]
# **Hessian trace under mini-batch SGD** (Hutch++, full training set), one panel per batch size: the quantity the SGD stability bound constrains.

# %%
trace_curves = metrics[metrics["arm"] == "sgd"]
fig = curvature_plots.plot_sharpness(trace_curves, col="batch_size", metric="hessian_trace")
out.save_figure("trace_sgd", fig)

# %% [markdown]
# **Does SGD settle lower?** Mean η·λ_max/2 over the last `window` steps, each batch size minus full batch (`batch_size = 0`), paired by seed (same initial weights).

# %%
late = summary[(summary["lr"] == sgd_lr) & summary["arm"].isin(["gd", "sgd"]) & (summary["metric"] == "late_ratio")]
sgd_tests = compare_conditions(late, "batch_size", baseline=0, n_boot=n_boot)
out.save_table("sgd_tests", sgd_tests)
format_test_table(sgd_tests)

# %% [markdown]
# **Warm-up** (linear, `early` steps) vs none at the same learning rate: λ_max over the first steps, then the peak of η·λ_max/2 in that phase, warm-up minus none, paired by seed.

# %%
warm_curves = metrics[(metrics["lr"] == warmup_lr) & metrics["arm"].isin(["gd", "warmup"]) & (metrics["step"] <= 2 * early)]
fig = curvature_plots.plot_sharpness(warm_curves, col="warmup_steps", learning_rates=learning_rates)
out.save_figure("sharpness_warmup", fig)

# %%
peaks = summary[(summary["lr"] == warmup_lr) & summary["arm"].isin(["gd", "warmup"]) & (summary["metric"] == "early_peak")]
warmup_tests = compare_conditions(peaks, "warmup_steps", baseline=0, n_boot=n_boot)
out.save_table("warmup_tests", warmup_tests)
format_test_table(warmup_tests)

# %% [markdown]
# ## How much do the verdicts hang on our choices?
#
# The full-batch claims re-read from the same runs under other choices, one at a time: when a run counts as at the edge (`threshold`·2/η), the window the hover ratio averages over (`window`), and how close to 1 it must be (`margin`). The verdict table below says, for each "no" or "partly", whether it is robust or conditional.

# %%
rows, sensitivity = study.robust_verdict_rows(metrics, learning_rates, sgd_tests, warmup_tests, threshold=threshold,
                                              margin=margin, window=window, early=early, n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: sharpening reproduces when every full-batch run reaches `threshold`·2/η; hovering when each learning rate's CI of the hover ratio lies inside [1 − margin, 1 + margin] (outside: no); the loss claim when the loss fell over the window in every run that reached the edge; SGD and warm-up from the sign of the paired difference's CI.

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "arms": arms, "train": train})
format_verdict_table(verdict)
