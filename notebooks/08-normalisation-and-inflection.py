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
# # Normalisation placement and inflection layers
#
# With Pre-LN, does the variance of the hidden states grow with depth; with Post-LN, do the gradients of early layers shrink; does Peri-LN, a norm around every sublayer, keep both balanced (Kim et al., ICML 2025)? Do massive activations appear, and does Peri-LN train with fewer loss spikes? And when a source model trained briefly or long is adapted to a shifted target, do *inflection layers* appear: nearly saturated attention where the activation gradient drops steeply, suppressed parameter gradients there, the representation changing elsewhere; and do over-trained sources saturate more (Wang 2025)? Does a low-rank adapter placed at the inflection layer help the over-trained source more than the under-trained one? Claims 14 and 15 of `docs/claims.md` (published as `claims.html` beside this report).
#
# A tiny decoder-only transformer learns n-digit addition (both formats, as in study 02) under the three placements, paired by seed (same initial weights and data order). The `activation_stats` probe records each block's output variance and massive-activation ratio max|h|/median|h| on the probed training batch, `grad_norm` every parameter's gradient norm. Protocol fixed in advance (module `analysis_lib.studies.normalisation_inflection`): per run, the slope of log Var(h_l) on the block index l and the mean log(‖g_first block‖/‖g_last block‖), both over the probed steps of `steps`; loss spikes are updates whose mini-batch loss exceeds `spike_factor` × the median of the `spike_window` losses before them.
#
# Claim 15 (arm `source`, Pre-LN): a source pre-trained on the fast format only for a short and a long `train.steps`, then fine-tuned on the slow format (the shifted target), paired by seed. Over the adaptation steps, per block: saturation 1 − H/log T of its attention, the drop of the activation gradient across it (log ‖∂L/∂h_l‖ − log ‖∂L/∂h_{l−1}‖), its parameter gradient norm, and ΔCKA of its outputs before vs after adaptation on `n_problems` held-out target problems (shared PCA basis). The inflection layer of a run is the block l ≥ 1 with the largest gradient drop, its control block the other block l ≥ 1 with the smallest (rules fixed in advance; module `analysis_lib.studies.inflection_layers`). A second stage, set up from the first one's inflection layers: each source run's stored base weights (`finetune.from_run`: not trained again) are adapted to the slow format by LoRA (rank `adapter.rank` on `adapter.projections`, all else frozen) in one block, its inflection layer or its control block; the outcome is the held-out slow-format loss at the last step, and the claim's test is long − short of the benefit (control − inflection), paired by seed.
#
# Render: `papermill notebooks/08-normalisation-and-inflection.ipynb out.ipynb -f notebooks/params/08-normalisation-and-inflection/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/08-normalisation-and-inflection/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # model seeds; a seed fixes the initial weights and the data order in every arm
task: dict = {"n_digits": 1, "n_train": 80, "n_test": 20}  # TaskConfig
model: dict = {"n_layers": 6, "d_model": 16, "n_heads": 2, "d_mlp": 32}  # TransformerConfig (norm set by the arm)
train: dict = {"steps": 60, "batch_size": 16, "warmup_steps": 5, "lr": 0.01}  # LMTrainConfig
finetune: dict = {"steps": 30, "lr": 0.003, "slow_fraction": 1.0}  # FinetuneConfig: the adaptation to the slow format (read in arm source)
probes: dict = {"names": ["eval", "activation_stats", "attention_stats", "grad_norm"], "every": 10, "eval_problems": 20}  # LMProbeConfig
arms: dict = {  # norm: the three placements (claim 14 reads their pre-training steps only); source: short vs long fast-only source, adapted (claim 15)
    "norm": {"model.norm": ["pre", "post", "peri"]},
    "source": {"train.steps": [20, 80], "task.slow_fraction": [0.0]},
}
steps: str = "late"  # probed steps the per-layer summaries average over: late (second half), all, last
spike_factor: float = 2.0  # a spike: mini-batch loss above this factor times the running median
spike_window: int = 10  # updates in the running median
massive_bar: float = 100.0  # max|h|/median|h| at which a run counts as having massive activations
n_problems: int = 10  # held-out target problems whose block outputs give ΔCKA (claim 15)
adapter: dict = {"rank": 2, "projections": ["q", "k", "v", "o", "up", "down"]}  # claim 15's stage 2: LoRA rank and adapted projections of the one adapted block
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/08-normalisation-and-inflection

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
from analysis_lib import (LMRunConfig, StudyOutputs, config_from_dict, expand_grid, format_test_table,
                          format_verdict_table, grid_executor, run_grid, verdict_table)
from analysis_lib.plots import stats as stat_plots
from analysis_lib.studies import inflection_layers as inflection, normalisation_inflection as study

base = config_from_dict({"task": task, "model": model, "train": train, "finetune": finetune, "probes": probes},
                        LMRunConfig)
configs = expand_grid(base, arms, seeds)
study.check_parameters(configs, arms, steps=steps, spike_factor=spike_factor, spike_window=spike_window,
                       massive_bar=massive_bar, n_boot=n_boot, n_problems=n_problems, adapter=adapter)
out = StudyOutputs("08-normalisation-and-inflection", output_dir)
print(f"{len(configs)} runs: 3 placements and 2 sources x {len(seeds)} seeds, {base.model.n_layers} blocks")

# %% [markdown]
# Train (or reuse from the run store) every run. Runs whose loss became non-finite are listed as `diverged` and kept.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
metrics = result.metrics[result.metrics["arm"] == "norm"]  # claim 14's runs
norms, train_steps = result.parameter("model.norm"), result.parameter("train.steps")
result.runs[["run_id", "arm", "norm", "steps", "seed", "status", "seconds", "cached"]]

# %% [markdown]
# **Per-block profiles** (mean over the probed steps of `steps`; thin: one line per seed, bold: mean): log hidden-state variance, log massive-activation ratio and log block gradient norm. Look for the variance rising with depth under Pre-LN, the gradient norm falling towards the first blocks under Post-LN, and flat profiles under Peri-LN.

# %%
profiles = study.depth_profiles(metrics, norms, train_steps, steps=steps)
out.save_table("depth_profiles", profiles)
fig = study.plot_depth_profiles(profiles)
out.save_figure("depth_profiles", fig)

# %% [markdown]
# **Mini-batch loss over training**, one panel per placement, one line per seed: the spikes counted below.

# %%
fig = study.plot_losses(metrics, norms)
out.save_figure("loss_curves", fig)

# %% [markdown]
# **Run summaries** (one row per run): slope of log Var per block, log(‖g_first‖/‖g_last‖), loss spikes, largest massive-activation ratio.

# %%
summary = study.summary_table(metrics, norms, train_steps, steps=steps, spike_factor=spike_factor,
                              spike_window=spike_window)
out.save_table("run_summaries", summary)
summary.pivot_table(index=["norm", "seed"], columns="metric", values="value")

# %% [markdown]
# **Pre − Peri and Post − Peri**, paired by seed (paired t-test, bootstrap CI over seeds, Holm over the table).

# %%
tests = study.norm_tests(summary, n_boot=n_boot)
out.save_table("norm_tests", tests)
format_test_table(tests)

# %% [markdown]
# ## Claim 15: inflection layers under adaptation
#
# **Per-block diagnostics over the adaptation steps** (thin: one line per seed, bold: mean; one colour per source length): attention saturation, activation-gradient drop across the block, log parameter gradient norm, ΔCKA before vs after adaptation. Look for a block where saturation and gradient drop peak together, with a low parameter gradient and low ΔCKA.

# %%
source_runs = result.run_ids(arm="source", status="finished")
diagnostics = inflection.diagnostics_table(result, source_runs, n_problems)
out.save_table("inflection_diagnostics", diagnostics)
fig = study.plot_depth_profiles(diagnostics, hue="source_steps", label="{} source steps")
out.save_figure("inflection_diagnostics", fig)

# %% [markdown]
# **Per run**: the inflection layer (largest gradient drop, l ≥ 1), the rank correlation of saturation and gradient drop across blocks, the parameter-gradient and ΔCKA gaps between the inflection layer and the other blocks, the largest saturation.

# %%
effects = inflection.run_effects(diagnostics)
out.save_table("inflection_effects", effects)
effects.pivot_table(index=["source_steps", "seed"], columns="metric", values="value") if len(effects) else effects

# %% [markdown]
# **Stage 2: LoRA at the inflection layer vs at the control block.** Per source run with an inflection layer, two runs that start from the source's stored base weights and adapt only one block (run store and executor as above: cached, resumable); diverged runs are kept, their outcome is missing and their seed drops out of that pair.

# %%
adapter_runs = inflection.adapter_configs(result, effects, rank=adapter["rank"], projections=adapter["projections"])
with grid_executor(workers, scheduler) as executor:
    adapted = run_grid(adapter_runs, executor=executor)
outcomes = inflection.adapter_outcomes(adapted)
out.save_table("adapter_outcomes", outcomes)
outcomes.pivot_table(index=["source_steps", "seed"], columns="placement", values=["block", "value"]) if len(outcomes) else outcomes

# %% [markdown]
# **Held-out slow-format loss after adaptation**, one panel per source length, one line per seed joining its two placements (black: mean). Look for the inflection-block adapter reaching a lower loss than the control one, by more for the long source.

# %%
fig = inflection.plot_adapter_outcomes(outcomes)
out.save_figure("adapter_outcomes", fig)

# %% [markdown]
# **Benefit of the inflection-layer adapter** (control − inflection of the target loss, per source length, Holm over both) and its long − short difference, paired by seed (paired t-test, bootstrap CI over seeds).

# %%
adapter_tests = inflection.adapter_tests(outcomes, n_boot=n_boot)
out.save_table("adapter_tests", adapter_tests)
format_test_table(adapter_tests) if len(adapter_tests) else "no paired adapter runs"

# %%
claim15 = inflection.verdict_rows(effects, n_boot=n_boot, adapter=outcomes)

# %% [markdown]
# ## How much do the verdicts hang on our choices?
#
# The same runs re-read under other choices, one at a time: which probed steps the per-layer summaries average over (`steps`), and what counts as a loss spike (`spike_factor`, `spike_window`).

# %%
rows, sensitivity = study.robust_verdict_rows(metrics, norms, train_steps, steps=steps, spike_factor=spike_factor,
                                              spike_window=spike_window, massive_bar=massive_bar, n_boot=n_boot,
                                              claim15=claim15)
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# ## Verdict
#
# Rules fixed in advance: Pre-LN growth when the t interval of the slope lies above 0; Post-LN shrinkage when the t interval of log(‖g_first‖/‖g_last‖) lies below 0 (p < 0.05 both); Peri-LN's balance and spikes from the paired contrasts' CIs; massive activations when a run's largest ratio reaches `massive_bar`. Claim 15: the correlation, the gaps at the inflection layer (t intervals across runs), long − short of the largest saturation and long − short of the adapter's benefit at the inflection layer (paired by seed; not tested when no source had an inflection layer or every adapter run diverged).

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "task": task, "model": model, "train": train, "arms": arms, "steps": steps,
                         "spike_factor": spike_factor, "spike_window": spike_window, "massive_bar": massive_bar, "finetune": finetune,
                         "n_problems": n_problems, "adapter": adapter})
format_verdict_table(verdict)
