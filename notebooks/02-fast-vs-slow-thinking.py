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
# # Fast vs slow thinking: per-layer gradients of a tiny transformer
#
# Does training on answers alone ("fast thinking") give larger per-layer gradients and larger differences across layers than training on worked steps ("slow thinking"); do slow-thinking gradients tell correct from wrong reasoning; is a pre-trained model less affected by fast thinking than a further fine-tuned one (Li et al. 2024, "What Happened in LLMs Layers when Trained for Fast vs. Slow Thinking: A Gradient Perspective")? And does higher-quality data give a lower nuclear norm and a higher effective rank, the effective rank separating quality levels better (Li et al. 2025, "How Instruction and Reasoning Data shape Post-Training")? Claims 1 and 2 of `docs/claims.md` (published as `claims.html` beside this report), in miniature.
#
# A tiny decoder-only transformer learns n-digit addition in two formats (the prompt's first token says which): *fast*, the answer alone, and *slow*, the digit-by-digit steps with carries, then the answer. Pre-training on both formats gives the **base** model; fine-tuning a copy on slow responses gives the **tuned** one; the weights rebuilt from the seed, **init**, are the baseline. At each of the three, the same held-out problems are answered as *fast*, *slow* (the clean response), *answer-only* (the slow sequence with the loss on its answer tokens alone: as many loss tokens as fast), *irrelevant* (another problem's steps), *subtle* (one wrong digit in one step) and *corrupted* (wrong steps). For every problem and every weight matrix of every block (q, k, v, o, up, down) we take the gradient of the response-token loss and its singular values: nuclear norm, spectral and Frobenius norm, effective rank.
#
# Protocol fixed in advance: losses averaged over each response's tokens, as in training, and token-summed, derived exactly by scaling the norms by the number of loss tokens; a contrast averages over problems within a seed and compares conditions paired by seed; the headline contrasts summarise all matrices as the mean of log statistic, a geometric-mean ratio; per-matrix tests are Holm-adjusted; AUROCs and effect sizes come with a bootstrap over seeds and problems. A trained model whose greedy accuracy on either format is below `learned` is excluded: its statistics are not comparable. An effect already present at init is an artefact of the format's length, not something learned.
#
# Render: `papermill notebooks/02-fast-vs-slow-thinking.ipynb out.ipynb -f notebooks/params/02-fast-vs-slow-thinking/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/02-fast-vs-slow-thinking/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # model seeds; a seed fixes the initial weights and the data order
task: dict = {"n_digits": 1, "n_train": 80, "n_test": 20}  # TaskConfig: the addition problems and the format mix
model: dict = {"n_layers": 4, "d_model": 16, "n_heads": 2, "d_mlp": 32}  # TransformerConfig
train: dict = {"steps": 60, "batch_size": 16, "warmup_steps": 5}  # LMTrainConfig: pre-training into the base model
finetune: dict = {"steps": 20}  # FinetuneConfig: fine-tuning a copy into the tuned model
probes: dict = {"names": ["eval", "grad_noise"], "every": 20, "eval_problems": 20}  # LMProbeConfig; eval records the accuracies, grad_noise the per-layer gradient noise
n_problems: int = 12  # held-out problems whose per-example gradients are measured
statistic: str = "nuclear_norm"  # per-matrix statistic of the fast versus slow tests and of the AUROC
learned: float = 0.0  # a trained model counts only when its greedy accuracy on both formats reaches this
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/02-fast-vs-slow-thinking

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
from IPython.display import Markdown

from analysis_lib import (LMRunConfig, StudyOutputs, config_from_dict, expand_grid, format_test_table,
                          format_verdict_table, grid_executor, run_grid, verdict_table)
from analysis_lib.plots import gradients as gradient_plots, stats as stat_plots, training as training_plots
from analysis_lib.studies import fast_slow as study

base = config_from_dict({"task": task, "model": model, "train": train, "finetune": finetune, "probes": probes}, LMRunConfig)
study.check_parameters(base, n_problems=n_problems, statistic=statistic, learned=learned, n_boot=n_boot)
configs = expand_grid(base, {}, seeds)
out = StudyOutputs("02-fast-vs-slow-thinking", output_dir)
print(f"{len(configs)} runs of {base.train.steps} + {base.finetune.steps} steps; {n_problems} problems x "
      f"{len(study.CONDITIONS)} conditions x {len(study.CHECKPOINTS)} checkpoints per run")

# %% [markdown]
# Train (or reuse from the run store) every run, then the per-example gradient statistics of each run (cached beside the run; one task per run on the same workers).

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
    spectra = study.spectra_table(result, n_problems, executor=executor)
result.runs[["run_id", "seed", "status", "seconds", "cached"]]

# %% [markdown]
# **Greedy answer accuracy on the held-out problems** per seed, checkpoint and format. A model below `learned` on either format is excluded from the tests below.

# %%
accuracy = study.accuracy_table(result, learned)
out.save_table("accuracy", accuracy)
accuracy.pivot_table(index="seed", columns=["checkpoint", "format"], values="accuracy")

# %%
Markdown(study.exclusion_note(accuracy, learned))

# %% [markdown]
# **Held-out exact match over training**, per format (thin: one line per seed; bold: mean). Look for when each format is learned: the fast format, which must be computed without written steps, is usually learned later.

# %%
fig = training_plots.plot_metric_family(result.metrics, "test_seq_acc_", hue="format", ylabel="held-out exact match",
                               vline=base.train.steps, vline_text=" fine-tuning →", ylim=(-0.02, 1.02))
out.save_figure("accuracy_over_training", fig)

# %% [markdown]
# **Per-layer gradient signal-to-noise ratio over training** (claim 4; the `grad_noise` probe on each probe step's mini-batch of mixed formats): SNR = ‖E g‖² / tr Σ from per-sample gradients, the ratio of means over seeds; panels are projections, lines are blocks. Look for which layers' gradients are dominated by noise (SNR near 0) as the loss falls, and how fine-tuning changes that. Descriptive only: no claim is tested on it.

# %%
noise = study.block_noise_profile(result.metrics)
out.save_table("gradient_noise", noise)
fig = gradient_plots.plot_gradient_noise(noise, projections=study.PROJECTIONS, vline=base.train.steps) if len(noise) else None
out.save_figure("gradient_noise", fig) if fig is not None else Markdown("The runs did not record the `grad_noise` probe.")

# %% [markdown]
# Per-seed tables of the comparable models, saved for re-analysis: the mean over problems of every statistic of every matrix (`seed_means.csv`) and the cross-layer spreads (`spreads.csv`), and one score per example for the separation tests.

# %%
kept = study.comparable(spectra, accuracy)
means = study.seed_means(kept)
spreads = study.spread_table(means)
scores = study.example_scores(kept, statistic)
out.save_table("seed_means", means)
out.save_table("spreads", spreads)

# %% [markdown]
# **Layer profiles, token-averaged loss** (mean over seeds with 95% band; rows: init, base, tuned; columns: projections). Look for fast above slow in the trained rows, and compare with the init row: a gap already there comes from the formats' lengths, not from learning. Answer-only (the slow sequence scored on the answer tokens) has as many loss tokens as fast.

# %%
fig = gradient_plots.plot_layer_profiles(means, statistic, conditions=["fast", "slow", "answer_only"])
out.save_figure("layer_profiles_mean", fig)

# %% [markdown]
# **The same with the token-summed loss.** Summing multiplies each gradient by its number of loss tokens, so the long slow responses move up by the length ratio: look for whether fast stays above slow.

# %%
fig = gradient_plots.plot_layer_profiles(means, statistic, conditions=["fast", "slow", "answer_only"], reduction="sum")
out.save_figure("layer_profiles_sum", fig)

# %% [markdown]
# **Fast − slow per matrix**, paired by seed, Holm within each checkpoint and reduction (the base model with token-averaged loss shown; all rows in `matrix_tests.csv`).

# %%
with grid_executor(workers, scheduler) as executor:  # every test table at this gate: computed once per grid
    tests = study.contrast_tests(result, n_problems=n_problems, learned=learned, statistic=statistic, n_boot=n_boot,
                                 executor=executor)
matrix = tests["matrix"]
out.save_table("matrix_tests", matrix)
format_test_table(matrix[matrix["contrast"].str.endswith("checkpoint=base, reduction=mean]")])

# %% [markdown]
# **Cross-layer spread**: MAD = mean |s_{l+1} − s_l| over consecutive layers of each seed's mean profile, raw and divided by the layer mean, per projection (token-averaged). Look for fast above slow in both: the raw MAD grows with the scale of the gradients, the relative one does not.

# %%
fig = gradient_plots.plot_spread(spreads, statistic, conditions=["fast", "slow", "answer_only"])
out.save_figure("spread", fig)

# %% [markdown]
# **Fast − slow MAD per projection and third of the layers** (`layer` holds all / early / middle / late), paired by seed, Holm within each checkpoint and reduction; base, token-averaged shown.

# %%
spread_tests = tests["spread"]
out.save_table("spread_tests", spread_tests)
format_test_table(spread_tests[spread_tests["contrast"].str.endswith("checkpoint=base, reduction=mean]")
                                     & (spread_tests["layer"] == "all")])

# %% [markdown]
# **Per-example gradient size in every condition**: the mean over matrices of the log statistic, one box per condition over all problems and seeds. Look for separation of slow (correct) from irrelevant, subtle and corrupted reasoning, and whether it exists at init already.

# %%
fig = gradient_plots.plot_score_distributions(scores, ylabel=f"mean log {statistic} over matrices")
out.save_figure("score_distributions", fig)

# %% [markdown]
# **AUROC of the per-example score separating correct (slow) from wrong reasoning**, direction fixed in advance (wrong reasoning larger), per checkpoint; 0.5 is chance. Irrelevant steps contradict the prompt, so they are easy to tell apart; one wrong digit (subtle) is the real test.

# %%
separation = tests["separation"]
out.save_table("separation", separation)
fig = stat_plots.plot_interval_table(separation, null=0.5, xlabel="AUROC")
out.save_figure("separation", fig)

# %% [markdown]
# **Data quality: paired effect sizes of corrupted − clean (slow) responses** for the nuclear norm and the effective rank (Cohen's d_z over problems, per seed, averaged), and the difference of their separations in the claimed directions (positive: the effective rank separates better).

# %%
quality = tests["quality"]
out.save_table("quality_effects", quality)
fig = stat_plots.plot_interval_table(quality, null=0.0, xlabel="effect size")
out.save_figure("quality_effects", fig)

# %% [markdown]
# **Headline contrasts** (log scale: exp of the estimate is the geometric-mean ratio over matrices or projections), each a claim fixed in advance, so unadjusted: fast − slow and fast − answer-only per checkpoint and reduction, the spreads, and how the fast-vs-slow gap changes from init to base and from base to tuned.

# %%
summary = tests["summary"]
out.save_table("summary_tests", summary)
format_test_table(summary)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: a paired contrast reproduces a claim when its 95% CI lies on the claimed side of zero and p < 0.05, and contradicts it when the CI lies on the other side; an AUROC when its CI lies above 0.5; an effect size when its CI excludes 0 on the claimed side. Rows about init are the length baseline. Each "no" or "partly" also says whether it holds when the accuracy gate that admits trained models is set at 0.5 or 0.99 instead of `learned` (the grid below; the same cached spectra).

# %%
rows, sensitivity = study.robust_verdict_rows(result, n_problems=n_problems, learned=learned, statistic=statistic,
                                              n_boot=n_boot)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "task": task, "model": model, "train": train, "finetune": finetune,
                         "n_problems": n_problems, "statistic": statistic, "learned": learned})
format_verdict_table(verdict)
