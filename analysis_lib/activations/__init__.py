"""activations: statistics of a model's hidden states and attention, and the similarity of representations.

Quantities of what flows through a network rather than of its weights or gradients: residual-stream
scale and growth, massive activations, kurtosis, dead units, attention entropy and logits, output
log-partition, activation gradients (with their probes), and representation similarity (CKA).
"""

from .similarity import CKAAccumulator, linear_cka
from .similarity_inference import (
    cka_bootstrap,
    cka_summary,
    delta_cka_shared_pca,
    seed_null_cka,
    shuffled_null,
)

__all__ = ["CKAAccumulator", "cka_bootstrap", "cka_summary", "delta_cka_shared_pca", "linear_cka",
           "seed_null_cka", "shuffled_null"]
