"""Layer-wise training-dynamics studies: the library behind the notebooks in ``notebooks/``.

Data flow (one module per stage):

- ``config``: frozen, validated run configs (data, model, training, probes, seed).
- ``data``, ``models``: locally generated datasets; MLP and 1-D CNN with named layers.
- ``tasks``, ``transformer``, ``lm_config``, ``lm``: the addition task with fast / slow /
  irrelevant / corrupted responses, the tiny decoder-only transformer and its training runs.
- ``probes``, ``training``: the optimiser loop and the per-layer quantities it records.
- ``gradstats``, ``gradnoise``: per-example gradient spectra; per-layer gradient noise (SNR).
- ``hessian``, ``lanczos``, ``trace``, ``density``, ``spectrum``, ``subspace``, ``stability``:
  curvature (Hessian-vector products, top eigenpairs, traces, spectral densities).
- ``landscape``, ``directions``, ``surfaces``, ``landscape_summaries``, ``interpolation``,
  ``matching``, ``trajectory``, ``twins``, ``variance``: loss landscapes, barriers, weight
  matching, trajectory PCA and run-to-run variance.
- ``runstore``, ``grid``, ``executors``, ``sweep``: one cached folder per run; expand conditions x
  seeds and run them in-process or on Dask.
- ``summaries``, ``stats`` (``effects``), ``verdicts``: per-run numbers, tests, verdict tables;
  ``fastslow*`` hold study 02's analysis.
- ``plots`` (``landscape_plots``, ``variability_plots``, ``fastslow_plots``), ``outputs``,
  ``report``: figures, study outputs, papermill/nbconvert reports.
"""

__version__ = "0.1.0"
