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
# # Hessian spectra: bulk, outliers and the gradient's tiny subspace
#
# Is the Hessian spectrum of a trained network a bulk near zero plus a few outliers, as many as there are classes (Sagun et al. 2018), and does the bulk widen with more parameters? After a short initial phase, does the gradient lie mostly in the span of the top-C Hessian eigenvectors (Gur-Ari et al. 2018)?
#
# Gaussian-mixture tasks with C = 2, 5, 10 classes and MNIST-1D (C = 10), small ReLU MLPs trained with SGD. Spectra are exact (dense Hessian, every eigenvalue) where the model has at most `exact_max_dim` parameters and stochastic Lanczos quadrature beyond. Protocol fixed in advance: outliers are counted by the largest gap in log scale among the top 2C + 2 eigenvalues of the final exact spectrum; the bulk width is the 0.9-quantile of |λ| (outliers weigh ≤ C/dim); the gradient overlap ‖V_Cᵀ g‖²/‖g‖² uses the full-batch gradient and the full-training-set Hessian at the same weights, averaged over steps ≥ `initial_phase`, and counts as "close to 1" above `overlap_bar`. Claims 5 and 6 of `PHENOMENA.md`.
#
# Render: `papermill notebooks/03-hessian-spectrum.ipynb out.ipynb -f notebooks/params/03-hessian-spectrum/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/03-hessian-spectrum/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds
data: dict = {"name": "gaussian_mixture", "n_train": 300, "n_test": 200, "n_features": 10}  # DataConfig
model: dict = {"kind": "mlp", "depth": 2, "width": 12}  # base ModelConfig
train: dict = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "steps": 100}  # TrainConfig
probes: dict = {"names": ["eval", "grad_overlap", "spectrum"], "every": 25, "exact_max_dim": 3000}  # ProbeConfig
arms: dict = {  # named arms: dotted config keys -> lists of values
    "classes": {"data.n_classes": [2, 5]},
    "mnist1d": {"data.name": ["mnist1d"]},
    "width": {"data.n_classes": [5], "model.width": [24]},
}
initial_phase: int = 25  # overlaps are averaged over the steps from this one on
overlap_bar: float = 0.8  # "close to 1": the overlap CI lies above this
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/03-hessian-spectrum

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
import pandas as pd

from analysis_lib import plots, stats
from analysis_lib.config import check_fraction, check_subset
from analysis_lib.data import class_count
from analysis_lib.effects import mean_ci
from analysis_lib.executors import grid_executor
from analysis_lib.grid import expand_grid, run_grid
from analysis_lib.outputs import StudyOutputs
from analysis_lib.runstore import run_id
from analysis_lib.spectrum import density_table, spectrum_summary
from analysis_lib.stability import share_verdict
from analysis_lib.verdicts import verdict_row, verdict_table

check_subset("arms", ["classes"], arms)
check_fraction("overlap_bar", overlap_bar)
configs = expand_grid({"data": data, "model": model, "train": train, "probes": probes}, arms, seeds)
n_classes = {run_id(c): class_count(c.data) for c in configs}
out = StudyOutputs("03-hessian-spectrum", output_dir)
print(f"{len(configs)} runs: {len(arms)} arms x their conditions x {len(seeds)} seeds")

# %% [markdown]
# Train (or reuse from the run store) every run; each stores its spectrum at initialisation and at the end.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics, spectra = result.metrics, result.table("spectrum")
result.runs.groupby(["arm", "dataset", "n_classes", "width", "status"]).size().rename("runs").reset_index()

# %%
summary = spectrum_summary(spectra, n_classes)
final = summary[summary["step"] == summary.groupby("run_id")["step"].transform("max")]

# %% [markdown]
# **Top of the final spectrum, by rank** (exact spectra; one line per seed, log scale). Outliers stand above the bulk; look for the drop after about C eigenvalues.

# %%
fig = plots.plot_top_eigenvalues(spectra[spectra["method"] == "exact"], col="n_classes", hue="dataset", top=25)
out.save_figure("top_eigenvalues", fig)

# %% [markdown]
# **Spectral density at initialisation and at the end** (all eigenvalues, Gaussian-smoothed; symmetric log axis). The bulk near zero, the outliers far to the right.

# %%
fig = plots.plot_spectral_density(density_table(spectra), col="arm", hue="step")
out.save_figure("spectral_density", fig)

# %% [markdown]
# **Outliers counted against classes** (final exact spectra, one dot per run; the diagonal is count = C, the one below C − 1).

# %%
counts = final[final["metric"] == "n_outliers"].dropna(subset=["value"])
fig = plots.plot_run_values(counts, x="n_classes", hue="dataset", ylabel="outliers (largest log gap)")
out.save_figure("outliers_vs_classes", fig)

# %%
count_table = mean_ci(counts, ["dataset", "n_classes"], n_boot=n_boot)
out.save_table("outlier_counts", count_table)
count_table

# %% [markdown]
# **Does the count track the number of classes across runs?** Spearman correlation of outlier count with C (Gaussian mixtures).

# %%
per_run = counts[counts["dataset"] == "gaussian_mixture"].assign(classes=lambda d: d["n_classes"].astype(float))
rho = stats.spearman_ci(per_run.rename(columns={"value": "outliers"}), "classes", "outliers", n_boot=n_boot,
                        metric="n_outliers")
out.save_table("outliers_classes_correlation", rho)
plots.format_test_table(rho)

# %% [markdown]
# **Bulk width against parameter count** (0.9-quantile of |λ| at the end; C fixed; exact spectra only, since an SLQ quantile is not comparable with an exact one): the claim expects wider bulks for wider networks, so a narrower network should show a negative difference and a wider one a positive difference.

# %%
c_width = arms["width"]["data.n_classes"][0] if "width" in arms else None
exact_runs = final[(final["metric"] == "exact") & (final["value"] == 1)]["run_id"]
bulk = final[(final["metric"] == "bulk_width") & (final["dataset"] == "gaussian_mixture") & (final["n_classes"] == c_width)
             & final["run_id"].isin(exact_runs)]
width_tests = stats.compare_conditions(bulk, "width", baseline=model["width"], n_boot=n_boot) if bulk["width"].nunique() > 1 else pd.DataFrame(columns=stats.RESULT_COLUMNS)
out.save_table("bulk_width_tests", width_tests)
plots.format_test_table(width_tests)

# %% [markdown]
# **Gradient overlap with the top-C subspace over training** (full-batch gradient; dashed: a random C-dimensional subspace, C/dim). Look for a quick rise and a plateau near 1.

# %%
fig = plots.plot_metric_over_training(metrics[metrics["arm"].isin(["classes", "mnist1d"])], "grad_overlap", hue="n_classes", row="dataset")
out.save_figure("gradient_overlap", fig)

# %%
overlap = metrics[(metrics["metric"] == "grad_overlap") & (metrics["step"] >= initial_phase)]
overlap_runs = overlap.groupby(["run_id", "arm", "dataset", "n_classes", "width", "seed"], as_index=False)["value"].mean()
overlap_table = mean_ci(overlap_runs.assign(metric="grad_overlap"), ["dataset", "n_classes", "width"], n_boot=n_boot)
out.save_table("gradient_overlap", overlap_table)
overlap_table

# %% [markdown]
# ## Verdict
#
# Outliers: "yes" when every run's count is C or C − 1, "partly" when some are. Bulk: from the CI and adjusted p of the width contrast. Overlap: "yes" when the CI of the mean overlap lies above `overlap_bar`, "no" when it lies below.

# %%
in_range = counts.assign(ok=lambda d: d["value"].between(d["n_classes"] - 1, d["n_classes"]))
verdict = verdict_table(
    [{"claim": f"The trained Hessian has C or C − 1 outliers ({ds}, C = {c}, width {w})", "source": "Sagun et al. 2018 (claim 5)",
      "measured": f"outliers per run: {sorted(g['value'].astype(int).tolist())}", "n": len(g),
      "reproduced": share_verdict(g["ok"])} for (ds, c, w), g in in_range.groupby(["dataset", "n_classes", "width"])]
    + [verdict_row(f"More parameters widen the bulk ({row.contrast})", "Sagun et al. 2018 (claim 5)", row, "Δ bulk width",
                   "positive" if float(row.contrast.split(" - ")[0]) > model["width"] else "negative")
       for _, row in width_tests.iterrows()]
    + [{"claim": f"The gradient lies in the top-C subspace after an initial phase ({r.dataset}, C = {r.n_classes}, width {r.width})",
        "source": "Gur-Ari et al. 2018 (claim 6)", "measured": f"overlap = {r.mean:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]",
        "n": int(r.n), "reproduced": "yes" if r.ci_low > overlap_bar else "no" if r.ci_high < overlap_bar else "inconclusive"}
       for r in overlap_table.itertuples()])
out.save_table("verdict", verdict)
out.save_summary(title="Hessian spectra: bulk, outliers and the gradient's tiny subspace",
                 question="Does the Hessian have about C outliers over a bulk, and does the gradient live in the top-C subspace?",
                 verdict=verdict, runs=result.status_counts(), params={"seeds": seeds, "arms": arms, "train": train})
verdict.style.format(escape="html").hide(axis="index")
