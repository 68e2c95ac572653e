"""One lock for code that must touch process-wide random number generators.

Everything in ``analysis_lib`` draws from its own seeded ``torch.Generator`` or
``numpy.random.Generator`` except two places that cannot: ``torch.nn`` layers initialise their
weights from torch's global RNG, and ``mnist1d.make_dataset`` seeds numpy's and Python's global
RNGs. Both save, seed and restore the global state; runs executed concurrently in threads (a
thread-pool executor, Dask's threaded workers) would interleave those steps and get each other's
seeds. Holding :data:`GLOBAL_RNG_LOCK` around them keeps every run's result independent of what
runs beside it.
"""

from __future__ import annotations

import threading

GLOBAL_RNG_LOCK = threading.RLock()
