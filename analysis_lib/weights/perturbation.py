"""A seeded one-off perturbation of the weights: how butterfly-effect twins start apart."""

from __future__ import annotations

import torch


@torch.no_grad()
def perturb_weights(params: dict[str, torch.Tensor], scale: float, seed: int) -> None:
    """Add Gaussian noise from ``seed`` to every parameter in place.

    The noise is drawn in float64 from its own generator and rescaled so that the whole
    perturbation has L2 norm ``scale`` × ‖θ‖ (Altıntaş et al., "The Butterfly Effect", 2025).
    """
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in params.values()]
    theta_norm = torch.sqrt(sum(v.double().pow(2).sum().cpu() for v in params.values()))
    factor = scale * theta_norm / torch.sqrt(sum(n.pow(2).sum() for n in noise))
    for v, n in zip(params.values(), noise):
        v.add_((n * factor).to(v.device, v.dtype))


def perturbation(train_config) -> dict:
    """The twins' intervention for the training loop: ``{perturb_step: perturb}``, or none.

    Args:
        train_config: a :class:`~analysis_lib.training.config.TrainConfig` (``perturb_step``,
            ``perturb_scale``, ``perturb_seed``); a scale of 0 means no perturbation.
    """
    if not train_config.perturb_scale:
        return {}
    scale, seed = train_config.perturb_scale, train_config.perturb_seed
    return {train_config.perturb_step: lambda params: perturb_weights(params, scale, seed)}
