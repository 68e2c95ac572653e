"""weights."""

from .powerlaw_fit import powerlaw_tail
from .spectra import (
    empirical_spectral_density,
    layer_weight_spectra,
    shuffled_null,
    spectrum_stats,
    weight_matrix,
)

__all__ = ["empirical_spectral_density", "layer_weight_spectra", "powerlaw_tail", "shuffled_null",
           "spectrum_stats", "weight_matrix"]
