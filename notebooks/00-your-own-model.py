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
# # Your own model: progressive sharpening under the squared error
#
# Does a regression network trained by full-batch gradient descent on the squared error sharpen until the top Hessian eigenvalue λ_max reaches 2/η, and then hover there, as classifiers under cross-entropy do (Cohen et al., ICLR 2021; Agarwala, Pedregosa & Pennington, ICML 2023, for second-order regression models)?
#
# This study is also the worked example of bringing your own model, data and loss. The code lives in `notebooks/your_model.py`, a module with no `analysis_lib` inside: a teacher–student regression task and its MLP, and a tiny token-level language model with dict inputs and ignored targets. The notebook registers them by name and version, and from then on they go through the run grid, the run store, every probe, the curvature and landscape functions and the statistics like any built-in model. Protocol, fixed in advance and shared with study 04: a run *reaches* the edge at the first probe with λ_max ≥ `threshold`·2/η; the *hover ratio* η·λ_max/2 is averaged over the `window` steps after that and counts as 1 inside [1 − `margin`, 1 + `margin`]; λ_max *grows* when the CI over seeds of log₂(max λ_max / λ_max at step 0) lies above 0. Claim 7 of `docs/claims.md` (published as `claims.html` beside this report).
#
# Render: `papermill notebooks/00-your-own-model.ipynb out.ipynb -f notebooks/params/00-your-own-model/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/00-your-own-model/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds: each fixes the initial weights and the data order
user_module: str = "your_model.py"  # your factories; relative to this folder or notebooks/
regression: dict = {"model": {"name": "student", "width": 32}, "data": {"name": "teacher_student", "n_train": 128}}
learning_rates: list = [0.1, 0.2]  # full-batch GD step sizes; 2/lr is the edge of stability
train: dict = {"optimizer": "sgd", "batch_size": 0, "steps": 300}  # TrainConfig of the regression runs
probes: dict = {"names": ["eval", "grad_norm", "update_ratio", "sharpness", "hessian_trace", "weights"], "every": 25}
language_model: dict = {  # a CustomRunConfig spec: your model, dataset and a built-in loss by name
    "model": {"name": "tiny_lm"}, "data": {"name": "previous_token", "n_train": 128},
    "loss": {"name": "token_cross_entropy"},
    "train": {"optimizer": "adam", "batch_size": 32, "steps": 60},
    "probes": {"names": ["eval", "grad_norm", "sharpness", "weights"], "every": 20, "curvature_samples": 64},
}
lm_learning_rates: list = [0.01]  # Adam step sizes of the language model
threshold: float = 0.9  # a run reaches the edge when lambda_max first exceeds threshold times 2/lr
window: int = 100  # steps after reaching the edge over which the hover ratio is averaged
margin: float = 0.2  # hover ratio counts as about 1 inside [1 - margin, 1 + margin]
top_k: int = 3  # Hessian eigenvalues computed at the end of training
direction_seeds: list = [0, 1]  # random filter-normalised directions of the loss slices
slice_radius: float = 0.5  # largest |alpha| of a slice
slice_points: int = 11  # points per slice
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/00-your-own-model

# %% [markdown]
# Your code, registered: a name and a version string for each factory. The version is part of every run id, so cached runs are reused only while it stays the same; change it whenever the code behind a name changes. The loss is named in the config (`mse` and `token_cross_entropy` are built in; `register_loss` adds yours). Every parameter is validated here, against the factories' signatures, before any training.

# %%
from analysis_lib import (CustomRunConfig, StudyOutputs, cached_curvature, cached_surfaces, config_from_dict,
                          expand_grid, format_verdict_table, grid_executor, load_module, register_dataset,
                          register_model, registered_table, run_grid, verdict_table)
from analysis_lib.plots import curvature as curvature_plots, landscape as landscape_plots, stats as stat_plots
from analysis_lib.plots import training as training_plots
from analysis_lib.studies import your_own_model as study

yours = load_module(user_module)
register_model("student", yours.student, version="1")
register_dataset("teacher_student", yours.teacher_student, version="1")
register_model("tiny_lm", yours.tiny_lm, version="1")
register_dataset("previous_token", yours.previous_token, version="1")

study.check_parameters(seeds=seeds, learning_rates=learning_rates, threshold=threshold, margin=margin, window=window,
                       top_k=top_k, n_boot=n_boot)
base = config_from_dict({**regression, "loss": {"name": "mse"}, "train": train, "probes": probes}, CustomRunConfig)
configs = expand_grid(base, study.regression_conditions(learning_rates), seeds)
lm_configs = expand_grid(config_from_dict(language_model, CustomRunConfig), {"train.lr": lm_learning_rates}, seeds)
out = StudyOutputs("00-your-own-model", output_dir)
print(f"{len(configs)} regression runs ({len(learning_rates)} step sizes x {len(seeds)} seeds), "
      f"{len(lm_configs)} language-model runs")
registered_table({"model": ["student", "tiny_lm"], "data": ["teacher_student", "previous_token"],
                  "loss": ["mse", "token_cross_entropy"]})

# %% [markdown]
# Train (or reuse from the run store) every regression run: full-batch gradient descent on the squared error. Runs whose loss became non-finite are listed as `diverged` and kept.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics, etas = result.metrics, result.parameter("train.lr")
result.runs.groupby(["lr", "status"]).size().rename("runs").reset_index()

# %% [markdown]
# **λ_max over training, one panel per step size** (one line per seed; dashed: 2/η). Progressive sharpening is the rise; the edge of stability is where it stops.

# %%
fig = curvature_plots.plot_sharpness(metrics, col="lr", learning_rates=etas)
out.save_figure("sharpness", fig)

# %% [markdown]
# **Training loss** (mean squared error on the whole training split), log scale.

# %%
fig = curvature_plots.plot_sharpness(metrics, col="lr", metric="train_loss", logy=True, loss_unit=result.loss_unit())
out.save_figure("train_loss", fig)

# %% [markdown]
# **Per-layer gradient norms** of every probed update (mean over seeds, 95% CI), from the `grad_norm` probe: per-layer probes work on your model as on ours.

# %%
fig = training_plots.plot_metric_over_training(metrics, "grad_norm", hue="lr", logy=True)
out.save_figure("grad_norm", fig)

# %% [markdown]
# **Edge-of-stability summary per step size** (mean over seeds, 95% bootstrap CI): the growth log₂(max λ_max / λ_max(0)), the fraction of runs reaching the edge, the first step there, the hover ratio after it, and whether the loss still fell over the window.

# %%
summary = study.sharpening_table(metrics, etas, threshold=threshold, window=window)
edge = study.edge_summary(summary, n_boot=n_boot)
out.save_table("edge_summary", edge)
edge

# %% [markdown]
# **Hover ratio per run** (η·λ_max/2 after reaching the edge; 1 means λ_max = 2/η; the band is the margin fixed in advance).

# %%
fig = training_plots.plot_run_values(summary[summary["metric"] == "hover_ratio"], x="lr",
                                     ylabel="η·λ_max/2 after reaching the edge", band=(1 - margin, 1 + margin))
out.save_figure("hover_ratio", fig)

# %% [markdown]
# **Curvature at the end of training** (seed 0, full training split): the top-k Hessian eigenvalues by Lanczos, with their residuals, and the trace of every layer's block (exact for small blocks, Hutch++ with a standard error otherwise; the method is named in each row).

# %%
eigenvalues, traces = cached_curvature(result, result.run_ids(seed=seeds[0]), k=top_k)
out.save_table("final_eigenvalues", eigenvalues)
out.save_table("final_layer_traces", traces)
eigenvalues.pivot_table(index="lr", columns="rank", values="eigenvalue")

# %%
traces.pivot_table(index="layer", columns="lr", values="estimate", sort=False)

# %% [markdown]
# **Loss slices around the final weights** (seed 0) along random filter-normalised directions: mean over directions with a 95% band, training and test split. A sharper minimum rises faster.

# %%
slices = cached_surfaces(result, result.run_ids(seed=seeds[0]), seeds=direction_seeds, radius=slice_radius,
                         steps=slice_points, splits=("train", "test"))
out.save_table("slices", slices)
fig = landscape_plots.plot_slices(slices, hue="lr", col="split", logy=True, loss_unit=result.loss_unit())
out.save_figure("slices", fig)

# %% [markdown]
# ## A token-level language model
#
# The same kit on the tiny attention model of `your_model.py`: inputs are a dict (`tokens`, `mask`, passed as `model(**inputs)`), targets of padding are −100 and ignored by the token-level cross-entropy, whose accuracy is reported on the targets that count. Curvature probes and functions take the same loss and data.

# %%
with grid_executor(workers, scheduler) as executor:
    lm_result = run_grid(lm_configs, executor=executor)
lm_metrics = lm_result.metrics
lm_result.runs.groupby(["lr", "status"]).size().rename("runs").reset_index()

# %% [markdown]
# **Token accuracy on the test split and λ_max of the token-level loss over training** (one line per seed).

# %%
fig = curvature_plots.plot_sharpness(lm_metrics, col="lr", metric="test_acc")
out.save_figure("lm_accuracy", fig)

# %%
fig = training_plots.plot_metric_over_training(lm_metrics, "grad_norm", hue="lr", logy=True)
out.save_figure("lm_grad_norm", fig)

# %% [markdown]
# **Curvature of the token-level loss at the end of training** (seed 0): top-k eigenvalues and per-layer traces.

# %%
lm_eigenvalues, lm_traces = cached_curvature(lm_result, lm_result.run_ids(seed=seeds[0]), k=top_k)
out.save_table("lm_final_eigenvalues", lm_eigenvalues)
out.save_table("lm_final_layer_traces", lm_traces)
lm_traces[["layer", "estimate", "se", "n_matvecs", "method"]]

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: λ_max grows at a step size when the CI over seeds of log₂(max λ_max / λ_max(0)) lies above 0; it reaches the edge when every run reaches `threshold`·2/η (some: partly); it hovers when the CI of the hover ratio lies inside [1 − margin, 1 + margin] (outside: no; no run at the edge: not tested). Each "no" or "partly" also says whether it holds under other thresholds (0.8, 0.95), windows (50, 200 steps) and margins (0.1, 0.3), re-read from the same runs (the grid below).

# %%
rows, sensitivity = study.robust_verdict_rows(metrics, etas, threshold=threshold, margin=margin, window=window,
                                              n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "learning_rates": learning_rates, "train": train, "regression": regression})
format_verdict_table(verdict)
