"""Layer-wise training-dynamics studies: the library behind the notebooks in ``notebooks/``.

Data flow (one module per stage):

- ``config``: frozen, validated run configs (data, model, training, probes, seed).
- ``data``, ``models``: locally generated datasets; MLP and 1-D CNN with named layers.
- ``probes``, ``training``: the optimiser loop and the per-layer quantities it records.
- ``runstore``, ``grid``: one cached folder per run; expand conditions x seeds and run them.
- ``summaries``, ``stats`` (``effects``), ``verdicts``: per-run numbers, tests, verdict tables.
- ``plots``, ``outputs``, ``report``: figures, study outputs, papermill/nbconvert reports.
"""

__version__ = "0.1.0"
