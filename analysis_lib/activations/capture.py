"""Forward hooks that capture what flows through a model: hidden states, their gradients, attention, logits.

Which modules are read, on any ``nn.Module``:

- *residual blocks* (:func:`residual_blocks`): the modules the user names, or else the entries of
  a ``blocks`` (our :class:`~analysis_lib.lm.transformer.TinyTransformer`) or ``layers``
  ``nn.ModuleList``; their output tensors are the hidden states h_l, the first block's input is
  h_{−1} (the embedding), and a tensor hook on each output keeps ∂L/∂h_l in the backward pass;
- *hidden units* (:func:`activation_units`): the ``up`` projection of every
  :class:`~analysis_lib.lm.transformer.MLP` (the pre-activation of its ReLU) and every
  ``nn.ReLU`` / ``nn.GELU`` module (its output); a ReLU applied as a function elsewhere is not seen.
  A module called several times in one forward pass (one ``act`` module shared by the layers of
  an MLP) keeps one output per call, in call order;
- *attention* (:func:`attention_modules`): every :class:`~analysis_lib.lm.transformer.Attention`,
  through its ``observer`` capture point (logits and probabilities of the forward pass).
  ``nn.MultiheadAttention`` is listed as unsupported: it exposes its probabilities only when
  called with ``need_weights=True``, which takes another computational path than the training
  forward (so its numbers would differ from training), and never its logits;
- *output logits*: the model's own output tensor (..., V).

The hooks only keep detached references of the forward pass's tensors (no copy, no extra
computation, nothing changed in the graph or the gradients); statistics are computed from them
afterwards. If the model runs several forward passes inside one capture, the last one is kept
(gradients: the last one received for each block).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..lm.transformer import MLP, Attention
from ..validation import fail


def residual_blocks(model: nn.Module, names: list[str] | tuple[str, ...] | None = None) -> list[tuple[str, nn.Module]]:
    """The blocks whose outputs are the hidden states, in forward order: ``[(name, module)]``.

    Args:
        model: any module.
        names: module names (as ``model.named_modules()`` spells them); by default the entries of
            a ``blocks`` or ``layers`` ``nn.ModuleList`` attribute.

    Returns:
        The named modules, in the order given (by default registration order).

    Raises:
        ConfigError: a name is not a module of ``model``, or no blocks are named and the model
            has no ``blocks``/``layers`` ModuleList.
    """
    modules = dict(model.named_modules())
    if names is not None:
        if isinstance(names, str) or len(names) == 0:
            fail("blocks", names, "must be a non-empty list of module names")
        for name in names:
            if name not in modules or name == "":
                fail("blocks", name, f"must name submodules of the model, e.g. {list(modules)[1:6]}")
        return [(name, modules[name]) for name in names]
    for attr in ("blocks", "layers"):
        found = getattr(model, attr, None)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return [(f"{attr}.{i}", block) for i, block in enumerate(found)]
    fail("blocks", None, f"the model ({type(model).__name__}) has no 'blocks' or 'layers' ModuleList; "
                         "name its residual blocks (module names)")


def activation_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules whose outputs are positive exactly where their units are active (see the module docstring)."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, MLP):
            out.append((f"{name}.up" if name else "up", module.up))
        elif isinstance(module, (nn.ReLU, nn.GELU)):
            out.append((name, module))
    return out


def attention_modules(model: nn.Module) -> tuple[list[tuple[str, Attention]], list[tuple[str, str]]]:
    """``(supported, unsupported)``: our Attention modules, and ``(name, reason)`` of the others.

    Unsupported: ``nn.MultiheadAttention`` (see the module docstring).
    """
    supported, unsupported = [], []
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            supported.append((name, module))
        elif isinstance(module, nn.MultiheadAttention):
            unsupported.append((name, "nn.MultiheadAttention exposes no logits, and its weights only "
                                      "through another computational path (need_weights=True)"))
    return supported, unsupported


def _tensor(name: str, value) -> torch.Tensor:
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
        return value[0]
    fail(name, type(value).__name__, "must output a tensor (or a tuple whose first entry is one)")


class Capture:
    """Hooks, entered as a context manager, that keep the tensors of a forward (and backward) pass.

    After the pass: ``inputs`` (the first block's input), ``hidden`` and ``grads`` (block name ->
    h_l, ∂L/∂h_l), ``units`` (unit module name -> its outputs, one per call), ``attention`` (module name ->
    ``(scores, probs)``) and ``logits`` (the model's output), all detached; what was not asked for
    or not reached stays empty/None.

    Args:
        model: any module.
        blocks: ``[(name, module)]`` residual blocks (:func:`residual_blocks`), or None.
        gradients: also keep ∂L/∂h_l of the blocks' outputs (when they require grad).
        units: ``[(name, module)]`` (:func:`activation_units`), or None.
        attention: ``[(name, Attention)]`` (:func:`attention_modules`), or None.
        logits: keep the model's output.
    """

    def __init__(self, model: nn.Module, *, blocks=None, gradients: bool = False, units=None,
                 attention=None, logits: bool = False):
        self.model, self.blocks, self.gradients = model, list(blocks or []), gradients
        self.unit_modules, self.attention_mods, self.want_logits = list(units or []), list(attention or []), logits
        self.clear()

    def clear(self) -> None:
        """Forget the captured tensors."""
        self.inputs: torch.Tensor | None = None
        self.hidden: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self.units: dict[str, list[torch.Tensor]] = {}
        self.attention: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.logits: torch.Tensor | None = None

    def _block_hook(self, name: str, first: bool):
        def hook(module, args, output):
            h = _tensor(f"block {name}", output)
            if first and args and torch.is_tensor(args[0]):
                self.inputs = args[0].detach()
            self.hidden[name] = h.detach()
            if self.gradients and h.requires_grad:
                h.register_hook(lambda g: self.grads.__setitem__(name, g.detach()))
        return hook

    def _unit_hook(self, name: str):
        def hook(module, args, output):
            self.units.setdefault(name, []).append(_tensor(f"unit module {name}", output).detach())
        return hook

    def _observer(self, name: str):
        def observe(module, scores, probs):
            self.attention[name] = (scores.detach(), probs.detach())
        return observe

    def _logit_hook(self, module, args, output):
        self.logits = _tensor("model", output).detach()

    @contextlib.contextmanager
    def __call__(self) -> Iterator["Capture"]:
        """Register the hooks (and observers) for the ``with`` block; remove them afterwards."""
        handles = []
        observed = []
        try:
            for i, (name, block) in enumerate(self.blocks):
                handles.append(block.register_forward_hook(self._block_hook(name, i == 0)))
            for name, module in self.unit_modules:
                handles.append(module.register_forward_hook(self._unit_hook(name)))
            for name, module in self.attention_mods:
                if module.observer is not None:
                    fail("attention", name, "already has an observer set (one capture at a time)")
                module.observer = self._observer(name)
                observed.append(module)
            if self.want_logits:
                handles.append(self.model.register_forward_hook(self._logit_hook))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for module in observed:
                module.observer = None
