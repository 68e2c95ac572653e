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
# # Filter-normalised loss landscapes: batch size, residual connections and scale invariance
#
# Li et al. ("Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018) plot the loss along random Gaussian directions rescaled filter by filter, d_f ← d_f ‖θ_f‖/‖d_f‖ (a filter is a row of a Linear weight; biases get 0). They report that small-batch minima look flatter than large-batch ones *only after* filter normalisation (without it, the comparison follows the scale of the weights, which weight decay changes), and that residual connections make surfaces smoother. Claim 9 of `docs/claims.md` (published as `claims.html` beside this report).
#
# MNIST-1D (generated locally), ReLU MLPs trained with SGD; the same initial weights for every condition of a seed (comparisons are paired by seed). Around each final θ we evaluate the training loss on 1-D slices L(θ + α d) along `direction_seeds` random directions, filter-normalised and unnormalised (raw N(0, I), which needs a much smaller radius), and summarise each slice: **curvature** (2× the quadratic coefficient of a least-squares fit over the central `fit_fraction` of the slice), **rise** (mean loss increase at ±radius) and **roughness** (excess total variation: 0 for any bowl, > 0 for every extra bump; exact definitions in `analysis_lib/landscape/slices.py`). Protocol fixed in advance: a direction-averaged summary per run, large − small batch (and residual − plain) paired by seed, Holm-adjusted, verdicts read off the 95% CI and p < 0.05. The spread across directions (Monte-Carlo error of a random-direction estimate) is reported beside.
#
# Render: `papermill notebooks/05-loss-landscape.ipynb out.ipynb -f notebooks/params/05-loss-landscape/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/05-loss-landscape/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; a seed fixes the initial weights in every arm
data: dict = {"name": "mnist1d", "n_train": 500, "n_test": 200}  # DataConfig
model: dict = {"kind": "mlp", "depth": 2, "width": 32, "activation": "relu"}  # ModelConfig: ReLU MLP without norm layers
train: dict = {"optimizer": "sgd", "lr": 0.1, "steps": 150}  # base TrainConfig
probes: dict = {"names": ["eval", "weights"], "every": 150}  # ProbeConfig: weights stores the final checkpoint
arms: dict = {  # named arms: dotted config keys -> lists of values
    "batch": {"train.batch_size": [16, 250], "train.weight_decay": [0.0, 0.005]},
    "residual": {"model.depth": [4], "train.batch_size": [32], "model.residual": [False, True]},
}
small_batch: int = 16  # the baseline of the batch-size comparison
direction_seeds: list = [0, 1, 2]  # seeds of the random directions, the same for every run
radius: dict = {"filter": 1.0, "none": 0.05}  # largest alpha per normalisation; a raw direction has norm near sqrt P
slice_points: int = 11  # grid points per 1-D slice; odd, so that alpha 0 is on the grid
fit_fraction: float = 0.25  # the quadratic fit uses the central fraction of each slice
map_points: int = 9  # grid points per axis of the 2-D maps; odd
rescale_factor: float = 4.0  # fc1 times this and fc2 divided by it: the same function, other weights
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/05-loss-landscape

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%

from analysis_lib import (StudyOutputs, cached_surfaces, expand_grid, format_test_table,
                          format_verdict_table, grid_executor, last_step, run_grid, slice_summaries,
                          verdict_table)
from analysis_lib.landscape.slices import summary_table
from analysis_lib.plots import landscape as landscape_plots, stats as stat_plots
from analysis_lib.studies import loss_landscape as study

configs = expand_grid({"data": data, "model": model, "train": train, "probes": probes}, arms, seeds)
study.check_parameters(configs, arms=arms, probes=probes, fit_fraction=fit_fraction, radius=radius,
                       slice_points=slice_points, map_points=map_points, direction_seeds=direction_seeds,
                       rescale_factor=rescale_factor, small_batch=small_batch, n_boot=n_boot)
out = StudyOutputs("05-loss-landscape", output_dir)
print(f"{len(configs)} runs: {len(arms)} arms x their conditions x {len(seeds)} seeds; "
      f"{len(direction_seeds)} directions x {list(radius)} normalisations per run")

# %% [markdown]
# Train (or reuse from the run store) every run; each stores its final weights. Final training loss and test accuracy, mean over seeds:

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
unit = result.loss_unit()  # nats: axis labels of the losses
final = last_step(result.metrics)
final[final["metric"].isin(["train_loss", "test_acc"])].pivot_table(
    index=["arm", "batch_size", "weight_decay", "residual"], columns="metric", values="value", aggfunc="mean")

# %% [markdown]
# Loss along every direction around every run's final weights (training set), then the summaries of each slice and their mean over directions per run (with the bootstrap CI across directions: the Monte-Carlo error of the random-direction estimate).

# %%
with grid_executor(workers, scheduler) as executor:  # computed once per run, then read from the run store
    surfaces = cached_surfaces(result, seeds=direction_seeds, normalizations=list(radius), radius=radius,
                               steps=slice_points, executor=executor)
summaries = slice_summaries(surfaces, fit_fraction=fit_fraction)
summaries["layer"] = summaries["normalization"]  # test tables carry the normalisation in their "layer" column
per_run = summary_table(summaries, n_boot=n_boot).rename(columns={"mean": "value"})
out.save_table("surfaces", surfaces)
out.save_table("direction_summary", per_run)
per_run.groupby(["arm", "batch_size", "weight_decay", "residual", "normalization", "metric"])[["value", "ci_low", "ci_high"]].mean().unstack("metric").round(3)

# %% [markdown]
# **1-D slices, small vs large batch** (mean over directions and seeds, 95% band; columns: normalisation, rows: weight decay). Look for the large-batch curve rising faster, and whether the ordering is the same with and without filter normalisation.

# %%
fig = landscape_plots.plot_slices(surfaces[surfaces["arm"] == "batch"], hue="batch_size", col="normalization", row="weight_decay", loss_unit=unit)
out.save_figure("slices_batch", fig)

# %% [markdown]
# **2-D filter-normalised maps of the training loss** around the first seed's minimum for each batch size (no weight decay; one pair of directions, shared contour levels; the star is θ). Look for the width of the basin around the star.

# %%
maps = cached_surfaces(result, result.run_ids(arm="batch", seed=seeds[0], weight_decay=0.0), seeds=direction_seeds[:1], radius=radius.get("filter", 1.0), dims=2, steps=map_points)
fig = landscape_plots.plot_surface_maps(maps, col="batch_size", kind="filled", loss_unit=unit)
out.save_figure("maps_batch", fig)

# %% [markdown]
# **Curvature at the minimum per run** (mean over directions; dots are runs, diamonds the mean over seeds with 95% CI), by batch size and weight decay, with and without filter normalisation.

# %%
fig = landscape_plots.plot_summary_values(per_run[per_run["arm"] == "batch"], x="batch_size", hue="weight_decay")
out.save_figure("curvature_batch", fig)

# %% [markdown]
# **Large − small batch, paired by seed** (direction-averaged curvature and rise; `layer` holds the normalisation; Holm-adjusted over the table).

# %%
batch_tests, residual_tests = study.landscape_tests(summaries, small_batch=small_batch, n_boot=n_boot)
out.save_table("batch_tests", batch_tests)
format_test_table(batch_tests)

# %% [markdown]
# **Why normalise: an equivalent network.** The first seed's small-batch run (no weight decay), and a copy with fc1 multiplied by `rescale_factor` and fc2 divided by it (ReLU is positively homogeneous, so it computes the same function). Look for the two curves coinciding under `filter` and separating under `none`.

# %%
rescaled = study.cached_rescaling_surfaces(result, result.run_ids(arm="batch", seed=seeds[0], batch_size=small_batch, weight_decay=0.0),
                                           factor=rescale_factor, radius=radius, seeds=direction_seeds, steps=slice_points)
fig = landscape_plots.plot_slices(rescaled, hue="model", col="normalization", loss_unit=unit)
out.save_figure("rescaling", fig)

# %%
rescaled_summaries = slice_summaries(rescaled, fit_fraction=fit_fraction)
rescaling = study.rescaling_table(rescaled_summaries)
out.save_table("rescaling", rescaling)
rescaling

# %% [markdown]
# **1-D slices, with vs without residual connections** (deeper MLP, same batch size; mean over directions and seeds, 95% band). Look for bumps (roughness) and the steepness of the walls.

# %%
fig = landscape_plots.plot_slices(surfaces[surfaces["arm"] == "residual"], hue="residual", col="normalization", loss_unit=unit)
out.save_figure("slices_residual", fig)

# %% [markdown]
# **2-D filter-normalised maps, plain vs residual** (first seed; shared, log-spaced contour levels; the star is θ). Look for irregular, non-convex contours.

# %%
maps = cached_surfaces(result, result.run_ids(arm="residual", seed=seeds[0]), seeds=direction_seeds[:1], radius=radius.get("filter", 1.0), dims=2, steps=map_points)
fig = landscape_plots.plot_surface_maps(maps, col="residual", kind="contour", log_levels=True, loss_unit=unit)
out.save_figure("maps_residual", fig)

# %% [markdown]
# **Residual − plain, paired by seed** (direction-averaged curvature, rise and roughness; Holm-adjusted).

# %%
out.save_table("residual_tests", residual_tests)
format_test_table(residual_tests)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: a comparison reproduces when its 95% CI lies on the predicted side of zero and its Holm-adjusted p < 0.05 (the opposite side: no; otherwise inconclusive). "Only after filter normalisation" reproduces when, for some weight decay, the filter-normalised curvature comparison reproduces and the unnormalised one does not; it fails when every unnormalised comparison agrees. Scale invariance reproduces when the equivalent network's filter-normalised curvature changes by less than 0.1% (float32 round-off) and the unnormalised one by more than 10%.
#
# Each "no" or "partly" also says whether it holds when the curvature's quadratic is fitted over a narrower or a wider window (`fit_fraction` 0.1 and 0.5; the grid below the table).
#
# Read with the training table above: conditions that end at different training losses (a residual network trains further in the same steps) compare minima at different heights, so a sharpness difference mixes geometry with how far training went.

# %%
rows, sensitivity = study.robust_verdict_rows(surfaces, rescaled, fit_fraction=fit_fraction, small_batch=small_batch,
                                              n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "arms": arms, "train": train, "direction_seeds": direction_seeds, "radius": radius})
format_verdict_table(verdict)
