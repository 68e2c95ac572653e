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
# # Sharpness and generalisation under SAM
#
# Does sharpness-aware minimisation (SAM; Foret et al., ICLR 2021) generalise better than plain SGD *because* it finds flatter minima? Wen, Li & Ma (NeurIPS 2023) argue that on two-layer ReLU networks and synthetic data flatness and generalisation can come apart: SAM can generalise better without a flatter solution, and the flattest solutions need not generalise; which happens depends on the data. Claim 16 of `docs/claims.md` (published as `claims.html` beside this report); the same trained models also test claim 8 (the Hessian criteria re and Kh_n under a dataset shift, last section).
#
# Two-layer ReLU networks (one hidden layer) on synthetic scenarios (a two-class Gaussian mixture, XOR clusters, a sparse parity), each trained from the same initial weights by SGD and by SAM at several radii ρ, paired by seed. At the final weights: every measure of the sharpness battery (λ_max, tr H, ρ-sharpness with one and with several ascent steps, adaptive sharpness likewise, average-direction sharpness) on a fixed training subset, and the test error.
#
# **Rules fixed in advance** (module `analysis_lib.studies.sharpness_generalisation`): in each scenario, with Δ = SAM − SGD at `verdict_rho`, paired by seed, each decided by its 95% CI (and the Holm-adjusted paired t-test): (a) SAM improves test error when the CI of Δ test error lies below 0; (b) SAM reduces a measure when the CI of its Δ lies below 0; (c) flatness and generalisation **come apart** when SAM's test error is lower while some measure is measurably *higher*, or some measure is lower while the test error is measurably higher; they **move together** (no) when the test error and every measure move the same way, each decided; otherwise inconclusive (a CI covering 0 demonstrates neither). Claim 16 reads yes when they come apart in at least one scenario. Beside the verdicts: Kendall τ of each measure against the test error across each scenario's sweep, plain and granulated (Jiang et al., ICLR 2020), and τ between the per-seed differences.
#
# Render: `papermill notebooks/09-sharpness-and-generalisation.ipynb out.ipynb -f notebooks/params/09-sharpness-and-generalisation/default.yaml` (or `make report`).

# %% tags=["parameters"]
# In-notebook values equal notebooks/params/09-sharpness-and-generalisation/smoke.yaml; the report uses default.yaml.
seeds: list = [0, 1]  # replicate seeds; a seed fixes the initial weights and data order under SGD and SAM
scenarios: dict = {  # scenario name -> DataConfig overrides (the dataset and its difficulty)
    "mixture": {"name": "gaussian_mixture", "n_classes": 2, "noise": 2.0},
    "xor": {"name": "xor", "noise": 1.0},
}
data: dict = {"n_train": 128, "n_test": 1000, "n_features": 20}  # DataConfig shared by the scenarios
model: dict = {"kind": "mlp", "depth": 1, "width": 32, "activation": "relu"}  # two-layer ReLU network
train: dict = {"optimizer": "sgd", "lr": 0.1, "batch_size": 32, "steps": 300}  # base TrainConfig (SGD)
probes: dict = {"names": ["eval", "weights"], "every": 100}  # ProbeConfig: test accuracy and the final weights
sam_rhos: list = [0.05, 0.1]  # SAM radii, each trained against SGD (no SAM) from the same seeds
verdict_rho: float = 0.05  # the SAM radius the verdicts compare with SGD (the others: sensitivity)
measure_rhos: list = [0.05, 0.1]  # radii at which the rho-, adaptive and average sharpness are measured
measure_rho: float = 0.05  # the measuring radius of the verdicts (the others: sensitivity)
measure_samples: int = 64  # the first n training samples the measures are taken on (0: all)
sample_alternatives: list = [0]  # other training-subset sizes for the sensitivity table
ascent_steps: int = 5  # projected ascent steps of the multi-step rho- and adaptive sharpness
n_directions: int = 20  # random directions of the average sharpness
shift_noise: float = 0.5  # claim 8: the shifted test inputs are the test inputs plus Gaussian noise of this size
shift_alternatives: list = [1.0]  # other noise sizes for the sensitivity table
criteria_samples: int = 128  # the first n test samples whose loss Hessian gives re and Kh (SLQ)
slq_probes: int = 2  # SLQ probe vectors per Hessian
slq_steps: int = 20  # Lanczos steps per probe
tau_margin: float = 0.2  # claim 8 reads no when the CI of Kendall tau lies inside [-tau_margin, tau_margin]
n_boot: int = 200  # bootstrap resamples for every confidence interval
workers: int = 1  # 1 means in-process; N means a Dask LocalCluster of N one-thread processes
scheduler: str = ""  # empty: this machine; "tcp://host:8786": an existing Dask cluster; "slurm" or "pbs": dask-jobqueue
output_dir: str = ""  # folder for tables, figures and summary.json; empty means data/studies/09-sharpness-and-generalisation

# %% [markdown]
# Derived configuration: every parameter is validated here, before any training.

# %%
from analysis_lib import StudyOutputs, format_test_table, format_verdict_table, grid_executor, run_grid, verdict_table
from analysis_lib.plots import generalisation as gen_plots, stats as stat_plots
from analysis_lib.studies import sharpness_generalisation as study
from analysis_lib.studies.sharpness_generalisation import measures as study_measures, verdicts as study_verdicts

configs = study.build_configs({"data": data, "model": model, "train": train, "probes": probes}, scenarios, sam_rhos,
                              seeds)
study.check_parameters(configs, sam_rhos=sam_rhos, verdict_rho=verdict_rho, measure_rhos=measure_rhos,
                       measure_rho=measure_rho, measure_samples=measure_samples,
                       sample_alternatives=sample_alternatives, ascent_steps=ascent_steps, n_directions=n_directions,
                       n_boot=n_boot)
study.check_shift_parameters(configs, shift_noise=shift_noise, shift_alternatives=shift_alternatives,
                             criteria_samples=criteria_samples, slq_probes=slq_probes, slq_steps=slq_steps,
                             tau_margin=tau_margin)
out = StudyOutputs("09-sharpness-and-generalisation", output_dir)
names = study.measure_names(ascent_steps)
print(f"{len(configs)} runs: {len(scenarios)} scenarios x (SGD + {len(sam_rhos)} SAM radii) x {len(seeds)} seeds")

# %% [markdown]
# Train (or reuse from the run store) every run, then take the sharpness battery at each finished run's final weights (one cached task per run and training-subset size), and the Hessian criteria on the original and the shifted test inputs (claim 8). Runs whose loss became non-finite are listed as `diverged` and left out.

# %%
with grid_executor(workers, scheduler) as executor:
    result = run_grid(configs, executor=executor)
    batteries = study.run_measures(result, rhos=measure_rhos, ascent_steps=ascent_steps, n_directions=n_directions,
                                   samples=[measure_samples, *sample_alternatives], executor=executor)
    shifts = study.run_shift(result, shift_noises=[shift_noise, *shift_alternatives], samples=criteria_samples,
                             n_probes=slq_probes, slq_steps=slq_steps, executor=executor)
errors = study_measures.final_test_errors(result)
measures = study.measure_table(batteries[measure_samples], errors, result.runs, rho=measure_rho,
                               ascent_steps=ascent_steps)
measures = measures.assign(method=measures["sam_rho"].map(study_verdicts.method_label))
result.runs.groupby(["arm", "sam_rho", "status"]).size().rename("runs").reset_index()

# %% [markdown]
# **Test error at the end of training, SGD and SAM at each ρ, per scenario** (one dot per seed; diamonds: mean with 95% CI).

# %%
fig = gen_plots.plot_values_by_method(measures, method="method", metrics=["test_error"], ylabel="test error")
out.save_figure("test_error", fig)

# %% [markdown]
# **Every sharpness measure at the solution, SGD and SAM, per scenario** (rows: scenarios; columns: measures at the measuring radius `measure_rho`, on the first `measure_samples` training samples; each panel its own scale).

# %%
fig = gen_plots.plot_values_by_method(measures, method="method", metrics=names)
out.save_figure("measures", fig)

# %% [markdown]
# ## SAM − SGD, paired by seed
#
# The verdicts below come from this table (and the same table under the sensitivity table's alternatives). Estimates: mean paired difference over seeds, 95% bootstrap CI, paired t-test, Holm-adjusted over the table.

# %%
rows, sensitivity, difference_tests = study.robust_verdict_rows(
    batteries, errors, result.runs, scenarios=list(scenarios), verdict_rho=verdict_rho, sam_rhos=sam_rhos,
    measure_rho=measure_rho, measure_rhos=measure_rhos, measure_samples=measure_samples,
    sample_alternatives=sample_alternatives, ascent_steps=ascent_steps, n_boot=n_boot, shift_tables=shifts,
    shift_noise=shift_noise, tau_margin=tau_margin)
out.save_table("difference_tests", difference_tests)
format_test_table(difference_tests)

# %% [markdown]
# **The paired differences with their CIs**, one panel per metric (test error first); left of the dotted line SAM is lower.

# %%
fig = stat_plots.plot_interval_table(difference_tests, null=0.0, xlabel="SAM − SGD")
out.save_figure("differences", fig)

# %% [markdown]
# ## Does a measure rank the trainings by test error?
#
# Kendall τ of each measure against the test error over every training of a scenario (SGD and every SAM radius, every seed); positive: sharper solutions generalise worse. 95% bootstrap CI over trainings.

# %%
kendall_tests = study.kendall_tests(measures, ascent_steps=ascent_steps, n_boot=n_boot)
out.save_table("kendall_tests", kendall_tests)
format_test_table(kendall_tests)

# %%
fig = stat_plots.plot_interval_table(kendall_tests, null=0.0, xlabel="Kendall τ with test error")
out.save_figure("kendall", fig)

# %% [markdown]
# **Granulated τ** (Jiang et al. 2020): ψ[sam_rho] is τ over the SAM radii (SGD as ρ = 0) at a fixed seed, averaged over seeds; ψ[seed] is τ over seeds at a fixed radius, averaged over radii; ψ their mean. A measure that tracks the test error only through one axis scores low on the other. CI: bootstrap over the groups averaged.

# %%
granulated_tests = study.granulated_tests(measures, ascent_steps=ascent_steps, n_boot=n_boot)
out.save_table("granulated_tests", granulated_tests)
format_test_table(granulated_tests)

# %% [markdown]
# **Does the gain track the flattening, seed by seed?** Kendall τ between a measure's paired difference Δ m and Δ test error over (seed, SAM ρ) pairs; positive: a seed whose SAM run came out flatter also gained more.

# %%
tracking_tests = study.tracking_tests(measures, ascent_steps=ascent_steps, n_boot=n_boot)
out.save_table("tracking_tests", tracking_tests)
format_test_table(tracking_tests)

# %%
wide = study_measures.wide_table(measures).assign(method=lambda d: d["sam_rho"].map(study_verdicts.method_label))
fig = gen_plots.plot_measure_vs_error(wide, measures=names, hue="method")
out.save_figure("measure_vs_error", fig)

# %% [markdown]
# ## Claim 8: the Hessian criteria under a dataset shift
#
# The same trained models on their test inputs and on a shifted copy (plus Gaussian noise of size `shift_noise`, one seeded draw per scenario). From the SLQ density of the test-loss Hessian (first `criteria_samples` test samples): re = |λ_min/λ_max| and Kh_0.5 (Gabdullin 2024; `analysis_lib.curvature.density.spectrum_criteria`). Per run, Δ = shifted − original of each criterion and of the test accuracy. **Rule fixed in advance:** within a scenario, the criterion tracks the change in accuracy (yes) when the 95% CI of Kendall τ(Δ criterion, Δ accuracy) over its runs excludes 0; no when it lies inside [−`tau_margin`, `tau_margin`]; inconclusive otherwise.

# %%
changes = study.shift_changes(shifts[shift_noise])
changes = changes.assign(method=changes["sam_rho"].map(study_verdicts.method_label))
shift_tests = study.shift_tests(changes, n_boot=n_boot)
out.save_table("shift_tests", shift_tests)
format_test_table(shift_tests)

# %% [markdown]
# **Δ criterion (columns of points: one per run) against Δ test accuracy** (y axis, labelled `test_acc`), shifted − original, per scenario.

# %%
fig = gen_plots.plot_measure_vs_error(changes, measures=["re", "Kh_0.5"], y="test_acc", hue="method")
out.save_figure("shift_criteria", fig)

# %% [markdown]
# ## How much do the verdicts hang on our choices?
#
# The same runs re-read under other choices, one at a time: the SAM radius compared with SGD (`verdict_rho`, each of `sam_rhos`), the radius the sharpness measures use (`measure_rho`, each of `measure_rhos`), the training subset they are taken on (`measure_samples`, or `sample_alternatives`; 0 = all) and, for claim 8, the size of the input shift (`shift_noise`, or `shift_alternatives`). The verdict table says, for each "no" or "partly", whether it is robust or conditional.

# %%
out.save_table("sensitivity", sensitivity)
fig = stat_plots.plot_outcome_grid(sensitivity)
out.save_figure("sensitivity", fig)

# %% [markdown]
# ## Verdict
#
# Per scenario: (a) SAM improves test error; (b) SAM reaches a flatter solution, one row per measure; (c) flatness and generalisation come apart (yes: lower test error at a measurably sharper solution by some measure, or a measurably flatter one with higher test error; no: test error and every measure move together, each decided by its CI; else inconclusive). Claim 16: yes when (c) is yes in at least one scenario. Claim 8, per scenario and criterion: by the rule of its section above.

# %%
verdict = verdict_table(rows, runs=result.status_counts())
out.save_table("verdict", verdict)
out.save_summary(title=study.TITLE, question=study.QUESTION, verdict=verdict, runs=result.status_counts(),
                 params={"seeds": seeds, "scenarios": scenarios, "data": data, "model": model, "train": train,
                         "sam_rhos": sam_rhos, "verdict_rho": verdict_rho, "measure_rho": measure_rho,
                         "measure_samples": measure_samples, "shift_noise": shift_noise})
format_verdict_table(verdict)
