"""Study 02, fast vs slow thinking: the protocol, its tests and its verdict rows.

- :mod:`.protocol`: conditions, parameter checks, per-example gradient spectra cached per run,
  the accuracy gate that decides which trained models are comparable;
- :mod:`.contrasts`: paired contrasts, cross-layer spreads, AUROC and effect sizes;
- :mod:`.verdicts`: the verdict rows of claims 1 and 2;
- :mod:`.cached`: the tests at one accuracy gate as one cached task over the grid's runs;
- :mod:`.robustness`: the same rows under other accuracy gates, with each "no"'s robustness.
"""

from ...lm.transformer import PROJECTIONS
from .cached import contrast_tests
from .contrasts import (
                        block_noise_profile,
                        example_scores,
                        matrix_tests,
                        quality_effects,
                        seed_means,
                        separation_table,
                        spread_table,
                        spread_tests,
                        summary_tests,
)
from .protocol import (
                        CHECKPOINTS,
                        CONDITIONS,
                        QUESTION,
                        TITLE,
                        accuracy_table,
                        check_parameters,
                        comparable,
                        exclusion_note,
                        spectra_table,
)
from .robustness import robust_verdict_rows
from .verdicts import fastslow_verdicts as verdict_rows

__all__ = ["CHECKPOINTS", "CONDITIONS", "PROJECTIONS", "QUESTION", "TITLE", "accuracy_table", "block_noise_profile",
           "check_parameters", "comparable", "contrast_tests", "example_scores", "exclusion_note", "matrix_tests",
           "quality_effects", "robust_verdict_rows", "seed_means", "separation_table", "spectra_table",
           "spread_table", "spread_tests", "summary_tests", "verdict_rows"]
