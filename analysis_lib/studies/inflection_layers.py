"""Study 08, claim 15 (Wang 2025, "Attention Saturation and Gradient Suppression at Inflection Layers").

Runs of the arm ``source``: a source model pre-trained on the fast format only
(``task.slow_fraction = 0``) for a short and a long ``train.steps``, then fully fine-tuned on the
shifted target, the slow format (``finetune.slow_fraction = 1``), paired by seed. Four per-block
diagnostics over the adaptation steps (the probed steps after ``train.steps``), fixed in advance:

- ``saturation`` = 1 − the block's normalised attention entropy (``attn_entropy_norm``: mean of
  H_i / log n_i over queries and heads; 1 = one-hot, 0 = uniform), mean over the steps;
- ``act_grad_drop`` = log ‖∂L/∂h_l‖ − log ‖∂L/∂h_{l−1}‖ (``act_grad_norm``): how much the
  activation gradient shrinks going backward across block l (blocks l ≥ 1; the embedding's
  gradient is not recorded), mean over the steps;
- ``log_param_grad`` = log of the block's parameter gradient norm (sqrt of Σ over ``blocks.{l}.*``);
- ``delta_cka`` = 1 − CKA of the block's outputs at the base vs the tuned checkpoint on the same
  ``n_problems`` held-out problems in the target format (every position, shared pooled PCA basis,
  debiased CKA; :func:`analysis_lib.activations.delta_cka_shared_pca`).

The *inflection layer* of a run is the block l ≥ 1 with the largest ``act_grad_drop`` (the rule
fixed before any run). Claims tested, paired by seed or across runs:

- saturation and the gradient drop coincide: per run, the Spearman correlation across blocks
  l ≥ 1 of ``saturation`` and ``act_grad_drop``; its t interval across runs above 0;
- parameter gradients are suppressed there: ``log_param_grad`` at the inflection layer minus the
  mean over the other blocks l ≥ 1, t interval below 0;
- the representation changes mostly elsewhere: ``delta_cka`` there minus the mean elsewhere, below 0;
- over-trained sources saturate more: long − short of the largest block ``saturation``, above 0.

The *control block* of a run is the block l ≥ 1, other than the inflection layer, with the smallest
``act_grad_drop`` (fixed in advance too): the block across which the activation gradient shrinks least.

**Adapter comparison** (a second stage, set up from the first one's effects table by
:func:`adapter_configs`). Each source run with an inflection layer gives two runs that start from
its stored ``base`` weights (``finetune.from_run``: the same weights a run with its seed and
pre-training config would reach, as the probes do not touch the random streams, without training
them again) and adapt them to the same target with LoRA only (rank ``adapter.rank``
on the ``adapter.projections`` of one block, everything else frozen; same number of adapted blocks
and parameters in both): ``placement`` = ``inflection`` at the inflection layer, ``control`` at the
control block. Their probes are ``eval`` only. The outcome is the held-out slow-format loss
``test_loss_slow`` (teacher-forced, the ``eval`` probe) at the last fine-tuning step; a diverged or
failed run keeps its row with outcome NaN, so its seed drops out of the pairs that need it.

- per source length, the benefit = outcome(control) − outcome(inflection), paired by seed (> 0: the
  adapter at the inflection layer reaches a lower target loss);
- the claim's row: long − short of the benefit, paired by seed (paired t-test with a bootstrap CI,
  :func:`analysis_lib.stats.compare.compare_conditions`), together with the long source's own
  benefit (the claim says the adapter *helps* the over-trained source, and more): yes when both
  95% CIs lie above 0 with p < 0.05 (the benefit's p Holm-adjusted over the two lengths), no when
  either lies below 0 with p < 0.05, inconclusive otherwise; not tested when stage 1 located no
  inflection layer, when every adapter run diverged or failed, or with fewer than 2 paired seeds.
  (The first version of this rule read the difference alone; the study's `full` render then gave
  "yes" with a negative benefit at both lengths, a reading the claim's words do not allow.)
- the control block is chosen by gradient drop, not depth, so in a run where the inflection layer
  is a late block and the control an early one, the comparison is also one of depth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from ..activations import Capture, delta_cka_shared_pca, residual_blocks
from ..lm.tasks import encode, task_splits
from ..lm.training import build_lm
from ..stats.compare import compare_conditions
from ..stats.verdicts import NOT_TESTED, verdict_row
from . import inflection_adapters as _adapters

SOURCE = "Wang 2025, inflection layers (claim 15)"
# stage 2 (the adapter comparison), re-exported so that the notebook reads one module
adapter_configs, adapter_outcomes, adapter_tests = (_adapters.adapter_configs, _adapters.adapter_outcomes,
                                                    _adapters.adapter_tests)
check_adapter, adapter_row, plot_adapter_outcomes = (_adapters.check_adapter, _adapters.adapter_row,
                                                      _adapters.plot_adapter_outcomes)
DIAGNOSTICS = ("saturation", "act_grad_drop", "log_param_grad", "delta_cka")


def _block(layer: str) -> int | None:
    parts = layer.split(".")
    return int(parts[1]) if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit() else None


@torch.no_grad()
def block_outputs(model: torch.nn.Module, tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """Block name -> its output on ``tokens`` (N, T), flattened to (N·T, d) float64."""
    model.eval()
    capture = Capture(model, blocks=residual_blocks(model))
    with capture():
        model(tokens)
    return {name: h.reshape(-1, h.shape[-1]).double().numpy() for name, h in capture.hidden.items()}


def run_delta_cka(config, base: dict, tuned: dict, n_problems: int) -> dict[int, float]:
    """Block index -> ΔCKA of its outputs at the base vs tuned weights on held-out target-format problems."""
    problems = task_splits(config.task)[1].subset(slice(0, n_problems))
    tokens = encode(problems, "slow").tokens
    before, after = block_outputs(build_lm(config, base), tokens), block_outputs(build_lm(config, tuned), tokens)
    return {_block(name): float(delta_cka_shared_pca(before[name], after[name])["delta"]) for name in before}


def run_diagnostics(run: pd.DataFrame, train_steps: int) -> pd.DataFrame:
    """Per block of one run: ``saturation``, ``act_grad_drop``, ``log_param_grad`` over adaptation steps."""
    sub = run[run["step"] > train_steps]
    blocks = sub.assign(block=sub["layer"].map(_block)).dropna(subset=["block"])
    blocks = blocks.assign(block=blocks["block"].astype(int))
    out = {}
    ent = blocks[(blocks["metric"] == "attn_entropy_norm") & blocks["layer"].str.endswith(".attn")]
    out["saturation"] = 1.0 - ent.groupby("block")["value"].mean()
    grads = blocks[(blocks["metric"] == "act_grad_norm") & (blocks["layer"].str.count(r"\.") == 1)]
    log_g = np.log(grads.pivot_table(index="step", columns="block", values="value"))
    out["act_grad_drop"] = (log_g - log_g.shift(1, axis=1)).mean()
    params = blocks[(blocks["metric"] == "grad_norm") & (blocks["layer"].str.count(r"\.") >= 2)]
    sq = params.assign(sq=params["value"] ** 2).groupby(["step", "block"])["sq"].sum()
    out["log_param_grad"] = np.log(np.sqrt(sq)).groupby("block").mean()
    table = pd.DataFrame(out)
    table.index.name = "block"
    return table.reset_index()


def diagnostics_table(result, run_ids: list[str], n_problems: int) -> pd.DataFrame:
    """Tidy ``run_id, source_steps, seed, block, metric, value`` of every finished source run."""
    frames = []
    for rid in run_ids:
        config = result.configs[rid]
        run = result.metrics[result.metrics["run_id"] == rid]
        diag = run_diagnostics(run, config.train.steps)
        cka = run_delta_cka(config, result.store.load_checkpoint(rid, "base"),
                            result.store.load_checkpoint(rid, "tuned"), n_problems)
        diag["delta_cka"] = diag["block"].map(cka)
        long = diag.melt(id_vars="block", var_name="metric", value_name="value")
        frames.append(long.assign(run_id=rid, source_steps=config.train.steps, seed=config.seed))
    cols = ["run_id", "source_steps", "seed", "block", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def run_effects(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per run: the inflection layer and the effects of the module docstring (tidy ``metric, value``)."""
    rows = []
    for (rid, steps, seed), d in diagnostics.groupby(["run_id", "source_steps", "seed"], sort=False):
        wide = d.pivot(index="block", columns="metric", values="value")
        later = wide[wide.index >= 1].dropna(subset=["act_grad_drop"])
        effects = {"max_saturation": float(wide["saturation"].max())}
        if len(later) >= 2:
            infl = int(later["act_grad_drop"].idxmax())
            rest = later.drop(index=infl)
            effects.update(inflection_layer=float(infl),
                           control_layer=float(rest["act_grad_drop"].idxmin()),
                           saturation_drop_rho=float(sps.spearmanr(later["saturation"], later["act_grad_drop"])[0]),
                           param_grad_gap=float(later.loc[infl, "log_param_grad"] - rest["log_param_grad"].mean()),
                           delta_cka_gap=float(later.loc[infl, "delta_cka"] - rest["delta_cka"].mean()))
        rows += [{"run_id": rid, "source_steps": steps, "seed": seed, "layer": "model", "metric": m, "value": v}
                 for m, v in effects.items()]
    return pd.DataFrame(rows, columns=["run_id", "source_steps", "seed", "layer", "metric", "value"])


def _one_sample(claim: str, values: pd.Series, name: str, expected: str) -> dict:
    from .normalisation_inflection import one_sample_row

    return {**one_sample_row(claim, values, name, expected, unit="runs (both sources, every seed)"), "source": SOURCE}


def verdict_rows(effects: pd.DataFrame, *, n_boot: int, adapter: pd.DataFrame | None = None) -> list[dict]:
    """The rows of claim 15 by the rules of the module docstring.

    ``adapter``: the stage-2 outcomes (:func:`adapter_outcomes`); None: the adapter row is not tested (not run).
    """
    by = lambda metric: effects[effects["metric"] == metric]["value"]  # noqa: E731
    sat = effects[effects["metric"] == "max_saturation"]
    tests = compare_conditions(sat, "source_steps", n_boot=n_boot) if sat["source_steps"].nunique() == 2 else None
    if tests is not None and len(tests):
        over = verdict_row("Over-trained sources saturate more than under-trained ones", SOURCE, tests.iloc[0],
                           "Δ largest block saturation (long − short)", "positive")
    else:
        over = {"claim": "Over-trained sources saturate more than under-trained ones", "source": SOURCE,
                "measured": "no paired short/long sources", "n": 0, "reproduced": NOT_TESTED}
    first = _one_sample("Adaptation gives inflection layers: saturated attention where the activation gradient "
                        "drops steeply", by("saturation_drop_rho"), "Spearman ρ(saturation, gradient drop)",
                        "positive")
    largest = by("max_saturation").max() if len(by("max_saturation")) else float("nan")
    first["measured"] += f"; largest block saturation 1 − H/log T = {largest:.3g} (1: one-hot attention)"
    return [first,
            _one_sample("Parameter gradients are suppressed at the inflection layer", by("param_grad_gap"),
                        "log ‖g‖ at the inflection layer − elsewhere", "negative"),
            _one_sample("The representation changes mostly elsewhere (ΔCKA lower at the inflection layer)",
                        by("delta_cka_gap"), "ΔCKA at the inflection layer − elsewhere", "negative"),
            over,
            adapter_row(adapter, n_boot=n_boot)]
