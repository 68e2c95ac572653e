"""Every study notebook, executed by papermill with its smoke parameters, writes what its report needs.

Also: bad parameters stop a study within seconds with a ConfigError naming the parameter, and the
same study run twice from an empty run store gives identical numbers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
import yaml

from analysis_lib.stats.results import RESULT_COLUMNS
from analysis_lib.stats.verdicts import OUTCOMES, VERDICT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STUDIES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))

# What each study must write besides summary.json and verdict.csv.
EXPECTED = {
    "00-your-own-model": {
        "figures": ["sharpness", "train_loss", "grad_norm", "hover_ratio", "slices", "lm_accuracy", "lm_grad_norm",
                    "sensitivity"],
        "tables": [],
    },
    "01-layer-dynamics": {
        "figures": ["grad_norm_over_training", "update_ratio_over_training", "rotation_over_training",
                    "layer_profile_mlp", "layer_profile_cnn", "optimizer_effects", "update_ratio_spread",
                    "rotation_vs_accuracy", "sensitivity"],
        "tables": ["optimizer_tests", "update_ratio_spread_tests", "rotation_accuracy_correlation",
                   "rotation_accuracy_within_optimizer", "update_ratio_mixed_model"],
    },
    "02-fast-vs-slow-thinking": {
        "figures": ["accuracy_over_training", "layer_profiles_mean", "layer_profiles_sum", "spread",
                    "score_distributions", "separation", "quality_effects", "gradient_noise", "sensitivity"],
        "tables": ["matrix_tests", "spread_tests", "separation", "quality_effects", "summary_tests"],
    },
    "03-hessian-spectrum": {
        "figures": ["top_eigenvalues", "spectral_density", "outliers_vs_classes", "gradient_overlap", "sensitivity"],
        "tables": ["outliers_classes_correlation", "bulk_width_tests"],
    },
    "04-edge-of-stability": {
        "figures": ["sharpness_gd", "loss_gd", "hover_ratio", "sharpness_sgd", "trace_sgd", "sharpness_warmup",
                    "sensitivity"],
        "tables": ["sgd_tests", "warmup_tests"],
    },
    "05-loss-landscape": {
        "figures": ["slices_batch", "maps_batch", "curvature_batch", "rescaling", "slices_residual", "maps_residual",
                    "sensitivity"],
        "tables": ["batch_tests", "residual_tests"],
    },
    "06-run-to-run-variance": {
        "figures": ["twin_distance", "interpolation_train_loss", "interpolation_test_acc", "barriers",
                    "correctness_rates", "explained_variance", "trajectory_projections", "sensitivity"],
        "tables": ["perturbation_time_tests", "matching_tests"],
    },
    "07-transformer-instabilities": {
        "figures": ["attention_logits", "log_z", "lr_sensitivity", "survival", "block_spread", "noise_spread",
                    "sensitivity"],
        "tables": ["instability_tests", "sensitivity_tests", "spread_tests"],  # divergence_tests: NaN if none diverged
    },
    "08-normalisation-and-inflection": {
        "figures": ["depth_profiles", "loss_curves", "inflection_diagnostics", "adapter_outcomes", "sensitivity"],
        "tables": ["norm_tests", "adapter_tests"],
    },
    "09-sharpness-and-generalisation": {
        "figures": ["test_error", "measures", "differences", "kendall", "measure_vs_error", "shift_criteria",
                    "sensitivity"],
        "tables": ["difference_tests", "kendall_tests", "shift_tests"],
    },
    "10-weights-and-phases": {
        "figures": ["alignment_over_training", "loss_over_training", "stable_rank_over_training",
                    "alignment_time_scaling", "snr_over_training", "information_plane", "compression", "sensitivity"],
        "tables": ["stable_rank_tests"],  # RESULT_COLUMNS tables only (phase_switches, compression are not)
    },
}

pytestmark = pytest.mark.notebook


def _smoke(study: str) -> dict:
    return yaml.safe_load((NOTEBOOKS / "params" / study / "smoke.yaml").read_text())


def _execute(study: str, out_dir: Path, data_dir: Path, **overrides) -> Path:
    """Run a study with its smoke parameters (plus overrides) in a kernel whose data dir is ``data_dir``."""
    os.environ["ANALYSIS_LIB_DATA"] = str(data_dir)  # inherited by the kernel process
    out_dir.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(NOTEBOOKS / f"{study}.ipynb"), str(out_dir / f"{study}.ipynb"),
                        parameters={**_smoke(study), **overrides, "output_dir": str(out_dir / study)},
                        cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3")
    return out_dir / study


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory, _isolated_data_dir):
    """Execute every study once (module-scoped: the checks below share the executions)."""
    out = tmp_path_factory.mktemp("smoke")
    try:
        return {study: _execute(study, out, _isolated_data_dir) for study in STUDIES}
    finally:
        os.environ["ANALYSIS_LIB_DATA"] = str(_isolated_data_dir)


def test_there_are_studies():
    assert STUDIES, "no study notebooks found in notebooks/"
    assert set(EXPECTED) <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_summary_and_verdict(smoke_outputs, study):
    folder = smoke_outputs[study]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["study"] == study and summary["title"] and summary["question"]
    assert summary["verdict"] and all(v["reproduced"] in OUTCOMES for v in summary["verdict"])
    assert sum(summary["runs"].values()) > 0
    verdict = pd.read_csv(folder / "verdict.csv")
    assert list(verdict.columns) == VERDICT_COLUMNS and len(verdict) == len(summary["verdict"])


@pytest.mark.parametrize("study", STUDIES)
def test_figures_are_real_pngs(smoke_outputs, study):
    folder = smoke_outputs[study]
    for name in EXPECTED.get(study, {}).get("figures", []):
        data = (folder / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name


@pytest.mark.parametrize("study", STUDIES)
def test_test_tables_are_complete(smoke_outputs, study):
    folder = smoke_outputs[study]
    for name in EXPECTED.get(study, {}).get("tables", []):
        table = pd.read_csv(folder / f"{name}.csv")
        assert list(table.columns) == list(RESULT_COLUMNS), name
        assert len(table) > 0 and table["estimate"].notna().all(), name
        tested = table.dropna(subset=["pvalue", "p_adj"])  # a mixed model's intercept is not adjusted
        assert (tested["p_adj"] >= tested["pvalue"] - 1e-15).all(), name


@pytest.mark.parametrize("study", STUDIES)
def test_every_no_says_whether_it_is_robust(smoke_outputs, study):
    folder = smoke_outputs[study]
    verdict = json.loads((folder / "summary.json").read_text())["verdict"]
    checked = [v for v in verdict if v["reproduced"] in ("no", "partly")]
    assert all(v["robustness"].startswith(("robust", "conditional", "fragile", "not checked"))
               for v in checked)
    assert checked or study != "03-hessian-spectrum"  # its smoke runs read "no" on claim 6
    assert all(v["power"] for v in verdict if v["reproduced"] == "inconclusive" and v["n"] > 1)
    grid = pd.read_csv(folder / "sensitivity.csv")
    assert grid["protocol"].any() and grid["choice"].nunique() >= 2  # the protocol and one choice at least


def test_same_study_twice_gives_identical_numbers(smoke_outputs, tmp_path, _isolated_data_dir):
    """A second execution from an empty run store retrains everything and must match exactly."""
    study = "01-layer-dynamics"
    try:
        again = _execute(study, tmp_path / "again", tmp_path / "fresh-data")
    finally:
        os.environ["ANALYSIS_LIB_DATA"] = str(_isolated_data_dir)
    for name in EXPECTED[study]["tables"] + ["verdict"]:
        pd.testing.assert_frame_equal(pd.read_csv(smoke_outputs[study] / f"{name}.csv"),
                                      pd.read_csv(again / f"{name}.csv"), check_exact=True)


BAD_PARAMETERS = [
    ("00-your-own-model", {"learning_rates": [0.1, -0.2]}, "learning_rates"),
    ("00-your-own-model", {"regression": {"model": {"name": "student", "widht": 8},
                                          "data": {"name": "teacher_student"}}}, "model.widht"),
    ("00-your-own-model", {"user_module": "missing.py"}, "user_module"),
    ("01-layer-dynamics", {"train": {"batch_size": 100, "steps": 40, "lr": -0.1}}, "train.lr"),
    ("01-layer-dynamics", {"arms": {**_smoke("01-layer-dynamics")["arms"],
                                    "main-sgd-mlp": {"train.optimizer": ["lion"]}}}, "train.optimizer"),
    ("01-layer-dynamics", {"model": {"kind": "transformer"}}, "model.kind"),
    ("01-layer-dynamics", {"seeds": []}, "seeds"),
    ("01-layer-dynamics", {"main_arms": ["nope"]}, "main_arms"),
    ("01-layer-dynamics", {"n_boot": 0}, "n_boot"),
    ("02-fast-vs-slow-thinking", {"n_problems": 1}, "n_problems"),
    ("03-hessian-spectrum", {"overlap_bar": 1.5}, "overlap_bar"),
    ("04-edge-of-stability", {"sgd_lr": 0.7}, "sgd_lr"),
    ("05-loss-landscape", {"small_batch": 7}, "small_batch"),
    ("06-run-to-run-variance", {"twin_seeds": [9]}, "twin_seeds"),
    ("07-transformer-instabilities", {"factor": 0.5}, "factor"),
    ("07-transformer-instabilities", {"arms": {**_smoke("07-transformer-instabilities")["arms"],
                                               "qk_norm": {"train.lr": [0.01, 0.1]}}}, "model.qk_norm"),
    ("08-normalisation-and-inflection", {"spike_factor": 1.0}, "spike_factor"),
    ("08-normalisation-and-inflection", {"adapter": {"rank": 2, "projections": ["q", "gate"]}}, "adapter.projections"),
    ("09-sharpness-and-generalisation", {"verdict_rho": 0.2}, "verdict_rho"),
    ("09-sharpness-and-generalisation", {"scenarios": {"parity": {"name": "sparse_parity", "parity_k": 30}}},
     "data.parity_k"),
    ("10-weights-and-phases", {"fraction": 0.6}, "fraction"),
    ("10-weights-and-phases", {"arms": {"scales": {"model.init_scale": [0.001, 1.0]},
                                        "sweep": {"data.noise": [0.05, 0.4]}}}, "data.noise"),
    ("10-weights-and-phases", {"phase_bins": [1, 30]}, "phase_bins"),
    ("10-weights-and-phases", {"snr_window": 2}, "snr_window"),
]


@pytest.mark.parametrize("study, overrides, name", BAD_PARAMETERS, ids=[f"{s[:2]}-{n}" for s, _, n in BAD_PARAMETERS])
def test_bad_parameter_fails_fast_with_a_clear_message(study, overrides, name, tmp_path, _isolated_data_dir):
    start = time.perf_counter()
    try:
        with pytest.raises(pm.PapermillExecutionError) as info:
            _execute(study, tmp_path / "out", tmp_path / "data", **overrides)
    finally:
        os.environ["ANALYSIS_LIB_DATA"] = str(_isolated_data_dir)
    assert info.value.ename == "ConfigError"
    assert name in info.value.evalue
    assert time.perf_counter() - start < 60  # kernel start and imports only
    assert not (tmp_path / "data" / "runs").exists(), "a run started before the bad parameter was caught"


HUGE_LR = 1e30  # every run's loss is non-finite within a few steps, under SGD and Adam alike


def _diverging(study: str) -> dict:
    """Overrides of the smoke parameters under which every run of ``study`` diverges."""
    smoke = _smoke(study)
    if study == "00-your-own-model":
        return {"learning_rates": [HUGE_LR], "lm_learning_rates": [HUGE_LR]}
    if study == "04-edge-of-stability":
        arms = {arm: {**grid, "train.lr": [HUGE_LR]} for arm, grid in smoke["arms"].items()}
        return {"arms": arms, "sgd_lr": HUGE_LR, "warmup_lr": HUGE_LR}
    if "arms" in smoke and any("train.lr" in grid for grid in smoke["arms"].values()):
        return {"arms": {arm: {**grid, "train.lr": [HUGE_LR]} for arm, grid in smoke["arms"].items()}}
    return {"train": {**smoke["train"], "lr": HUGE_LR}}


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_whose_runs_all_diverge_reports_not_tested(tmp_path, _isolated_data_dir, study):
    try:
        folder = _execute(study, tmp_path / "out", tmp_path / "data", **_diverging(study))
    finally:
        os.environ["ANALYSIS_LIB_DATA"] = str(_isolated_data_dir)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["runs"]["finished"] == 0 and summary["runs"]["diverged"] > 0, summary["runs"]
    assert {v["reproduced"] for v in summary["verdict"]} == {"not tested"}, summary["verdict"]
    assert all(v["measured"].startswith("not tested") for v in summary["verdict"])
