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
# # Instabilities of a tiny transformer at high learning rates
#
# Do small transformers trained at high learning rates show the instabilities of large ones, attention-logit growth and output-logit (log Z) drift; does qk-layernorm mitigate the first and z-loss the second, and do both lower the sensitivity of the final loss to the learning rate (Wortsman et al., "Small-scale proxies for large-scale Transformer training instabilities", ICLR 2024)? And does the top eigenvalue of each layer's diagonal Hessian block differ substantially between layers and change over training (Hao et al. 2025)? Claims 13 and 17 of `docs/claims.md` (published as `claims.html` beside this report), in miniature.
#
# A tiny decoder-only transformer learns the addition task (generated locally) with Adam, over a log-spaced learning-rate grid, in four arms paired by seed: `baseline`, `qk_norm` (a LayerNorm on each head's queries and keys), `z_loss` (1e-4 × (log Z)² added to the loss) and `warmup` (linear warm-up), plus a `curvature` arm (the baseline at one learning rate, λ_max of every q, k, v, o, up, down block and the per-layer gradient noise probed a few times). Protocol fixed in advance (module `analysis_lib.studies.transformer_instabilities`): the growth of the maximum attention logit and of |log Z| is the `summary` (peak or last probe) minus the first probe, read at the highest learning rate; the LR sensitivity is the mean over the grid of min(L(η), L_0) − L*, diverged runs counting as L_0; the block spread is max/min of block λ_max, compared with a `factor` fixed in advance. A diverged run is data: it keeps what it recorded, counts as L_0, and is an event in the survival curves.
#
# Render: `papermill notebooks/07-transformer-instabilities.ipynb out.ipynb -f notebooks/params/07-transformer-instabilities/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/07-transformer-instabilities/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # model seeds; a seed fixes the initial weights and the data order in every arm
task: dict = {"n_digits": 2, "n_train": 200, "n_test": 50}  # TaskConfig: the addition problems
model: dict = {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64}  # TransformerConfig (baseline: no qk-norm)
train: dict = {"steps": 60, "batch_size": 32, "warmup_steps": 0}  # LMTrainConfig: Adam, cosine decay, no warm-up
finetune: dict = {"steps": 0}  # no fine-tuning phase: the study reads pre-training only
probes: dict = {"names": ["eval", "attention_stats", "logit_stats"], "every": 20, "eval_problems": 50,
                "curvature_samples": 16}  # LMProbeConfig
arms: dict = {  # named arms: dotted config keys -> lists of values; every grid arm on the same learning rates
    "baseline": {"train.lr": [0.01, 0.1]},
    "qk_norm": {"train.lr": [0.01, 0.1], "model.qk_norm": [True]},
    "z_loss": {"train.lr": [0.01, 0.1], "train.z_loss": [1e-4]},
    "curvature": {"train.lr": [0.01], "probes.every": [30],
                  "probes.names": [["eval", "attention_stats", "logit_stats", "block_sharpness", "gradient_snr"]]},
}
summary: str = "peak"  # how a run's attention-logit and |log Z| series are summarised: "peak" or "final" (last probe)
factor: float = 10.0  # claim 17: the max/min ratio of block lambda_max must exceed this
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/07-transformer-instabilities

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
from analysis_lib import (LMRunConfig, StudyOutputs, config_from_dict, expand_grid, format_test_table,
                          format_verdict_table, grid_executor, run_grid, verdict_table)
from analysis_lib.plots import instabilities as instability_plots, stats as stat_plots, training as training_plots
from analysis_lib.stats.lr_sensitivity import capped_loss_curves
from analysis_lib.stats.survival import kaplan_meier
from analysis_lib.studies import transformer_instabilities as study

base = config_from_dict({"task": task, "model": model, "train": train, "finetune": finetune, "probes": probes},
                        LMRunConfig)
configs = expand_grid(base, arms, seeds)
study.check_parameters(configs, arms, factor=factor, summary=summary, n_boot=n_boot)
out = StudyOutputs("07-transformer-instabilities", output_dir)
print(f"{len(configs)} runs of {base.train.steps} steps: {len(arms)} arms x their learning rates x {len(seeds)} seeds")

# %% [markdown]
# Train (or reuse from the run store) every run. Runs whose loss became non-finite are listed as `diverged`, with the step, and kept.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics = result.metrics
runs = study.run_table(result)
out.save_table("runs", runs)
runs.groupby(["arm", "lr", "status"]).size().rename("runs").reset_index()

# %%
grid_runs = runs[runs["arm"].isin(study.GRID_ARMS)]
high_lr = grid_runs["lr"].max()
high = metrics[metrics["run_id"].isin(grid_runs.loc[grid_runs["lr"] == high_lr, "run_id"])]

# %% [markdown]
# **Maximum attention logit q·k/√d over training at the highest learning rate**, one panel per layer, one line per arm (mean, 95% band over seeds). Look for growth in the baseline and whether qk-norm keeps it down.

# %%
fig = training_plots.plot_metric_over_training(high, "attn_logit_max", hue="arm", logy=True)
out.save_figure("attention_logits", fig)

# %% [markdown]
# **Mean log Z (output log-partition) over training at the highest learning rate**, one line per arm. Look for drift away from 0 in the baseline and whether z-loss holds it near 0.

# %%
fig = training_plots.plot_metric_over_training(high, "log_z_mean", hue="arm")
out.save_figure("log_z", fig)

# %% [markdown]
# **Learning-rate sensitivity curves**: final training loss capped at the loss at initialisation L_0 (diverged runs count as L_0), mean over seeds with a 95% bootstrap CI, per arm. A flatter curve is a less sensitive recipe.

# %%
usable = grid_runs["lr"].nunique() > 1 and not (grid_runs["status"] == "failed").any()
curves = capped_loss_curves(grid_runs, n_boot=n_boot) if usable else grid_runs.iloc[0:0]
out.save_table("capped_loss_curves", curves)
fig = instability_plots.plot_capped_loss_curves(curves, loss_unit=result.loss_unit())
out.save_figure("lr_sensitivity", fig)

# %% [markdown]
# **Divergence survival** (Kaplan–Meier over all learning rates of each arm, log(−log) Greenwood intervals): the fraction of runs whose loss was still finite at each step.

# %%
survival = kaplan_meier(grid_runs) if len(grid_runs) else grid_runs.iloc[0:0]
out.save_table("survival", survival)
fig = instability_plots.plot_survival(survival)
out.save_figure("survival", fig)

# %% [markdown]
# **Per-layer sharpness heterogeneity** (claim 17, `curvature` arm): max/min over the q, k, v, o, up, down blocks of the top eigenvalue of each block's diagonal Hessian, per probe (thin: one line per seed; bold: geometric mean with 95% band; dashed: the factor fixed in advance).

# %%
spread = study.spread_table(metrics[metrics["arm"] == "curvature"] if len(metrics) else metrics.iloc[0:0])
out.save_table("block_spread", spread)
fig = instability_plots.plot_ratio_over_training(spread, ylabel="max / min block λ_max", factor=factor)
out.save_figure("block_spread", fig)

# %% [markdown]
# **Per-layer gradient noise heterogeneity** (claim 17, `curvature` arm): max/min over layers of Var_l = E_b‖g_{l,b} − ḡ_l‖² (the `gradient_snr` probe's `snr_var`, from fresh mini-batches at each probe).

# %%
noise = study.spread_table(metrics[metrics["arm"] == "curvature"] if len(metrics) else metrics.iloc[0:0], "snr_var")
out.save_table("noise_spread", noise)
fig = instability_plots.plot_ratio_over_training(noise, ylabel="max / min gradient noise Var_l", factor=factor)
out.save_figure("noise_spread", fig)

# %% [markdown]
# ## How much do the verdicts hang on our choices?
#
# The same runs re-read under other choices, one at a time: the series summary (peak or last probe), the learning rate the growth rules read (the highest or the next one down: `lr_rank`), and the factor of claim 17. Each "no" or "partly" below says whether it is robust or conditional.

# %%
rows, sensitivity, tests = study.robust_verdict_rows(metrics, runs, summary=summary, factor=factor, n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# **Growth and mitigation at the highest learning rate** (paired by seed): the baseline's summary minus its first probe, and each mitigation minus the baseline.

# %%
out.save_table("instability_tests", tests["instability"])
format_test_table(tests["instability"])

# %% [markdown]
# **LR sensitivity, treatment − baseline** (paired by seed; negative: the treatment is less sensitive), and the **log-rank test** of divergence (hazard ratio treatment / baseline; below 1: fewer or later divergences).

# %%
out.save_table("sensitivity_tests", tests["sensitivity"])
out.save_table("divergence_tests", tests["divergence"])
format_test_table(tests["sensitivity"])

# %%
format_test_table(tests["divergence"])

# %% [markdown]
# **Spread tests** (claim 17, block λ_max and gradient noise Var_l): the mean over probes of log10(max/min) minus log10(factor), and the change from the first probe to the last, paired by seed.

# %%
out.save_table("spread_tests", tests["spread"])
format_test_table(tests["spread"])

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: a paired contrast reproduces a claim when its 95% CI lies on the claimed side of zero and p < 0.05, and contradicts it when it lies on the other side; the log-rank row when the hazard ratio's CI lies below 1; the change of the block spread over training when its CI excludes 0 either way. If the instabilities do not appear at this size, the rows say so with the numbers.

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "task": task, "model": model, "train": train, "arms": arms,
                         "summary": summary, "factor": factor})
format_verdict_table(verdict)
