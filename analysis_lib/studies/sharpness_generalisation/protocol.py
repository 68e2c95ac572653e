"""Study 09's grid and parameter checks: scenarios × (SGD, SAM at each ρ) × seeds, validated up front."""

from __future__ import annotations

from typing import Mapping, Sequence

from ...runs.grid import expand_grid
from ...validation import check_int, check_number, check_subset, fail

TITLE = "Sharpness and generalisation under SAM"
QUESTION = ("On two-layer ReLU networks, does SAM generalise better than SGD, does it reach flatter solutions by "
            "every sharpness measure, and does the gain track the flattening, scenario by scenario? Under an input "
            "shift, do the Hessian criteria re and Kh track the change in accuracy?")
SOURCE = "Wen, Li & Ma 2023 (claim 16)"
REQUIRED_PROBES = ("eval", "weights")  # test accuracy, and the final weights the measures are taken at

# Battery rows (measure, steps) -> the study's measure name; "K" stands for the multi-step count.
SINGLE_MEASURES = ("lambda_max", "trace")
RADIUS_MEASURES = ("rho_sharpness", "adaptive_sharpness")


def measure_names(ascent_steps: int) -> list[str]:
    """The study's sharpness measures in display order, for a multi-step ascent of ``ascent_steps``."""
    return [*SINGLE_MEASURES, *(f"{m}_{s}step" for m in RADIUS_MEASURES for s in (1, ascent_steps)),
            "average_sharpness"]


def build_configs(base: Mapping, scenarios: Mapping, sam_rhos: Sequence, seeds: Sequence) -> list:
    """Every run: one arm per scenario, in each SGD (``train.sam_rho = 0``) and SAM at each ρ, every seed.

    Args:
        base: ``{"data": ..., "model": ..., "train": ..., "probes": ...}`` shared by all runs.
        scenarios: name -> data overrides, e.g. ``{"xor": {"name": "xor", "noise": 1.0}}``.
        sam_rhos: the SAM radii (each > 0). seeds: replicate seeds (a seed fixes the initial
            weights and data order in every arm, so SAM and SGD pair by seed).

    Raises:
        ConfigError: naming ``scenarios``, ``sam_rhos`` or the config key at fault.
    """
    if not isinstance(scenarios, Mapping) or not scenarios:
        fail("scenarios", scenarios, "must map scenario names to data overrides, e.g. {xor: {name: xor}}")
    for name, overrides in scenarios.items():
        if not isinstance(overrides, Mapping) or "name" not in overrides:
            fail(f"scenarios.{name}", overrides, "must be a mapping of data parameters naming the dataset "
                                                 "(e.g. {name: xor, noise: 1.0})")
    if isinstance(sam_rhos, (str, bytes)) or not isinstance(sam_rhos, Sequence) or not sam_rhos:
        fail("sam_rhos", sam_rhos, "must be a non-empty list of SAM radii > 0")
    for rho in sam_rhos:
        check_number("sam_rhos", rho, positive=True)
    if len(set(sam_rhos)) != len(sam_rhos):
        fail("sam_rhos", sam_rhos, "must be distinct")
    arms = {name: {**{f"data.{k}": [v] for k, v in overrides.items()}, "train.sam_rho": [0.0, *sam_rhos]}
            for name, overrides in scenarios.items()}
    return expand_grid(dict(base), arms, seeds)


def check_parameters(configs: Sequence, *, sam_rhos: Sequence, verdict_rho: float, measure_rhos: Sequence,
                     measure_rho: float, measure_samples: int, sample_alternatives: Sequence, ascent_steps: int,
                     n_directions: int, n_boot: int) -> None:
    """Raise ConfigError naming the first bad study parameter, before any training.

    Every run must be a two-layer network (``model.kind = mlp``, ``model.depth = 1``, the claim's
    architecture) probed with ``eval`` and ``weights``; ``verdict_rho`` one of ``sam_rhos``,
    ``measure_rho`` one of ``measure_rhos``; ``measure_samples`` and each of ``sample_alternatives``
    an integer ≥ 0 (0: the whole training set) and at most ``data.n_train``.
    """
    for config in configs:
        if config.model.kind != "mlp" or config.model.depth != 1:
            fail("model", {"kind": config.model.kind, "depth": config.model.depth},
                 "must be a two-layer ReLU network: kind mlp, depth 1 (one hidden layer)")
        missing = [p for p in REQUIRED_PROBES if p not in config.probes.names]
        if missing:
            fail("probes.names", list(config.probes.names), f"must include {list(REQUIRED_PROBES)} (missing {missing})")
    check_subset("verdict_rho", [verdict_rho], list(sam_rhos))
    if isinstance(measure_rhos, (str, bytes)) or not isinstance(measure_rhos, Sequence) or not measure_rhos:
        fail("measure_rhos", measure_rhos, "must be a non-empty list of radii > 0")
    for rho in measure_rhos:
        check_number("measure_rhos", rho, positive=True)
    check_subset("measure_rho", [measure_rho], list(measure_rhos))
    n_train = min((c.data.n_train for c in configs), default=0)
    if isinstance(sample_alternatives, (str, bytes)) or not isinstance(sample_alternatives, Sequence):
        fail("sample_alternatives", sample_alternatives, "must be a list of integers >= 0 (0: every training sample)")
    sizes = [("measure_samples", measure_samples), *(("sample_alternatives", v) for v in sample_alternatives)]
    for name, value in sizes:
        check_int(name, value, 0)
        if value > n_train:
            fail(name, value, f"must be <= data.n_train (= {n_train}); 0 means every training sample")
    check_int("ascent_steps", ascent_steps, 2)
    check_int("n_directions", n_directions, 2)
    check_int("n_boot", n_boot, 1)
