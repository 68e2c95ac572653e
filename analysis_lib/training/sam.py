"""Sharpness-Aware Minimisation (SAM) and its adaptive variant (ASAM) around any base optimiser.

One SAM update on a mini-batch B (Foret, Kleinberg, Mobahi & Neyshabur, "Sharpness-Aware
Minimization for Efficiently Improving Generalization", ICLR 2021):

1. g = ∇L_B(θ) (the ``.grad`` fields when :meth:`SAM.step` is called);
2. ε = ρ g / ‖g‖, ‖·‖ the Euclidean norm over all parameters of the optimiser;
3. g_SAM = ∇L_B(θ + ε), computed by the closure on the same batch;
4. θ is restored exactly (copied back, not ε subtracted) and the base optimiser (SGD, Adam,
   AdamW, with its momentum, weight decay and learning rate) steps with g_SAM.

Adaptive SAM (Kwon, Kim, Park & Choi, "ASAM", ICML 2021): ε = ρ T² g / ‖T g‖ with
T = |θ| + η element-wise (η = :data:`ASAM_ETA`, the paper's default), i.e. the ascent step in the
scaled ball ‖ε / T‖ ≤ ρ; unlike the ASAM code (T = 1 for biases) every parameter, biases included,
is scaled, as :func:`analysis_lib.curvature.sharpness.adaptive_sharpness` does. Where g = 0
(or T g = 0), ε = 0 and the update is the base optimiser's.

The wrapper shares the base optimiser's ``param_groups``, so setting ``group["lr"]`` (the training
loop's schedule) reaches the base optimiser. It draws no random numbers: a seeded run is as
deterministic as one with the base optimiser alone.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..validation import check_bool, check_number

ASAM_ETA = 0.01


class SAM(torch.optim.Optimizer):
    """SAM (or ASAM) around ``base``; :meth:`step` needs a closure that recomputes the loss.

    Args:
        base: the base optimiser, already built over the model's parameters.
        rho: ρ > 0, the radius of the ascent step.
        adaptive: ASAM's scaled step (see the module docstring).
        eta: η ≥ 0 of ASAM's T = |θ| + η.

    Raises:
        ConfigError: ρ ≤ 0, η < 0 or ``adaptive`` not a bool.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float, *, adaptive: bool = False, eta: float = ASAM_ETA):
        check_number("train.sam_rho", rho, positive=True)
        check_bool("train.sam_adaptive", adaptive)
        check_number("eta", eta, lo=0.0)
        params = [p for group in base.param_groups for p in group["params"]]
        super().__init__(params, {"rho": rho})
        self.base, self.rho, self.adaptive, self.eta = base, rho, adaptive, eta
        self.param_groups = base.param_groups  # one set of groups: lr changes reach the base

    @torch.no_grad()
    def perturbation(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, ε) for every parameter with a gradient, from the gradients now in ``.grad``."""
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return []
        scales = [p.abs() + self.eta if self.adaptive else None for p in params]
        u = [p.grad if t is None else t * p.grad for p, t in zip(params, scales)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in u]))
        if norm.item() == 0.0:
            return [(p, torch.zeros_like(p)) for p in params]
        return [(p, self.rho * (x if t is None else t * x) / norm) for p, x, t in zip(params, u, scales)]

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM update; the ``.grad`` fields must hold ∇L_B(θ).

        Args:
            closure: recomputes the loss of the same batch at the current (perturbed) weights and
                calls ``backward``; the gradients are zeroed before it is called.

        Returns:
            The closure's loss, L_B(θ + ε).

        Raises:
            ValueError: no closure.
        """
        if closure is None:
            raise ValueError("invalid argument closure=None: SAM needs a closure that recomputes the loss of the "
                             "same batch and calls backward()")
        with torch.no_grad():
            eps = self.perturbation()
            saved = [(p, p.detach().clone()) for p, _ in eps]
            for p, e in eps:
                p.add_(e)
        self.zero_grad(set_to_none=True)
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)
        self.base.step()
        return loss
