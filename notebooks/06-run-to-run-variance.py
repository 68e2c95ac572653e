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
# # Run-to-run variance: butterfly twins, accuracy noise and trajectory PCA
#
# How much do runs of one training recipe differ, and why? Three claims of `docs/claims.md` (published as `claims.html` beside this report):
#
# - **Claim 10, the butterfly effect** (Altıntaş et al. 2025): a tiny perturbation of the weights early in training leads to a different minimum, measured by the L2 distance between the *twins* and the loss barrier on the straight line between them, max_α [L((1−α)θ_A + αθ_B) − ((1−α)L(θ_A) + αL(θ_B))]; both shrink when the perturbation comes later. Each *parent* run gets *twins* with the same seed (same initial weights and data order) whose weights receive Gaussian noise of relative size `perturb_scale` after each of `perturb_steps` updates; *independent* pairs (two parents of different seeds) are the reference. Barriers are measured without and with weight matching (Ainsworth et al. 2023, "Git Re-Basin"), which permutes the hidden units of B into A's basis first.
# - **Claim 11, variance between runs** (Jordan 2023, "Calibrated Chaos"): the between-seed variance of test accuracy against the binomial prediction Σ_i p_i(1 − p_i)/n² from each test example's correctness rate p_i across the parents.
# - **Claim 12, PCA of trajectories** (Antognini & Sohl-Dickstein 2018): the explained-variance ratios of each parent's weight trajectory against those of a random walk observed at the same steps, which tend to 6/(π²k²).
#
# Protocol fixed in advance (thresholds are parameters): twins perturbed at step 0 count as *as far apart as independent runs* when the CI of their distance ratio lies above `comparable`, and as *separated by a barrier* when the CI of their train-loss barrier lies above `barrier_min` nats; *later perturbations shrink distance and barrier* from paired differences against step 0; the variance claim holds when the CI of observed/predicted lies within [1/`variance_factor`, `variance_factor`]; the trajectory claims use the top `pca_top` components and a margin of ±`pca_margin` around the random-walk ratios.
#
# Render: `papermill notebooks/06-run-to-run-variance.ipynb out.ipynb -f notebooks/params/06-run-to-run-variance/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/06-run-to-run-variance/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1, 2, 3]  # parent seeds; the accuracy variance and the trajectory PCA use every parent
twin_seeds: list = [0, 1]  # parents that get twins, each paired with one of the other parents as independent reference
data: dict = {"name": "mnist1d", "n_train": 1000, "n_test": 500}  # DataConfig
model: dict = {"kind": "mlp", "depth": 2, "width": 32, "activation": "relu"}  # ModelConfig: weight matching needs an mlp
train: dict = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64, "steps": 200}  # TrainConfig
probes: dict = {"names": ["eval", "weights"], "every": 10}  # ProbeConfig; weights stores the trajectories
perturb_steps: list = [0, 20, 100]  # updates after which a twin is perturbed: at initialisation, early, late
perturb_scale: float = 0.0001  # size of the perturbation relative to the weight norm
perturb_seed: int = 1  # seed of the perturbation noise
alphas: int = 11  # points on the line between two solutions, both ends included
batchnorm: str = "recompute"  # running statistics along the line: recompute or interpolate, used only with batch norm
pca_components: int = 5  # principal components per trajectory
pca_from: list = [0, 100]  # analyse each trajectory from these steps on; 0 is the whole trajectory
pca_top: int = 3  # the first few components the claims are about
pca_margin: float = 0.05  # ratios follow the random walk when every CI of the difference lies within plus or minus this
comparable: float = 0.5  # twins are as far apart as independent runs above this distance ratio
barrier_min: float = 0.05  # a loss barrier counts above this many nats
variance_factor: float = 2.0  # observed and predicted variance agree within this factor
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/06-run-to-run-variance

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%

from analysis_lib import (StudyOutputs, compare_conditions, explained_variance_table,
                          format_test_table, format_verdict_table, grid_executor, mean_ci, run_grid,
                          verdict_table)
from analysis_lib.landscape.interpolation import default_alphas
from analysis_lib.layers import layer_sizes
from analysis_lib.plots import landscape as landscape_plots, seed_variance as variance_plots, stats as stat_plots
from analysis_lib.plots import training as training_plots, trajectories as trajectory_plots
from analysis_lib.studies import run_to_run as study, run_to_run_pairs as pairs_study
from analysis_lib.training.evaluation import per_example_correctness
from analysis_lib.trajectories.pca import projection_table

configs = study.twin_grid({"data": data, "model": model, "train": train, "probes": probes}, seeds, twin_seeds,
                          perturb_steps, perturb_scale, perturb_seed)
study.check_parameters(configs, seeds=seeds, twin_seeds=twin_seeds, perturb_scale=perturb_scale, comparable=comparable,
                       barrier_min=barrier_min, batchnorm=batchnorm, alphas=alphas, pca_from=pca_from,
                       pca_components=pca_components, pca_top=pca_top, pca_margin=pca_margin,
                       variance_factor=variance_factor, n_boot=n_boot)
line = default_alphas(alphas)
out = StudyOutputs("06-run-to-run-variance", output_dir)
print(f"{len(configs)} runs: {len(seeds)} parents and {len(twin_seeds)} x {len(perturb_steps)} twins")

# %% [markdown]
# Train (or reuse from the run store) every run; each stores its weight trajectory and final weights.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
result.runs.groupby(["arm", "perturb_step", "status"]).size().rename("runs").reset_index()

# %%
dataset = configs[0].dataset()
net = configs[0].build_model()  # the architecture: weights come from each run's checkpoints
trajectories, finals = result.checkpoints("trajectory"), result.checkpoints("final")
pairs = study.twin_pairs(result.runs)
parents = result.runs[(result.runs["arm"] == "parent") & (result.runs["status"] == "finished")]["run_id"].tolist()

# %% [markdown]
# ## Claim 10: twins
#
# **Distance between each twin and its parent over training**, relative to the parent's weight norm (log scale; mean over seeds with 95% band), for the whole model and layer by layer. A twin starts at `perturb_scale` when it is perturbed; look for how far it grows, and for the independent pairs on top as the ceiling.

# %%
with grid_executor(workers, scheduler) as executor:  # one cached task per pair: computed once, then read back
    distances = pairs_study.cached_pair_distances(result, pairs, executor=executor)
fig = training_plots.plot_metric_over_training(distances, "relative_distance", hue="pair", layers=["model", *layer_sizes(net)], logy=True)
out.save_figure("twin_distance", fig)

# %% [markdown]
# **Training loss on the straight line between the two runs of each pair** (mean over seeds with 95% band), without and with weight matching. The barrier is the bump above the straight line joining the ends.

# %%
with grid_executor(workers, scheduler) as executor:
    curves, barriers = pairs_study.cached_pair_interpolations(result, pairs, alphas=line, batchnorm=batchnorm,
                                                              executor=executor)
fig = landscape_plots.plot_interpolation(curves[curves["split"] == "train"], hue="pair", col="matched",
                                         ylabel=f"train loss ({result.loss_unit()})")
out.save_figure("interpolation_train_loss", fig)

# %% [markdown]
# **Test accuracy on the same lines.** A dip below the straight line is an accuracy barrier.

# %%
fig = landscape_plots.plot_interpolation(curves[curves["split"] == "test"], hue="pair", col="matched", metric="acc", ylabel="test accuracy")
out.save_figure("interpolation_test_acc", fig)

# %% [markdown]
# **Barriers per pair** (train loss; one dot per seed, mean with 95% CI), without and with weight matching. Look for barriers that fall as the perturbation comes later, and for how much matching removes between independent runs.

# %%
summary = study.pair_summary(distances, barriers)
fig = training_plots.plot_run_values(summary[summary["metric"] == "barrier"], x="matched", col="pair", ylabel=f"train-loss barrier ({result.loss_unit()})")
out.save_figure("barriers", fig)

# %%
barrier_table = mean_ci(barriers, ["pair", "matched", "split", "metric"], value="barrier", n_boot=n_boot)
out.save_table("barrier_summary", barrier_table)
barrier_table

# %% [markdown]
# **Does a later perturbation leave the twins closer?** Final relative distance and train-loss barrier (without matching), each perturbation step minus step 0, paired by seed.

# %%
twin_rows = summary[(summary["pair"] != "independent") & ~summary["matched"]].astype({"perturb_step": int})
timing_tests = compare_conditions(twin_rows, "perturb_step", baseline=0, by=("metric",), n_boot=n_boot)
out.save_table("perturbation_time_tests", timing_tests)
format_test_table(timing_tests)

# %% [markdown]
# **What does weight matching change?** Train-loss barrier with matching minus without, per kind of pair, paired by seed.

# %%
matching_rows = summary[summary["metric"] == "barrier"]
matching_tests = compare_conditions(matching_rows, "matched", baseline=False, by=("metric", "pair"), n_boot=n_boot)
out.save_table("matching_tests", matching_tests)
format_test_table(matching_tests)

# %% [markdown]
# ## Claim 11: variance of test accuracy between seeds
#
# **How often is each test example classified correctly across the parents?** Examples always right or always wrong add no variance; the binomial prediction comes from the ones in between.

# %%
correct = per_example_correctness(net, {rid: finals[rid] for rid in parents}, dataset.x_test, dataset.y_test)
fig = variance_plots.plot_correctness_rates(correct.mean(axis=0).rename("rate").to_frame(), n_runs=len(parents))
out.save_figure("correctness_rates", fig)

# %% [markdown]
# **Observed against predicted variance** of test accuracy across the parents, with the ratio's 95% CI from the chi-square distribution of a sample variance and, for comparison, from a bootstrap over seeds.

# %%
variance = study.variance_table(correct, n_boot=n_boot)
out.save_table("accuracy_variance", variance)
variance

# %% [markdown]
# ## Claim 12: PCA of the parents' trajectories
#
# **Explained-variance ratio per principal component** (log scale; mean over parents with 95% band), for the whole trajectory and from a later step on. Dashed: a random walk observed at the same steps; dotted: its limit 6/(π²k²). A trajectory that drifts in one direction puts more into PC1 than the walk does.

# %%
pca = explained_variance_table({rid: trajectories[rid] for rid in parents}, pca_components, from_steps=pca_from)
out.save_table("explained_variance", pca)
fig = trajectory_plots.plot_explained_variance(pca)
out.save_figure("explained_variance", fig)

# %% [markdown]
# **Trajectories in the plane of their own first two components** (colour: step). A random walk traces an arc, PC2 close to a parabola in PC1; so does almost any smooth path, which is why the shape alone says little and the ratios above are the test.

# %%
fig = trajectory_plots.plot_trajectory_projections(projection_table({rid: trajectories[rid] for rid in parents}, 2))
out.save_figure("trajectory_projections", fig)

# %% [markdown]
# ## How much do the verdicts hang on our bars?
#
# Every claim re-decided from the same runs with each bar set differently, one at a time: how close the twins' distance must come to independent runs' (`comparable`), the smallest barrier that counts (`barrier_min`), the agreement band of the variance ratio (`variance_factor`), and the margin around the random walk's ratios (`pca_margin`). The verdict table below says, for each "no" or "partly", whether it is robust or conditional.

# %%
rows, sensitivity = study.robust_verdict_rows(summary, timing_tests, matching_tests, variance, pca, comparable=comparable,
                                              barrier_min=barrier_min, perturb_scale=perturb_scale,
                                              variance_factor=variance_factor, pca_top=pca_top, pca_margin=pca_margin,
                                              n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance, as stated at the top. Distances and barriers from paired differences against step 0 (expected negative); matching from the paired difference on independent pairs (expected negative).

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "twin_seeds": twin_seeds, "perturb_steps": perturb_steps, "perturb_scale": perturb_scale, "train": train})
format_verdict_table(verdict)
