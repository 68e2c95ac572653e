"""Instruments: figures by subject, each ``plot_*`` taking a tidy DataFrame and returning a Figure.

- :mod:`.training`: per-layer metrics over training, layer profiles, one value per run, correlations;
- :mod:`.gradients`: gradient spectra profiles, cross-layer spreads, per-layer gradient SNR;
- :mod:`.curvature`: λ_max against 2/η, top eigenvalues, spectral densities;
- :mod:`.landscape`: surfaces, slices, interpolation curves, per-run landscape summaries;
- :mod:`.trajectories`: explained variance of trajectory PCA, trajectory projections;
- :mod:`.seed_variance`: per-example correctness across runs;
- :mod:`.stats`: estimates with confidence intervals of test tables;
- :mod:`.style`: the one 95% bootstrap band and shared helpers.
"""
