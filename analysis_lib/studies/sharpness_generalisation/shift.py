"""Claim 8 in study 09: the Hessian criteria re and Kh_n under a dataset shift, against the change in accuracy.

Claim 8 of ``docs/claims.md`` (Gabdullin, 2024, "Investigating generalization capabilities of
neural networks by means of loss landscapes and Hessian analysis"): two numbers read off the
Hessian's spectral density, re = |λ_min/λ_max| and Kh_n (n = 0.5), track generalisation: under a
change of data set, the change in the criteria correlates with the change in accuracy.

**Protocol, fixed in advance.** Every finished run of the study is evaluated, at its final
weights, on its test split and on a *shifted* copy: the same test inputs (standardised) plus
Gaussian noise of standard deviation ``shift_noise`` (one seeded draw, the same for every run of a
scenario; a covariate shift of known size). On each, the Hessian of the mean loss over the first
``criteria_samples`` test examples gives SLQ nodes and weights
(:func:`analysis_lib.curvature.density.slq_nodes`; ``n_probes`` probes of ``slq_steps`` Lanczos
steps) and :func:`~analysis_lib.curvature.density.spectrum_criteria` gives re and Kh_0.5 (their
mean over probes); the accuracy is taken on the whole test split. Per run, Δ criterion = shifted
− original and Δ accuracy likewise. Within each scenario, Kendall τ between Δ criterion and Δ
accuracy over its runs (SGD and SAM, every seed) with a bootstrap CI
(:func:`analysis_lib.stats.rank_correlation.kendall_tau`):

- **yes** when the 95% CI excludes 0 (either sign: the claim says the changes correlate, not how);
- **no** when the CI lies inside [−``tau_margin``, ``tau_margin``] (no correlation worth the name);
- **inconclusive** otherwise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...runs.analyses import finished_runs
from ...runs.derived import Analysis, derive
from ...stats.rank_correlation import kendall_table
from ...stats.results import result_table
from ...stats.verdicts import NOT_TESTED, verdict_within
from ...validation import check_fraction, check_int, check_number, fail

SOURCE = "Gabdullin 2024 (claim 8)"
CRITERIA = ("re", "Kh_0.5")
SHIFT = Analysis("shift_criteria", "analysis_lib.studies.sharpness_generalisation.shift:criteria_task", version=1)
SHIFT_COLUMNS = ["run_id", "seed", "split", "metric", "value"]


def check_shift_parameters(configs: Sequence, *, shift_noise: float, shift_alternatives: Sequence[float],
                           criteria_samples: int, slq_probes: int, slq_steps: int, tau_margin: float) -> None:
    """Raise ConfigError naming the first bad claim-8 parameter, before any training.

    ``shift_noise`` and each of ``shift_alternatives`` > 0; ``criteria_samples`` in
    [1, ``data.n_test``]; ``slq_probes`` ≥ 1, ``slq_steps`` ≥ 2; ``tau_margin`` in (0, 1).
    """
    check_number("shift_noise", shift_noise, positive=True)
    if isinstance(shift_alternatives, (str, bytes)) or not isinstance(shift_alternatives, Sequence):
        fail("shift_alternatives", shift_alternatives, "must be a list of noise sizes > 0")
    for noise in shift_alternatives:
        check_number("shift_alternatives", noise, positive=True)
    check_int("criteria_samples", criteria_samples, 1)
    n_test = min((c.data.n_test for c in configs), default=0)
    if criteria_samples > n_test:
        fail("criteria_samples", criteria_samples, f"must be <= data.n_test (= {n_test})")
    check_int("slq_probes", slq_probes, 1)
    check_int("slq_steps", slq_steps, 2)
    check_fraction("tau_margin", tau_margin)


def shifted_inputs(x, noise: float, seed: int):
    """``x`` plus Gaussian noise of standard deviation ``noise`` from a generator seeded by ``seed``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)


def criteria_task(runs, run_ids: Sequence[str], *, shift_noise: float, samples: int, n_probes: int,
                  slq_steps: int, seed: int = 0) -> pd.DataFrame:
    """re, Kh_0.5 (mean over SLQ probes) and accuracy of each run on its test split and the shifted copy.

    Returns:
        :data:`SHIFT_COLUMNS`; ``split`` is ``original`` or ``shifted``, ``metric`` one of
        ``re``, ``Kh_0.5``, ``test_acc``.
    """
    import torch

    from ...curvature.density import slq_nodes, spectrum_criteria
    from ...curvature.hessian import HessianOperator
    from ...training.problem import final_models

    rows = []
    for rid, config, model, problem in final_models(runs, run_ids):
        x, y = problem.splits["test"]
        for split, inputs in (("original", x), ("shifted", shifted_inputs(x, shift_noise, seed))):
            op = HessianOperator(model, problem.loss_fn, (inputs[:samples], y[:samples]))
            nodes = slq_nodes(op.matvec, op.dim, n_probes=n_probes, steps=slq_steps, seed=seed, device=op.device)
            crit = spectrum_criteria(nodes, n=0.5)
            with torch.no_grad():
                acc = (model(inputs).argmax(dim=1) == y).double().mean().item()
            values = {"re": crit["re"].mean(), "Kh_0.5": crit["Kh_0.5"].mean(), "test_acc": acc}
            rows += [{"run_id": rid, "seed": config.seed, "split": split, "metric": m, "value": float(v)}
                     for m, v in values.items()]
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


def run_shift(result, *, shift_noises: Sequence[float], samples: int, n_probes: int, slq_steps: int,
              executor=None, progress: bool | None = None) -> dict[float, pd.DataFrame]:
    """:func:`criteria_task` of every finished run (one cached task per run) for each shift size."""
    ids = finished_runs(result)
    out = {}
    for noise in dict.fromkeys(shift_noises):
        params = {"shift_noise": float(noise), "samples": int(samples), "n_probes": int(n_probes),
                  "slq_steps": int(slq_steps)}
        out[noise] = (derive(SHIFT, result, [[rid] for rid in ids], params=params, executor=executor,
                             progress=progress) if ids else pd.DataFrame(columns=[*SHIFT_COLUMNS, "arm"]))
    return out


def shift_changes(table: pd.DataFrame) -> pd.DataFrame:
    """Per run (``run_id, scenario, sam_rho, seed``): shifted − original of re, Kh_0.5 and the accuracy."""
    cols = ["run_id", "scenario", "sam_rho", "seed", *CRITERIA, "test_acc"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    wide = table.pivot_table(index=["run_id", "arm", "sam_rho", "seed"], columns=["split", "metric"],
                             values="value", sort=False)
    diff = wide["shifted"] - wide["original"]
    return diff.reset_index().rename(columns={"arm": "scenario"}).rename_axis(columns=None)[cols]


def shift_tests(changes: pd.DataFrame, *, n_boot: int) -> pd.DataFrame:
    """Kendall τ between Δ criterion and Δ accuracy over a scenario's runs, per criterion."""
    if changes.empty:
        return result_table([])
    finite = changes.replace([np.inf, -np.inf], np.nan)
    return kendall_table(finite, list(CRITERIA), "test_acc", by=["scenario"], n_boot=n_boot)


def shift_rows(tests: pd.DataFrame, scenarios: Sequence[str], *, tau_margin: float, shift_noise: float) -> list[dict]:
    """One verdict row per scenario and criterion, by the rule of the module docstring."""
    rule = (f"yes when the 95% CI of Kendall τ(Δ criterion, Δ accuracy) excludes 0; no when it lies inside "
            f"[{-tau_margin:g}, {tau_margin:g}]; inconclusive otherwise")
    rows = []
    for scenario in scenarios:
        for criterion in CRITERIA:
            claim = f"Under an input shift, the change in {criterion} tracks the change in accuracy [{scenario}]"
            hit = tests[(tests["metric"] == criterion) & tests["contrast"].str.endswith(f"[scenario={scenario}]")]
            if hit.empty or np.isnan(hit["ci_low"].iloc[0]):
                rows.append({"claim": claim, "source": SOURCE, "measured": "no interval (too few runs, or a "
                             "constant change)", "n": 0, "reproduced": NOT_TESTED, "rule": rule})
                continue
            r = hit.iloc[0]
            excludes = r["ci_low"] > 0 or r["ci_high"] < 0
            inside = verdict_within(r["ci_low"], r["ci_high"], -tau_margin, tau_margin) == "yes"
            outcome = "yes" if excludes else "no" if inside else "inconclusive"
            rows.append({"claim": claim, "source": SOURCE, "n": int(r["n"]), "reproduced": outcome, "rule": rule,
                         "measured": f"τ = {r['estimate']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}] over "
                                     f"{int(r['n'])} runs (input noise σ = {shift_noise:g})",
                         "power": "not computed for a rank correlation" if outcome == "inconclusive" else ""})
    return rows
