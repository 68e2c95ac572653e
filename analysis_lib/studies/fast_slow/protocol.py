"""Study 02's protocol: the conditions, per-example gradient spectra cached per run, accuracy gates.

Claims 1 and 2 of ``docs/claims.md`` (Li et al., "What Happened in LLMs Layers when Trained for
Fast vs. Slow Thinking: A Gradient Perspective"; "How Instruction and Reasoning Data shape
Post-Training"). For every run of the study (one seed, see :mod:`analysis_lib.lm.training`) and every
starting point (:data:`CHECKPOINTS`: ``init``, the weights rebuilt from the seed; ``base``, after
pre-training on both formats; ``tuned``, after fine-tuning) the same ``n_problems`` held-out
problems are answered in each :data:`CONDITIONS`:

- ``fast``: the answer alone; ``slow``: the worked steps, then the answer (the clean response);
- ``answer_only``: the slow sequence with the loss on its answer tokens alone (as many loss
  tokens as ``fast``: separates "fewer loss tokens" from "no reasoning");
- ``irrelevant``: steps of another problem; ``subtle``: one wrong digit in one step;
- ``corrupted``: ceil(corrupt_fraction × n_digits) wrong steps (the quality axis, clean = slow).

Each example's loss is the cross-entropy averaged over its loss tokens (``reduction = "mean"``);
the statistics of :func:`analysis_lib.gradients.spectra.gradient_spectra` of every block weight matrix
are computed for it. The token-summed loss of an example with R loss tokens is R times the
token-averaged one, so its gradient is R times larger: nuclear, spectral and Frobenius norms scale
by R, effective and stable rank do not change. :func:`with_token_sums` derives the ``"sum"`` rows
that way instead of recomputing them (tested against a direct computation).

Caching: :func:`spectra_table` reads each run's table from the run store and computes the missing
ones as one cached task per run (:mod:`analysis_lib.runs.derived`) through the grid's executor,
so seeds run in parallel processes, one torch thread each.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from ...gradients.spectra import STATISTICS, gradient_spectra
from ...lm.config import LMRunConfig
from ...lm.tasks import Batch, Problems, encode, task_splits
from ...lm.training import build_lm
from ...lm.transformer import matrix_names
from ...runs.derived import Analysis, derive
from ...runs.execute import torch_threads
from ...runs.grid import GridResult
from ...validation import ConfigError

TITLE = "Fast vs slow thinking: per-layer gradients of a tiny transformer"
QUESTION = ("Do fast (answer-only) responses give larger per-layer gradients and cross-layer differences than slow "
            "(worked) ones, do slow-thinking gradients separate correct from wrong reasoning, and does the effective "
            "rank separate data quality better than the nuclear norm?")

CONDITIONS = ("fast", "slow", "answer_only", "irrelevant", "subtle", "corrupted")
CHECKPOINTS = ("init", "base", "tuned")
SCALED = ("nuclear_norm", "spectral_norm", "frobenius_norm")  # norms: proportional to the loss
SPECTRA_COLUMNS = ["run_id", "seed", "checkpoint", "condition", "reduction", "example", "layer", "projection",
                   "statistic", "value"]
DERIVED_NAME = "fastslow_spectra"
ANALYSIS_VERSION = 1  # bump when the statistics computed here change
CHUNK_SIZE = 50  # examples per forward/backward pass


def check_parameters(config: LMRunConfig, *, n_problems, statistic, learned, n_boot) -> None:
    """Raise ConfigError naming the first bad study parameter (before any training).

    Args:
        config: the study's base run (its ``eval`` probe gives the accuracies).
        n_problems: held-out problems measured, 2 .. task.n_test. statistic: one of
            :data:`analysis_lib.gradients.spectra.STATISTICS`. learned: accuracy threshold in [0, 1].
        n_boot: bootstrap resamples, >= 1.
    """
    def bad_int(value, low):
        return isinstance(value, bool) or not isinstance(value, int) or value < low

    if bad_int(n_problems, 2) or n_problems > config.task.n_test:
        raise ConfigError(f"invalid parameter n_problems={n_problems!r}: must be an integer from 2 to "
                          f"task.n_test, here {config.task.n_test}")
    if statistic not in STATISTICS:
        raise ConfigError(f"invalid parameter statistic={statistic!r}: one of {list(STATISTICS)}")
    if isinstance(learned, bool) or not isinstance(learned, (int, float)) or not 0 <= learned <= 1:
        raise ConfigError(f"invalid parameter learned={learned!r}: an accuracy between 0 and 1")
    if bad_int(n_boot, 1):
        raise ConfigError(f"invalid parameter n_boot={n_boot!r}: must be an integer >= 1")
    if "eval" not in config.probes.names:
        raise ConfigError(f"invalid parameter probes.names={list(config.probes.names)!r}: must include 'eval', "
                          "which records the accuracy of each model on both formats")


def held_out_problems(config: LMRunConfig, n_problems: int) -> Problems:
    """The first ``n_problems`` held-out problems of the run's task (the same for every seed)."""
    return task_splits(config.task)[1].subset(slice(0, n_problems))


def condition_batch(problems: Problems, condition: str) -> Batch:
    """``problems`` answered as ``condition`` (one of :data:`CONDITIONS`), mask = its loss tokens."""
    if condition == "answer_only":
        return encode(problems, "slow").answer_only()
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
    return encode(problems, condition)


def loss_token_counts(problems: Problems) -> pd.DataFrame:
    """Number of loss tokens of every example in every condition: ``condition, example, n_tokens``."""
    frames = [pd.DataFrame({"condition": c, "example": np.arange(len(problems)),
                            "n_tokens": condition_batch(problems, c).mask.sum(dim=1).numpy()})
              for c in CONDITIONS]
    return pd.concat(frames, ignore_index=True)


def model_spectra(model: torch.nn.Module, problems: Problems, reduction: str = "mean",
                  dtype: torch.dtype | None = None) -> pd.DataFrame:
    """Statistics of every example's gradient of every block matrix, in every condition.

    Args:
        model: a :class:`~analysis_lib.lm.transformer.TinyTransformer`. problems: N problems.
        reduction: ``"mean"`` or ``"sum"`` of each example's loss over its loss tokens.
        dtype: dtype of the SVDs (None: the model's).

    Returns:
        Tidy ``condition, example, layer, projection, statistic, value``.
    """
    modules = [name.rsplit(".", 1)[0] for name, _, _ in matrix_names(model)]
    frames = []
    for condition in CONDITIONS:
        batch = condition_batch(problems, condition)
        table = gradient_spectra(model, batch.tokens, batch.targets, batch.mask, reduction=reduction,
                                 modules=modules, chunk_size=CHUNK_SIZE, dtype=dtype)
        frames.append(table.assign(condition=condition))
    out = pd.concat(frames, ignore_index=True)
    return out[["condition", "example", "layer", "projection", "statistic", "value"]]


def run_spectra(config: LMRunConfig, checkpoints: dict[str, dict], n_problems: int) -> pd.DataFrame:
    """Token-averaged spectra of one run at each of :data:`CHECKPOINTS` (what is cached per run).

    Args:
        config: the run. checkpoints: ``base`` and ``tuned`` state dicts (``init`` is rebuilt
            from the seed). n_problems: held-out problems measured.

    Returns:
        Tidy ``checkpoint, condition, example, layer, projection, statistic, value``, strings
        as categoricals (compact to send from a worker).
    """
    problems = held_out_problems(config, n_problems)
    frames = []
    with torch_threads(int(os.environ.get("ANALYSIS_LIB_THREADS", "1"))):
        for checkpoint in CHECKPOINTS:
            model = build_lm(config, None if checkpoint == "init" else checkpoints[checkpoint])
            frames.append(model_spectra(model, problems).assign(checkpoint=checkpoint))
    out = pd.concat(frames, ignore_index=True)
    out = out[["checkpoint", "condition", "example", "layer", "projection", "statistic", "value"]]
    return out.astype({c: "category" for c in ("checkpoint", "condition", "layer", "projection", "statistic")})


def with_token_sums(spectra: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Token-averaged spectra (``reduction = "mean"``) plus the token-summed ones derived from them.

    Summing instead of averaging multiplies an example's gradient by its number of loss tokens R:
    the :data:`SCALED` norms are multiplied by R, the ranks stay.

    Args:
        spectra: tidy with ``condition, example, value`` (and any other columns), token-averaged.
        counts: from :func:`loss_token_counts`.

    Returns:
        ``spectra`` with a ``reduction`` column, ``"mean"`` rows then ``"sum"`` rows.
    """
    mean = spectra.assign(reduction="mean")
    summed = mean.merge(counts, on=["condition", "example"], how="left", validate="many_to_one")
    scale = np.where(summed["statistic"].isin(SCALED), summed.pop("n_tokens").to_numpy(np.float64), 1.0)
    summed["value"] = summed["value"].to_numpy(np.float64) * scale
    summed["reduction"] = "sum"
    return pd.concat([mean, summed[mean.columns]], ignore_index=True)


def spectra_params(n_problems: int) -> dict:
    """What a cached table depends on besides the run itself (the analysis's version is in its key)."""
    return {"n_problems": n_problems, "checkpoints": list(CHECKPOINTS), "conditions": list(CONDITIONS)}


def spectra_task(runs: GridResult, run_ids: list[str], n_problems: int, **key_only) -> pd.DataFrame:
    """:func:`run_spectra` of one stored run, as a task of :func:`analysis_lib.runs.derived.derive`.

    ``key_only``: the checkpoints and conditions of :func:`spectra_params`, which this module
    fixes; they are in the key so that changing them computes new tables.
    """
    rid = run_ids[0]
    checkpoints = {k: runs.store.load_checkpoint(rid, k) for k in ("base", "tuned")}
    return run_spectra(runs.configs[rid], checkpoints, n_problems).assign(run_id=rid)


SPECTRA = Analysis(DERIVED_NAME, "analysis_lib.studies.fast_slow.protocol:spectra_task", version=ANALYSIS_VERSION)


def spectra_table(result: GridResult, n_problems: int, *, executor=None) -> pd.DataFrame:
    """Per-example spectra of every finished run of the grid, from the cache or computed.

    Missing tables are computed as one cached task per run (:data:`SPECTRA`) on ``executor``
    (None: in-process), so seeds run in parallel processes; diverged and failed runs have no
    ``tuned`` checkpoint and are left out.

    Returns:
        Tidy :data:`SPECTRA_COLUMNS`, token-averaged and token-summed (:func:`with_token_sums`).
    """
    finished = result.run_ids(status="finished")
    if not finished:
        return pd.DataFrame(columns=SPECTRA_COLUMNS)
    tables = derive(SPECTRA, result, [[rid] for rid in finished], params=spectra_params(n_problems),
                    executor=executor, labels=False)
    frames = []
    for rid, table in tables.groupby("run_id", sort=False):
        config = result.configs[rid]
        counts = loss_token_counts(held_out_problems(config, n_problems))
        frames.append(with_token_sums(table.drop(columns="run_id").astype({"condition": str}), counts)
                      .assign(run_id=rid, seed=config.seed))
    out = pd.concat(frames, ignore_index=True)[SPECTRA_COLUMNS]
    return out.astype({c: str for c in ("checkpoint", "condition", "layer", "projection", "statistic")})


def accuracy_table(result: GridResult, threshold: float) -> pd.DataFrame:
    """Greedy answer accuracy on the held-out problems per run, checkpoint and format.

    ``base`` is read at the end of pre-training, ``tuned`` at the end of fine-tuning (the
    ``test_acc_{fast,slow}`` metrics of :mod:`analysis_lib.lm.training`). ``learned`` is True when both
    formats of that model reach ``threshold``: only then are its statistics comparable.

    Returns:
        ``run_id, seed, checkpoint, format, accuracy, learned`` (two rows per run and checkpoint).
    """
    rows, metrics = [], result.metrics
    for rid in result.runs["run_id"]:
        config = result.configs[rid]
        sub = metrics[metrics["run_id"] == rid] if len(metrics) else metrics
        for checkpoint, step in (("base", config.train.steps), ("tuned", config.train.steps + config.finetune.steps)):
            for fmt in ("fast", "slow"):
                hit = sub[(sub["step"] == step) & (sub["metric"] == f"test_acc_{fmt}")]["value"]
                rows.append({"run_id": rid, "seed": config.seed, "checkpoint": checkpoint, "format": fmt,
                             "accuracy": float(hit.iloc[-1]) if len(hit) else np.nan})
    table = pd.DataFrame(rows, columns=["run_id", "seed", "checkpoint", "format", "accuracy"])
    ok = table.groupby(["run_id", "checkpoint"])["accuracy"].transform(lambda a: bool((a >= threshold).all()))
    table["learned"] = ok.astype(bool)
    return table.drop_duplicates(["run_id", "checkpoint", "format"], ignore_index=True)


def comparable(spectra: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``spectra`` whose model learned both formats; ``init`` (the baseline) is always kept."""
    learned = accuracy.drop_duplicates(["run_id", "checkpoint"])[["run_id", "checkpoint", "learned"]]
    out = spectra.merge(learned, on=["run_id", "checkpoint"], how="left")
    keep = (out["checkpoint"] == "init") | out["learned"].eq(True)
    return out[keep].drop(columns="learned").reset_index(drop=True)


def exclusion_note(accuracy: pd.DataFrame, threshold: float) -> str:
    """One sentence for the report: which trained models are excluded from the verdict and why."""
    models = accuracy.drop_duplicates(["run_id", "checkpoint"])
    bad = models[~models["learned"]]
    if bad.empty:
        return (f"All {len(models)} trained models (seed × checkpoint) reached {threshold:.0%} greedy accuracy "
                "on both formats; none is excluded.")
    names = ", ".join(f"seed {r.seed} {r.checkpoint}" for r in bad.itertuples())
    return (f"{len(bad)} of {len(models)} trained models did not reach {threshold:.0%} greedy accuracy on the "
            f"fast or the slow format ({names}): their gradient statistics are not comparable and are excluded "
            "from the tests and the verdict (their initialisation baselines are kept).")
