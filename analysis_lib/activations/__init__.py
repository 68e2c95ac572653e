"""activations: statistics of a model's hidden states and attention, and the similarity of representations.

Quantities of what flows through a network rather than of its weights or gradients: residual-stream
scale and growth, massive activations, kurtosis, dead units, attention entropy and logits, output
log-partition, activation gradients (with their probes), and representation similarity (CKA).
"""
