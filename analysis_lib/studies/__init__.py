"""One module per study notebook: its protocol, parameter checks, verdict rules, verdict rows and claim text.

| notebook | module |
|---|---|
| ``01-layer-dynamics`` | :mod:`.layer_dynamics` |
| ``02-fast-vs-slow-thinking`` | :mod:`.fast_slow` (a package: protocol, contrasts, verdicts) |
| ``03-hessian-spectrum`` | :mod:`.hessian_spectrum` |
| ``04-edge-of-stability`` | :mod:`.edge_of_stability` |
| ``05-loss-landscape`` | :mod:`.loss_landscape` |
| ``06-run-to-run-variance`` | :mod:`.run_to_run` |
| ``09-sharpness-and-generalisation`` | :mod:`.sharpness_generalisation` (a package: protocol, measures, verdicts) |

Quantities (the other packages) know no study; claim sentences, sources and verdict rules live
here, and the claims themselves in ``docs/claims.md``.
"""
