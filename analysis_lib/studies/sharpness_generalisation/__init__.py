"""Study 09, sharpness and generalisation under SAM: protocol, parameter checks, measures and verdicts.

Claim 16 of ``docs/claims.md`` (Wen, Li & Ma, NeurIPS 2023, "Sharpness Minimization Algorithms Do
Not Only Minimize Sharpness To Achieve Better Generalization"): on two-layer ReLU networks and
synthetic data, flatness and generalisation can come apart: SAM can generalise better than SGD
without reaching a flatter minimum, and the flattest solutions need not generalise; which happens
depends on the data.

**Protocol, fixed before looking at results.** Each *scenario* is a synthetic dataset (a Gaussian
mixture, XOR clusters, a sparse parity; :mod:`analysis_lib.training.data`). In each, a two-layer
ReLU network (the MLP with ``model.depth = 1``) is trained from the same initial weights (seed)
by the same base optimiser, once plain (``train.sam_rho = 0``, "SGD") and once with SAM at each
radius of ``sam_rhos``. At the final weights every measure of
:func:`analysis_lib.curvature.sharpness.sharpness_battery` is taken on the first
``measure_samples`` training examples (float32; λ_max by Lanczos, tr H, ρ-sharpness and adaptive
sharpness with one and with several ascent steps, average-direction sharpness, at the measuring
radius ``measure_rho``), and the test error is 1 − the final test accuracy. Paired by seed, with
Δ = SAM − SGD at the SAM radius ``verdict_rho``:

- **(a) SAM improves test error**: yes when the 95% CI of mean Δ test error lies below 0 (and
  the Holm-adjusted paired t-test p < 0.05); no when above; inconclusive otherwise.
- **(b) SAM reduces measure m**: the same rule on Δ m, one row per measure.
- **(c) flatness and generalisation come apart** in the scenario: **yes** when (a) is yes and some
  measure's (b) is *no* (SAM generalises better at a solution that is measurably sharper by
  that measure), or when some measure's (b) is yes while (a) is *no* (flatter and measurably
  worse); **no** when they move together, decided on both sides: (a) yes and every (b) yes, or
  (a) no and every (b) no; **inconclusive** otherwise (an interval that covers 0 demonstrates
  neither, so a measure with no detectable change does not count as "not reduced").
- **Claim 16** over scenarios: yes when (c) is yes in at least one scenario; no when (c) is no in
  every scenario tested; inconclusive otherwise.

Beside the verdicts: Kendall τ of each measure against the test error over every training of a
scenario (SGD and every SAM radius, every seed), plain and granulated over the axes (SAM radius,
seed) (Jiang et al., ICLR 2020; :mod:`analysis_lib.stats.rank_correlation`), and τ between the
per-seed paired differences Δ m and Δ test error (does a seed whose SAM run is flatter also gain
more?).

**Free choices** (the sensitivity table): the SAM radius compared (``verdict_rho``, the others of
``sam_rhos``), the radius the sharpness measures use (``measure_rho``, the others of
``measure_rhos``) and the training subset they are taken on (``measure_samples``, alternatives
``sample_alternatives``; 0 = the whole training set).

**Claim 8** (:mod:`.shift`): the same trained models under an input shift (their test inputs plus
Gaussian noise); the change of the Hessian criteria re and Kh_0.5 against the change in accuracy,
Kendall τ over a scenario's runs with a bootstrap CI; the noise size is a further free choice.
"""

from .measures import BATTERY, measure_table, run_measures
from .protocol import QUESTION, SOURCE, TITLE, build_configs, check_parameters, measure_names
from .shift import check_shift_parameters, run_shift, shift_changes, shift_tests
from .verdicts import (
                       ALTERNATIVE_CHOICES,
                       difference_tests,
                       granulated_tests,
                       kendall_tests,
                       robust_verdict_rows,
                       tracking_tests,
                       verdict_rows,
)

__all__ = ["ALTERNATIVE_CHOICES", "BATTERY", "QUESTION", "SOURCE", "TITLE", "build_configs", "check_parameters",
           "check_shift_parameters", "difference_tests", "granulated_tests", "kendall_tests", "measure_names",
           "measure_table", "robust_verdict_rows", "run_measures", "run_shift", "shift_changes", "shift_tests",
           "tracking_tests", "verdict_rows"]
