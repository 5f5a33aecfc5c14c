"""Per-sample gradient norms of the cross-entropy, batched: one number per training sample.

PGD (and other gradient-based sample scoring) needs ``||d CE(x_i, y_i) / d theta||_p`` for
every sample of a split. A Python loop of one backward per sample is far too slow, so
there are two batched paths, both computed chunk by chunk on the data's device:

- ``method="vmap"``: ``torch.func.vmap(grad(loss))`` over a ``functional_call`` of the
  model, for any set of parameters (``"last_layer"``, ``"all"`` or a list of names).
- ``method="closed_form"`` (last layer only): for logits ``z = W h + b`` the per-sample
  gradient of CE w.r.t. ``W`` is the outer product ``(softmax(z) - onehot(y)) h^T``, and
  the entrywise p-norm of an outer product factorises, ``||a b^T||_p = ||a||_p ||b||_p``
  (for every p > 0 and for p = inf), so only one forward pass is needed and the
  [N, C, D] gradients are never formed. ``h`` is read with a forward hook on the last
  ``nn.Linear``'s input.

"last_layer" means the *weight* of the last ``nn.Linear`` registered in the model (its
bias is left out, as in the PGD authors' code). The norm is the entrywise p-norm of all
chosen gradients flattened into one vector, ``(sum |g|^p)^(1/p)``; ``p < 1`` (the PGD
code's 0.7) gives that quasi-norm, ``p = inf`` the largest absolute entry.

The model is evaluated in eval mode: BatchNorm uses its running statistics and dropout
is off. That is the model as it predicts, the per-sample gradient is then truly per
sample (batch statistics would couple the samples of a chunk), and it is what vmap
supports (BatchNorm in train mode cannot update running statistics under vmap). Training
flags are restored afterwards. The loss is taken on float32 logits; call it outside autocast.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from debiasbench.data.dataset import Split, xy_batches
from debiasbench.models.latent import eval_mode

__all__ = ["per_sample_grad_norms", "last_linear_name", "resolve_param_names", "loop_grad_norms"]

PARAM_SETS = ("last_layer", "all")
GRAD_METHODS = ("closed_form", "vmap")

#: Default memory budget of one vmap chunk's per-sample gradients, in float32 elements
#: (2**28 = 1 GiB): resnet18 with every parameter gets ~23 samples a chunk.
VMAP_CHUNK_ELEMENTS = 2**28


def last_linear_name(model: nn.Module) -> str:
    """Dotted name of the last ``nn.Linear`` registered in ``model`` (the classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass parameter names "
                         "and method='vmap'")
    return names[-1]


def resolve_param_names(model: nn.Module, params: str | Sequence[str]) -> list[str]:
    """Parameter names (as ``model.named_parameters()`` spells them) that ``params`` selects."""
    known = dict(model.named_parameters())
    if params == "last_layer":
        return [f"{last_linear_name(model)}.weight"]
    if params == "all":
        return list(known)
    if isinstance(params, str):
        raise ValueError(f"params: expected one of {PARAM_SETS} or a list of parameter names, got {params!r}")
    names = list(params)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown parameter name(s) {unknown or names}; known: {', '.join(known)}")
    return names


def combine_norms(parts: Iterable[Tensor], p: float) -> Tensor:
    """Entrywise p-norm per sample of several per-sample tensors [B, ...] taken as one vector.

    ``(sum_k ||g_k||_p^p)^(1/p)`` is the p-norm of the vector of the parts' norms.
    """
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1).float(), ord=p, dim=1) for g in parts])
    return torch.linalg.vector_norm(norms, ord=p, dim=0)


def per_sample_grad_norms(model: nn.Module, x: Tensor | Split, y: Tensor | None,
                          params: str | Sequence[str] = "last_layer",
                          p: float = 2.0, method: str = "closed_form", batch_size: int | None = None) -> Tensor:
    """``||d CE(model(x_i), y_i) / d params||_p`` for every sample -> float32 [N] on x's device.

    ``x`` is a split (its batches are read in order, ``y`` defaults to its labels) or a
    tensor of inputs with labels ``y``.

    ``params``: ``"last_layer"`` (weight of the last Linear), ``"all"`` or a list of names.
    ``method``: ``"closed_form"`` (last layer only, one forward pass) or ``"vmap"``.
    ``batch_size``: samples per chunk; default 256 for the closed form, and for vmap as many
    as keep a chunk's per-sample gradients within ~1 GiB (at most 256).
    """
    if not p > 0:
        raise ValueError(f"norm order p must be > 0 (or inf), got {p}")
    if method not in GRAD_METHODS:
        raise ValueError(f"method: expected one of {GRAD_METHODS}, got {method!r}")
    if method == "closed_form" and params != "last_layer":
        raise ValueError("method='closed_form' supports params='last_layer' only; use method='vmap'")
    if y is None and isinstance(x, Split):
        y = x.y
    if y is None or len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples, y has {None if y is None else len(y)}")
    names = resolve_param_names(model, params)
    if batch_size is None:
        if method == "closed_form":
            batch_size = 256
        else:
            chosen = dict(model.named_parameters())
            numel = sum(chosen[n].numel() for n in names)
            batch_size = max(1, min(256, VMAP_CHUNK_ELEMENTS // max(numel, 1)))
    with eval_mode(model):
        if method == "closed_form":
            chunk_norms = _closed_form(model, last_linear_name(model), p)
        else:
            chunk_norms = _vmapped(model, names, p)
        labels = None if isinstance(x, Split) else y  # a split pairs its batches with its own labels
        out = [chunk_norms(xb, yb) for xb, yb in xy_batches(x, labels, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, device=x.device)


def _closed_form(model: nn.Module, linear_name: str, p: float):
    """Chunk -> norms of (softmax - onehot) outer features, from one no-grad forward."""
    linear = model.get_submodule(linear_name)
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        seen["features"], seen["output"] = inputs[0], output

    def norms(xb: Tensor, yb: Tensor) -> Tensor:
        if xb.dim() == 4 and xb.device.type == "cpu":  # oneDNN's convolutions are faster channels-last
            xb = xb.contiguous(memory_format=torch.channels_last)
        handle = linear.register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = model(xb)
        finally:
            handle.remove()
        if "output" not in seen or seen["output"] is not logits or seen["features"].dim() != 2:
            raise ValueError(f"the closed form needs the last Linear ({linear_name!r}) to map [N, D] "
                             "features straight to the logits; use method='vmap'")
        delta = logits.float().softmax(1) - F.one_hot(yb, logits.shape[1]).float()
        features = seen["features"].float()
        seen.clear()
        return (torch.linalg.vector_norm(delta, ord=p, dim=1)
                * torch.linalg.vector_norm(features, ord=p, dim=1))

    return norms


def _vmapped(model: nn.Module, names: list[str], p: float):
    """Chunk -> norms of vmap(grad(CE)) w.r.t. ``names``; the other parameters are constants."""
    everything = {n: t.detach() for n, t in model.named_parameters()}
    chosen = {n: everything.pop(n) for n in names}
    buffers = dict(model.named_buffers())

    def loss(theta: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(model, ({**everything, **theta}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(logits.float(), yi.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))

    def norms(xb: Tensor, yb: Tensor) -> Tensor:
        grads = per_sample(chosen, xb, yb)
        return combine_norms(grads.values(), p)

    return norms


def loop_grad_norms(model: nn.Module, x: Tensor, y: Tensor, params: str | Sequence[str] = "last_layer",
                    p: float = 2.0, full_backward: bool = True) -> Tensor:
    """The slow reference: one forward and backward per sample in a Python loop (tests and
    benchmarks only), in eval mode like ``per_sample_grad_norms``.

    ``full_backward`` (the way such a loop is usually written, and what the PGD authors'
    code does) calls ``loss.backward()`` and reads ``.grad`` (reset afterwards); otherwise
    ``torch.autograd.grad`` differentiates only the chosen parameters (a cheaper loop).
    """
    names = resolve_param_names(model, params)
    named = dict(model.named_parameters())
    chosen = [named[n] for n in names]
    out = []
    try:
        with eval_mode(model):
            for i in range(len(x)):
                loss = F.cross_entropy(model(x[i:i + 1]).float(), y[i:i + 1])
                if full_backward:
                    model.zero_grad(set_to_none=True)
                    loss.backward()
                    grads: list[Tensor | None] = [t.grad for t in chosen]
                else:
                    grads = list(torch.autograd.grad(loss, chosen, allow_unused=True))
                filled = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, chosen)]
                out.append(combine_norms([g.unsqueeze(0) for g in filled], p))
    finally:
        model.zero_grad(set_to_none=True)
    return torch.cat(out) if out else torch.zeros(0, device=x.device)
