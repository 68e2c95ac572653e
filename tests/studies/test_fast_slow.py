"""Study 02, fast vs slow thinking (analysis_lib.studies.fast_slow): its protocol, contrasts and verdict rows.

Derived token sums against a direct computation, the conditions' loss tokens, parameter checks by name, spectra
computed once per run through the executor then read from the store, cross-layer spreads, summary contrasts and
the verdict read off them, quality effects and separations, the accuracy gate, and the block noise profile. The
statistics these rest on (AUROC, paired d_z, the two-level bootstrap) are tested in tests/stats/test_hierarchical.py.
"""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis_lib.lm.config import LMRunConfig
from analysis_lib.lm.training import build_lm
from analysis_lib.runs.execute import run_grid
from analysis_lib.runs.grid import GridResult, expand_grid
from analysis_lib.runs.store import RunStore, run_id
from analysis_lib.stats.verdicts import verdict_table
from analysis_lib.studies import fast_slow
from analysis_lib.studies.fast_slow import contrasts as S
from analysis_lib.studies.fast_slow import protocol as F
from analysis_lib.training.config import config_from_dict, with_overrides
from analysis_lib.validation import ConfigError

TINY = {"task": {"n_digits": 2, "n_train": 60, "n_test": 12},
        "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 24},
        "train": {"steps": 8, "batch_size": 16, "warmup_steps": 2, "lr": 0.01},
        "finetune": {"steps": 4}, "probes": {"names": ["eval"], "every": 4, "eval_problems": 6}}


@pytest.fixture
def tiny():
    return config_from_dict(TINY, LMRunConfig)


def test_token_summed_statistics_equal_a_direct_computation(tiny):
    model = build_lm(with_overrides(tiny, {"train.dtype": "float64"}))
    problems = F.held_out_problems(tiny, 5)
    mean = F.model_spectra(model, problems, "mean")
    derived = F.with_token_sums(mean, F.loss_token_counts(problems))
    direct = F.model_spectra(model, problems, "sum")
    keys = ["condition", "example", "layer", "projection", "statistic"]
    got = derived[derived["reduction"] == "sum"].set_index(keys)["value"].sort_index()
    want = direct.set_index(keys)["value"].sort_index()
    assert len(got) == len(want) == 5 * len(F.CONDITIONS) * 2 * 6 * 5
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index].to_numpy(), rtol=1e-9)
    # The scaling is not trivial: summed norms differ from averaged ones by the token count.
    nuclear = (mean["statistic"] == "nuclear_norm") & (mean["condition"] == "slow")
    ratio = want.loc[("slow", 0, "blocks.0", "q", "nuclear_norm")] / mean[nuclear].iloc[0]["value"]
    assert ratio == pytest.approx(9 * 2 + 2 + 2)


def test_conditions_differ_only_where_they_should(tiny):
    problems = F.held_out_problems(tiny, 4)
    counts = F.loss_token_counts(problems).groupby("condition")["n_tokens"].unique()
    assert counts["fast"].tolist() == [4] and counts["answer_only"].tolist() == [4]
    assert all(counts[c].tolist() == [22] for c in ("slow", "irrelevant", "subtle", "corrupted"))
    slow, answer = F.condition_batch(problems, "slow"), F.condition_batch(problems, "answer_only")
    assert torch.equal(slow.tokens, answer.tokens) and torch.equal(answer.mask, slow.answer_mask)
    subtle = F.condition_batch(problems, "subtle")
    assert ((subtle.targets != slow.targets).sum(dim=1) == 1).all()  # one wrong digit per problem
    with pytest.raises(ValueError, match="unknown condition"):
        F.condition_batch(problems, "medium")


@pytest.mark.parametrize("name, value", [("n_problems", 1), ("n_problems", 13), ("statistic", "trace"),
                                         ("learned", 1.5), ("n_boot", 0)])
def test_bad_study_parameters_are_refused_by_name(tiny, name, value):
    good = {"n_problems": 12, "statistic": "nuclear_norm", "learned": 0.9, "n_boot": 10}
    with pytest.raises(ConfigError, match=f"invalid parameter {name}="):
        F.check_parameters(tiny, **{**good, name: value})
    with pytest.raises(ConfigError, match="probes.names"):
        F.check_parameters(with_overrides(tiny, {"probes.names": []}), **good)


class _RecordingExecutor:
    """Runs each task at once in this process and records what was submitted."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, analysis, runs, group, *args):  # derive_task's arguments
        self.submitted.append(runs.configs[group[0]].seed)
        args = (analysis, runs, group, *args)
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future


def test_spectra_are_computed_once_per_run_through_the_executor_then_read_from_the_store(tiny, store_root):
    configs = expand_grid(tiny, {}, [0, 1])
    result = run_grid(configs, store_root=store_root, progress=False)
    executor = _RecordingExecutor()
    first = F.spectra_table(result, 4, executor=executor)
    assert sorted(executor.submitted) == [0, 1]
    assert list(first.columns) == F.SPECTRA_COLUMNS
    assert set(first["checkpoint"]) == set(F.CHECKPOINTS) and set(first["reduction"]) == {"mean", "sum"}
    assert len(first) == 2 * 3 * len(F.CONDITIONS) * 2 * 4 * 2 * 6 * 5  # runs ckpts conds reductions ...
    cached = F.spectra_table(result, 4, executor=_FailingExecutor())
    pd.testing.assert_frame_equal(first, cached)
    in_process = F.spectra_table(result, 3)  # other params: computed here
    assert in_process["example"].max() == 2
    # The base checkpoint is the stored one: its spectra differ from init's.
    nuc = first[(first["statistic"] == "nuclear_norm") & (first["reduction"] == "mean")]
    assert not np.allclose(nuc[nuc["checkpoint"] == "init"]["value"], nuc[nuc["checkpoint"] == "base"]["value"])


class _FailingExecutor:
    def submit(self, *args):
        pytest.fail("a cached table was recomputed")


def _means(ratio: float, seeds=(0, 1, 2), noise: float = 0.05) -> pd.DataFrame:
    """Hand-made seed means: fast = ratio × slow in every matrix, slow profile 1, 2, 4 over layers."""
    rng, rows = np.random.default_rng(4), []
    for seed in seeds:
        for ck in ("init", "base", "tuned"):
            for layer, level in zip(("blocks.0", "blocks.1", "blocks.2"), (1.0, 2.0, 4.0)):
                for proj in ("q", "up"):
                    slow = level * math.exp(rng.normal(0, noise))
                    for cond, value in (("slow", slow), ("fast", ratio * slow), ("answer_only", slow)):
                        rows.append({"run_id": f"r{seed}", "seed": seed, "checkpoint": ck, "condition": cond,
                                     "reduction": "mean", "layer": layer, "projection": proj,
                                     "statistic": "nuclear_norm", "value": value})
    return pd.DataFrame(rows)


def test_spread_is_the_mad_of_each_seeds_mean_profile():
    means = _means(3.0, seeds=(0,), noise=0.0)
    spread = S.spread_table(means)
    one = spread[(spread["checkpoint"] == "base") & (spread["condition"] == "slow") & (spread["projection"] == "q")
                 & (spread["segment"] == "all")].set_index("measure")["value"]
    assert one["mad"] == pytest.approx((1 + 2) / 2) and one["relative_mad"] == pytest.approx(1.5 / (7 / 3))
    fast = spread[(spread["condition"] == "fast") & (spread["segment"] == "all") & (spread["measure"] == "mad")]
    assert fast["value"].to_numpy() == pytest.approx(4.5)  # 3 × the slow MAD: a difference of scale only


def test_summary_contrasts_are_mean_log_ratios_and_the_verdict_reads_them():
    means = _means(2.0)
    spreads = S.spread_table(means)
    summary = S.summary_tests(means, spreads, "nuclear_norm", n_boot=200)
    row = S.find(summary, "mean log nuclear_norm", "fast - slow [checkpoint=base, reduction=mean]")
    assert row["estimate"] == pytest.approx(math.log(2.0)) and row["n"] == 3
    rel = S.find(summary, "mean log relative_mad", "fast - slow [checkpoint=base, reduction=mean]")
    assert rel["estimate"] == pytest.approx(0.0, abs=1e-12)  # a pure scale change leaves the relative MAD
    gap = S.find(summary, "fast - slow mean log nuclear_norm", "tuned - base")
    assert gap["estimate"] == pytest.approx(0.0, abs=1e-12)
    matrix = S.matrix_tests(means, "fast", "slow", "nuclear_norm", n_boot=200)
    assert len(matrix) == 3 * 6 and (matrix["estimate"] > 0).all()
    no_scores = pd.DataFrame(columns=["run_id", "seed", "checkpoint", "condition", "example", "value"])
    separation = S.separation_table(no_scores, ["irrelevant"], n_boot=10)
    quality = S.quality_effects(no_scores, no_scores, n_boot=10)
    assert separation.empty and quality.empty
    verdict = verdict_table(fast_slow.verdict_rows(summary, matrix, separation, quality))
    rows = verdict.set_index("claim")["reproduced"]
    assert rows.iloc[0] == "yes" and "×2 [2" in verdict["measured"].iloc[0]
    assert rows.iloc[3] == "yes"  # the ratio is there at init as well: the baseline row says so
    assert rows.iloc[4] == "inconclusive"  # ... so nothing grows with training
    assert rows.iloc[6] == "inconclusive"  # relative MAD unchanged
    assert verdict["measured"].str.contains("no comparable").sum() == 6  # token sums, AUROC and quality rows


def test_quality_effects_have_the_sign_and_size_of_the_data():
    rng, rows = np.random.default_rng(5), []
    for seed in range(3):
        for example in range(60):
            base = rng.normal()
            for cond, shift in (("slow", 0.0), ("corrupted", 1.0)):
                rows.append({"run_id": f"r{seed}", "seed": seed, "checkpoint": "base", "condition": cond,
                             "example": example, "value": base + shift * 0.5 + rng.normal(0, 0.5)})
    nuclear = pd.DataFrame(rows)
    erank = nuclear.assign(value=-nuclear["value"] * 3)  # lower rank when corrupted; same separation
    table = S.quality_effects(nuclear, erank, n_boot=300)
    by = table.set_index("metric")
    assert by.loc["d_z nuclear_norm", "estimate"] == pytest.approx(0.5 / math.sqrt(0.5), rel=0.3)
    assert by.loc["d_z effective_rank", "estimate"] == pytest.approx(-by.loc["d_z nuclear_norm", "estimate"])
    assert by.loc["erank minus nuclear separation", "estimate"] == pytest.approx(0.0, abs=1e-9)
    sep = S.separation_table(nuclear, ["corrupted"], n_boot=300)
    assert sep["ci_low"].iloc[0] > 0.5 and sep["n"].iloc[0] == 3


def test_accuracy_flags_models_that_did_not_learn_and_they_are_excluded(tiny, store_root):
    configs = expand_grid(tiny, {}, [0, 1])
    rows = []
    for config, (fast_base, fast_tuned) in zip(configs, ((0.95, 0.5), (0.99, 0.97))):
        rid = run_id(config)
        for step, fast in ((8, fast_base), (12, fast_tuned)):
            rows += [{"run_id": rid, "step": step, "metric": "test_acc_fast", "value": fast},
                     {"run_id": rid, "step": step, "metric": "test_acc_slow", "value": 1.0}]
    runs = pd.DataFrame({"run_id": [run_id(c) for c in configs], "seed": [c.seed for c in configs],
                         "status": "finished"})
    result = GridResult(pd.DataFrame(rows), runs, {run_id(c): c for c in configs}, RunStore(store_root))
    accuracy = F.accuracy_table(result, 0.9)
    models = accuracy.drop_duplicates(["seed", "checkpoint"]).set_index(["seed", "checkpoint"])["learned"]
    assert models.to_dict() == {(0, "base"): True, (0, "tuned"): False, (1, "base"): True, (1, "tuned"): True}
    spectra = pd.DataFrame([{"run_id": run_id(c), "checkpoint": ck, "value": 1.0}
                            for c in configs for ck in F.CHECKPOINTS])
    kept = F.comparable(spectra, accuracy)
    assert len(kept) == 5 and not ((kept["run_id"] == run_id(configs[0])) & (kept["checkpoint"] == "tuned")).any()
    note = F.exclusion_note(accuracy, 0.9)
    assert note.startswith("1 of 4 trained models") and "seed 0 tuned" in note


def test_block_noise_profile_is_a_ratio_of_means_over_seeds():
    rows = []
    for seed, (signal, noise) in enumerate([(1.0, 4.0), (-0.5, 2.0)]):  # one batch's signal may be < 0
        for metric, value in (("grad_signal", signal), ("grad_var_trace", noise), ("grad_snr", signal / noise)):
            rows.append({"seed": seed, "step": 10, "layer": "blocks.1.attn.q", "metric": metric, "value": value})
        rows.append({"seed": seed, "step": 10, "layer": "model", "metric": "grad_signal", "value": 9.0})
    profile = S.block_noise_profile(pd.DataFrame(rows))
    assert profile.to_dict("records") == [
        {"step": 10, "layer": "blocks.1", "projection": "q", "snr": pytest.approx(0.25 / 3.0), "n": 2}]
    assert S.block_noise_profile(pd.DataFrame(rows[:0], columns=["seed", "step", "layer", "metric", "value"])).empty


def test_contrast_tests_are_the_direct_tables_and_computed_once_per_gate(tiny, store_root, monkeypatch):
    from analysis_lib.studies.fast_slow import cached

    result = run_grid(expand_grid(tiny, {}, [0, 1]), store_root=store_root, progress=False)
    spectra = F.spectra_table(result, 4)
    direct = cached.contrast_tables(spectra, F.accuracy_table(result, 0.0), statistic="nuclear_norm", n_boot=50)
    got = cached.contrast_tests(result, n_problems=4, learned=0.0, statistic="nuclear_norm", n_boot=50)
    assert set(got) == set(cached.TABLES) and len(got["summary"]) and len(got["matrix"])
    for name in cached.TABLES:
        pd.testing.assert_frame_equal(got[name], direct[name], check_dtype=False)
    calls = []
    monkeypatch.setattr(cached, "contrast_tables", lambda *a, **k: calls.append(a) or direct)
    cached.contrast_tests(result, n_problems=4, learned=0.0, statistic="nuclear_norm", n_boot=50)
    assert calls == []  # read from the store
    cached.contrast_tests(result, n_problems=4, learned=0.5, statistic="nuclear_norm", n_boot=50)
    assert len(calls) == 1  # another gate: computed
