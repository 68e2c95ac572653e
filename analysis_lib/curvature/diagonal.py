"""The exact Hessian diagonal of piecewise-linear networks, without Hessian-vector products.

diag(H) = diag(G), with G the Gauss–Newton matrix, whenever every output is piecewise linear in
each single parameter: the second-derivative term Σ r · ∂²f/∂θ_i² of the Hessian then vanishes.
That holds for networks of ``nn.Linear`` layers, each used once, joined by ReLU-like activations,
additions (residual connections) and reshapes; it fails for smooth activations (tanh, GELU), for
normalisation layers, and for a layer applied twice (its weight then enters a path twice). It is
checked on the model's traced graph (``torch.fx``), not guessed from its child modules: a
``torch.tanh`` inside ``forward`` or a reused layer makes the check fail, and so does a model
that cannot be traced.

With H_z = S Sᵀ the loss's output Hessian (cross-entropy: S = diag(√p) − p √pᵀ per sample;
squared error averaged over M elements: S = √(2/M) I), diag(G) = Σ_n Σ_c (J_nᵀ s_{n,c})². For a
Linear layer J_nᵀ s is the outer product of the back-propagated signal δ_{n,c} and the layer
input a_n, so its square sums to (δ²)ᵀ(a²): one backward pass per output and no per-sample
gradients (BackPACK's DiagGGN; Dangel, Kunstner & Hennig, ICLR 2020).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..training.problem import as_batches, loss_spec

_MODULES = (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Dropout)
_FUNCTIONS = {operator.add, operator.getitem, torch.add, torch.relu, F.relu, F.leaky_relu, torch.flatten,
              torch.reshape, F.dropout, getattr}
_METHODS = {"relu", "view", "reshape", "flatten", "size", "add", "unsqueeze", "squeeze", "contiguous"}


def piecewise_linear_structure(model: nn.Module) -> str | None:
    """None when the model provably has the structure above, else the reason it does not."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure means "not provable"
        return f"the model cannot be traced by torch.fx ({type(err).__name__})"
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            if node.op == "get_attr":
                return f"the forward reads the tensor {node.target} directly"
            continue
        if node.op == "call_module":
            module = modules[node.target]
            if not isinstance(module, _MODULES):
                return f"layer {node.target} is a {type(module).__name__}"
            calls[node.target] = calls.get(node.target, 0) + 1
        elif node.op == "call_function" and node.target not in _FUNCTIONS:
            return f"the forward calls {getattr(node.target, '__name__', node.target)}"
        elif node.op == "call_method" and node.target not in _METHODS:
            return f"the forward calls the method .{node.target}()"
    reused = [n for n, c in calls.items() if c > 1 and isinstance(modules[n], nn.Linear)]
    if reused:
        return f"layer {reused[0]} is applied {calls[reused[0]]} times"
    owners = {n.rsplit(".", 1)[0] if "." in n else "" for n, _ in model.named_parameters()}
    if not owners <= {n for n, m in modules.items() if isinstance(m, nn.Linear)}:
        return "a parameter lives outside an nn.Linear layer"
    return None


def _factor(spec, outputs: torch.Tensor, targets) -> torch.Tensor:
    """S with H_z = S Sᵀ, as (n_outputs, N, K): column c of every sample's factor."""
    n, k = outputs.shape
    if spec.family == "mse":
        eye = torch.eye(k, dtype=outputs.dtype, device=outputs.device)
        return (math.sqrt(2.0 / (n * k)) * eye)[:, None, :].expand(k, n, k)
    p = torch.softmax(outputs.detach(), dim=1)  # (N, K)
    keep = (targets != spec.ignore_index).to(p.dtype)[:, None] if not targets.is_floating_point() else 1.0
    sqrt_p, count = p.sqrt(), max(spec.count(targets), 1)
    cols = []
    for cls in range(k):
        s = -p * sqrt_p[:, cls: cls + 1]
        s[:, cls] += sqrt_p[:, cls]
        cols.append(s * keep / math.sqrt(count))
    return torch.stack(cols)


def hessian_diagonal(model: nn.Module, loss_fn, data) -> dict[str, torch.Tensor] | None:
    """Exact diagonal of the Hessian of the mean loss, per parameter, or None where it does not hold.

    None (callers then fall back to Hutch++) unless the model has the structure of the module
    docstring, the loss is a cross-entropy over (N, C) outputs (``F.cross_entropy``, any
    ``ignore_index``) or a squared error over (N, K) outputs, and the inputs of every batch are
    one tensor. Forward hooks are removed before returning; weights, ``.grad`` and modes are
    not touched (the model is evaluated in eval mode).

    Args:
        model: the network. loss_fn, data: as :class:`~analysis_lib.curvature.hessian.HessianOperator` takes them.

    Returns:
        ``{name: tensor shaped like the parameter}`` in the model's dtype, or None.
    """
    spec = loss_spec(loss_fn)
    if spec.family not in ("cross_entropy", "mse") or spec.class_axis not in (None, 1, -1):
        return None
    if isinstance(spec.fn, nn.Module) and getattr(spec.fn, "label_smoothing", 0.0):
        return None
    if getattr(spec.fn, "keywords", {}).get("label_smoothing", 0.0):
        return None
    batches = as_batches(data, spec)
    if any(not isinstance(b.inputs, torch.Tensor) for b in batches) or piecewise_linear_structure(model):
        return None
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    diag = {f"{name}.{k}": torch.zeros_like(getattr(m, k)) for name, m in linears.items()
            for k in ("weight", "bias") if getattr(m, k) is not None}
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            if not _add_batch(model, linears, spec, b, diag):
                return None
    finally:
        model.train(was_training)
    return diag


def _add_batch(model, linears, spec, batch, diag) -> bool:
    """Add one batch's weighted share to ``diag``; False when its outputs are not (N, K)."""
    inputs, outputs = {}, {}

    def keep(name):
        def hook(module, args, out):
            inputs[name], outputs[name] = args[0].detach(), out
        return hook
    handles = [m.register_forward_hook(keep(n)) for n, m in linears.items()]
    try:
        with torch.enable_grad():
            z = model(batch.inputs)
    finally:
        for h in handles:
            h.remove()
    if z.dim() != 2 or (spec.family == "mse" and tuple(z.shape) != tuple(batch.targets.shape)):
        return False
    factor = _factor(spec, z, batch.targets) * math.sqrt(batch.weight)  # (K, N, K)
    outs = [outputs[name] for name in linears]
    for s in factor:
        deltas = torch.autograd.grad(z, outs, grad_outputs=s, retain_graph=True)
        for (name, m), d in zip(linears.items(), deltas):  # d: (N, out)
            diag[f"{name}.weight"] += (d**2).T @ (inputs[name] ** 2)
            if m.bias is not None:
                diag[f"{name}.bias"] += (d**2).sum(0)
    return True
