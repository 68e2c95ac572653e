"""activations: statistics of a model's hidden states and attention, and the similarity of representations.

Quantities of what flows through a network rather than of its weights or gradients: residual-stream
scale and growth, massive activations, kurtosis, dead units, attention entropy and logits, output
log-partition, activation gradients (with their probes), and representation similarity (CKA).
"""

from .attention import (
    attention_entropy,
    attention_stats,
    keys_seen,
    max_attention_logit,
    normalised_attention_entropy,
    query_entropy,
    uniform_entropy,
)
from .capture import Capture, activation_units, attention_modules, residual_blocks
from .similarity import CKAAccumulator, linear_cka
from .similarity_inference import (
    cka_bootstrap,
    cka_summary,
    delta_cka_shared_pca,
    seed_null_cka,
    shuffled_null,
)
from .statistics import (
    dead_unit_fraction,
    excess_kurtosis,
    gradient_norm,
    growth_ratios,
    hidden_rms,
    hidden_state_stats,
    hidden_variance,
    log_partition,
    log_partition_stats,
    massive_activation_ratio,
)

__all__ = ["CKAAccumulator", "cka_bootstrap", "cka_summary", "delta_cka_shared_pca", "linear_cka",
           "seed_null_cka", "shuffled_null",
           "Capture", "activation_units", "attention_entropy", "attention_modules", "attention_stats",
           "dead_unit_fraction", "excess_kurtosis", "gradient_norm", "growth_ratios", "hidden_rms",
           "hidden_state_stats", "hidden_variance", "keys_seen", "log_partition", "log_partition_stats",
           "massive_activation_ratio", "max_attention_logit", "normalised_attention_entropy",
           "query_entropy", "residual_blocks", "uniform_entropy"]
