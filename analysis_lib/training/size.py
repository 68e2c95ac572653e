"""Size of an MLP / CNN run before it trains: parameters and peak memory, for the guards before training.

:meth:`~analysis_lib.training.config.RunConfig.size_estimate` returns it;
:mod:`analysis_lib.runs.guards` compares it with the machine.
"""

from __future__ import annotations


def mlp_size(config) -> dict:
    """An upper bound of an MLP / CNN run's parameters and peak memory (what ``RunConfig.size_estimate`` returns).

    Weights, gradients, optimizer state (momentum 1, Adam 2 copies) and the copies probes keep
    (initial and previous weights: 2), plus three copies of the activations of one batch.
    """
    from .data import class_count

    m, d = config.model, config.data
    features = d.n_features if d.name not in ("mnist1d", "digits") else {"mnist1d": 40, "digits": 64}[d.name]
    classes = class_count(d)
    if m.kind == "mlp":
        n_params = features * m.width + (m.depth - 1) * m.width**2 + m.width * classes + m.depth * m.width + classes
        activations = m.depth * m.width
    else:
        length = features
        for _ in range(m.depth):
            length = (length + 2 * (m.kernel_size // 2) - m.kernel_size) // 2 + 1
        n_params = (m.kernel_size * m.width * (1 + (m.depth - 1) * m.width) + m.depth * m.width
                    + m.width * max(length, 1) * classes + classes)
        activations = m.depth * m.width * features
    n_params += 2 * m.depth * m.width * (m.norm != "none")  # normalisation scales and shifts
    batch = config.train.batch_size or d.n_train
    states = 2 if config.train.optimizer in ("adam", "adamw") else int(config.train.momentum > 0)
    itemsize = 8 if config.train.dtype == "float64" else 4
    total = itemsize * (n_params * (4 + states) + 3 * batch * activations)
    return {"parameter": "model.width", "value": m.width, "n_params": n_params, "bytes": total}
