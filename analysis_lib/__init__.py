"""Layer-wise training-dynamics studies: the library behind the notebooks in ``notebooks/``.

The curated public API is importable from here, grouped by subject (``__all__``)::

    from analysis_lib import expand_grid, run_grid, compare_conditions, HessianOperator, top_eigenpairs

Subject packages (``docs/architecture.md`` maps the data flow onto them):

- ``training``: run configs, data, models, the one training loop, probes and their schedule;
- ``gradients``, ``weights``, ``curvature``, ``landscape``, ``trajectories``: quantities, as pure
  functions and probe objects;
- ``lm``: the tiny transformer and its addition task;
- ``custom``: your own model, data and loss, registered by name and run like a built-in family;
- ``runs``: the run store, grids, executors, sweeps, provenance;
- ``stats``: comparisons, effects, reductions, verdict rules;
- ``plots``: figures by subject; ``report``: rendering and publishing;
- ``studies``: one module per study notebook (protocol, checks, verdict rows, claim text).

Ground floor: ``validation`` (ConfigError and the parameter checks), ``layers`` (layer naming),
``paths`` (where data, runs and reports live).

Names are imported on first use (PEP 562), so the command line and ``import analysis_lib.paths``
do not load torch or matplotlib.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API: dict[str, list[str]] = {
    # ground floor
    "analysis_lib.validation": ["ConfigError"],
    "analysis_lib.layers": ["layer_of", "layer_names", "per_layer"],
    # training
    "analysis_lib.training.config": ["RunConfig", "DataConfig", "ModelConfig", "TrainConfig", "ProbeConfig",
                                     "config_from_dict", "with_overrides"],
    "analysis_lib.training.data": ["Dataset", "load_dataset"],
    "analysis_lib.training.models": ["build_model"],
    "analysis_lib.training.classifier": ["train_classifier"],
    "analysis_lib.training.loop": ["Phase", "TrainResult", "train_phases"],
    "analysis_lib.training.objective": ["Objective", "Classification"],
    "analysis_lib.training.probe": ["Probe", "ProbeContext", "register", "probe_names"],
    "analysis_lib.training.losses": ["sequence_losses", "CrossEntropy", "MSE"],
    "analysis_lib.training.problem": ["Problem", "loss_spec"],
    # the tiny transformer
    "analysis_lib.lm.config": ["LMRunConfig", "TaskConfig", "TransformerConfig"],
    "analysis_lib.lm.training": ["build_lm", "train_lm"],
    # your own model, data and loss
    "analysis_lib.custom.registry": ["register_model", "register_dataset", "register_loss", "registered_table"],
    "analysis_lib.custom.config": ["CustomRunConfig"],
    "analysis_lib.custom.modules": ["load_module"],
    # gradients
    "analysis_lib.gradients.norms": ["layer_gradient_norms"],
    "analysis_lib.gradients.noise": ["GradientNoiseProbe", "noise_statistics", "noise_profile"],
    "analysis_lib.gradients.spectra": ["per_example_gradients", "gradient_spectra", "spectral_statistics"],
    "analysis_lib.gradients.spread": ["cross_layer_mad", "relative_difference"],
    # weights
    "analysis_lib.weights.movement": ["layer_weight_norms", "layer_update_ratios", "layer_rotations",
                                      "layer_distances"],
    "analysis_lib.weights.perturbation": ["perturb_weights"],
    "analysis_lib.weights.matching": ["weight_matching"],
    # curvature
    "analysis_lib.curvature.hessian": ["HessianOperator"],
    "analysis_lib.curvature.lanczos": ["top_eigenpairs", "NotConvergedError"],
    "analysis_lib.curvature.trace": ["hutchinson", "hutchpp", "exact_trace", "layer_traces"],
    "analysis_lib.curvature.diagonal": ["hessian_diagonal"],
    "analysis_lib.curvature.density": ["slq_nodes", "density_curve", "spectrum_criteria", "negative_mass"],
    "analysis_lib.curvature.spectrum": ["spectrum_table", "count_outliers", "spectrum_summary", "density_table"],
    "analysis_lib.curvature.subspace": ["gradient_overlap", "subspace_overlap"],
    "analysis_lib.curvature.final": ["run_curvature"],
    # landscapes
    "analysis_lib.landscape.evaluate": ["evaluate_params", "flat_parameters", "metric_functions"],
    "analysis_lib.landscape.directions": ["random_directions", "normalize_direction", "hessian_directions",
                                          "equivalent_rescaling"],
    "analysis_lib.landscape.surfaces": ["loss_surface", "surface_table", "run_surfaces"],
    "analysis_lib.landscape.slices": ["slice_summaries"],
    "analysis_lib.landscape.interpolation": ["interpolation_curve", "interpolation_barriers", "barrier",
                                             "pair_interpolations"],
    # trajectories
    "analysis_lib.trajectories.pca": ["trajectory_pca", "explained_variance_table", "random_walk_ratios"],
    "analysis_lib.trajectories.distances": ["trajectory_distances", "pair_distances"],
    # runs
    "analysis_lib.runs.grid": ["expand_grid", "select", "GridResult"],
    "analysis_lib.runs.execute": ["run_grid", "ensure_run"],
    "analysis_lib.runs.executors": ["grid_executor"],
    "analysis_lib.runs.store": ["RunStore", "run_id"],
    "analysis_lib.runs.derived": ["Analysis", "derive"],
    "analysis_lib.runs.analyses": ["cached_surfaces", "cached_curvature"],
    # statistics
    "analysis_lib.stats.compare": ["compare_conditions", "equivalence_test"],
    "analysis_lib.stats.models": ["mixed_model", "spearman_ci"],
    "analysis_lib.stats.results": ["RESULT_COLUMNS", "adjust_pvalues"],
    "analysis_lib.stats.effects": ["bootstrap_ci", "mean_ci", "cohens_dz", "hedges_g"],
    "analysis_lib.stats.hierarchical": ["hierarchical_bootstrap", "auroc"],
    "analysis_lib.stats.seed_variance": ["accuracy_variance"],
    "analysis_lib.stats.reductions": ["final_values", "last_step", "layer_spread", "log10_values",
                                      "mean_over_training", "run_table"],
    "analysis_lib.stats.verdicts": ["verdict_row", "verdict_table"],
    # reports
    "analysis_lib.report.outputs": ["StudyOutputs"],
    "analysis_lib.report.tables": ["format_test_table", "format_verdict_table"],
    "analysis_lib.report.render": ["render_study", "render_all"],
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = [name for names in _API.values() for name in names]


def __getattr__(name: str):
    """Import a public name from its subject module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'analysis_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
