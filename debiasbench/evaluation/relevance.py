"""Input-space explanations: relevance heatmaps and their share on the artifact.

The ``artifact_relevance`` metric asks how much of a model's explanation falls on the
artifact (a ruler, a patch): a corrected model should look elsewhere. That needs an
explanation whose numbers mean the same thing for every architecture we offer, so the
method is chosen per architecture and recorded with the run:

- ``"lrp"``: zennit's ``EpsilonPlusFlat`` composite (flat rule in the first layer, z+ in
  the other convolutions, epsilon in the fully connected layers; an MLP's first layer gets
  the z^B rule for pixels in [0, 1] instead, see ``LRP_FIRST_LAYER``) after the canonizers
  zennit has for the architecture (BatchNorm merged into the preceding convolution;
  ResNet's residual additions as ``Sum`` modules). With a canonizer LRP is
  (approximately) *conservative*: the relevances sum to the explained logit, less what
  the biases absorb, so shares of it are comparable between samples and models.
- ``"input_x_gradient"``: ``x * d logit / dx`` with plain autograd. The fallback for
  architectures zennit has no canonizer for (EfficientNet-B0, every timm model): LRP
  without one is not conservative. A residual addition or a squeeze-excitation product
  that is not a ``Sum`` module hands its full relevance to *each* input: measured on a
  bias-free ResNet-18 without the canonizer, the input relevance is 256x the logit
  (doubled by each of its 8 blocks); a BatchNorm left unmerged makes the rules see
  pre-normalisation contributions. For a piecewise-linear net without biases input x
  gradient sums to the logit exactly (Euler's theorem), so the two agree in spirit.

``"auto"`` picks ``"lrp"`` exactly for the architectures in ``LRP_CANONIZERS`` (keyed on
``LatentModel.arch``), whose conservation the tests check; a plugin architecture that is
a plain Sequential or a torchvision VGG/ResNet can add itself there.

A model with an input normalisation (ImageNet weights; ``LatentModel.input_normalization``)
is explained on the *normalised* input: both methods differentiate the model with the
normalised tensor as its input, and its relevance is the map returned (a grey channel
repeated to RGB gets the sum of its copies). No LRP rule covers the per-channel affine
normalisation, and propagating relevance through it as a gradient would scale each
channel by ``1/std``, breaking conservation; it moves nothing between pixels, so the map
keeps the input's pixel layout and the artifact share keeps its meaning. For input x
gradient the same choice keeps the two methods on one input and keeps Euler's identity
(the normalisation's shift acts like a bias in raw-pixel space).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from debiasbench.core.errors import UserError, unknown_name_message
from debiasbench.evaluation.heatmaps import heatmap_grid
from debiasbench.models.latent import LatentModel, eval_mode

__all__ = [
    "EXPLANATION_METHODS",
    "LRP_CANONIZERS",
    "LRP_FIRST_LAYER",
    "explanation_method",
    "input_relevance",
    "ARTIFACT_REGIONS",
    "artifact_region",
    "artifact_relevance",
    "gaussian_blur",
    "heatmap_grid",
]

#: Values ``input_relevance(method=...)`` accepts; ``"auto"`` resolves to one of the others.
EXPLANATION_METHODS: tuple[str, ...] = ("auto", "lrp", "input_x_gradient")


def _sequential_canonizers() -> list:
    """Merge each BatchNorm into the convolution or linear layer right before it.

    Correct for nets whose modules are registered in forward order without skip
    connections: torchvision's VGG and our ``small_cnn`` (conv-BN-ReLU Sequentials).
    """
    from zennit.canonizers import SequentialMergeBatchNorm

    return [SequentialMergeBatchNorm()]


def _resnet_canonizers() -> list:
    """BatchNorm merge plus ``Sum`` modules for the residual additions of torchvision ResNets."""
    from zennit.torchvision import ResNetCanonizer

    return [ResNetCanonizer()]


#: Architectures (``LatentModel.arch``) that ``"auto"`` explains with LRP, and a factory of
#: the zennit canonizers that make LRP conservative on them. Fresh canonizer instances are
#: made per call because a canonizer remembers the modules it changed.
LRP_CANONIZERS: dict[str, Callable[[], list]] = {
    "small_cnn": _sequential_canonizers,
    "vgg16": _sequential_canonizers,
    "resnet18": _resnet_canonizers,
    # Linear + ReLU only, no BatchNorm or skip: conservative without a canonizer.
    "mlp": list,
}


def _pixel_box_first_layer() -> list:
    """The z^B rule with pixel bounds [0, 1] (Montavon et al. 2017, Deep Taylor
    decomposition; zennit's ``ZBox``) for the first ``nn.Linear``."""
    from zennit.rules import ZBox

    return [(nn.Linear, ZBox(low=0.0, high=1.0))]


#: Architectures whose first layer gets another rule than ``EpsilonPlusFlat``'s flat rule
#: (a factory of zennit ``first_map`` entries, prepended to the composite's). The flat rule
#: spreads a neuron's relevance evenly over its receptive field: a few pixels for a
#: convolution, but the whole image for an MLP's first Linear, whose every heatmap would
#: then be uniform; the z^B rule weighs each pixel by its contribution instead.
LRP_FIRST_LAYER: dict[str, Callable[[], list]] = {
    "mlp": _pixel_box_first_layer,
}


def explanation_method(model: LatentModel | nn.Module) -> str:
    """The method ``input_relevance(model, ..., method="auto")`` uses, to record as a run param."""
    return "lrp" if getattr(model, "arch", None) in LRP_CANONIZERS else "input_x_gradient"


def _resolve_method(model: LatentModel | nn.Module, method: str) -> str:
    if method not in EXPLANATION_METHODS:
        raise UserError(unknown_name_message("explanation method", method, list(EXPLANATION_METHODS)))
    if method == "auto":
        return explanation_method(model)
    if method == "lrp" and getattr(model, "arch", None) not in LRP_CANONIZERS:
        # Refuse rather than return a heatmap whose sums are not the logit: shares of a
        # non-conservative relevance are not comparable between models.
        raise UserError(
            f"LRP is not conservative on {getattr(model, 'arch', type(model).__name__)!r} (zennit has no "
            f"canonizer for it); supported: {', '.join(sorted(LRP_CANONIZERS))}; use 'input_x_gradient' or 'auto'"
        )
    return method


def _check_target(x: Tensor, target: Tensor | int, num_outputs: int | None) -> Tensor:
    """``target`` as ``[N]`` long class indices on ``x``'s device (an int means every sample)."""
    target = torch.as_tensor(target, device=x.device)
    if target.ndim == 0:
        target = target.expand(x.shape[0])
    if target.shape != (x.shape[0],) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            f"target must be [N] class indices for N={x.shape[0]}, got {tuple(target.shape)} {target.dtype}"
        )
    target = target.long()
    if num_outputs is not None and target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_outputs):
        raise ValueError(f"target classes must lie in [0, {num_outputs}), got {target.tolist()}")
    return target


def input_relevance(
    model: LatentModel | nn.Module, x: Tensor, target: Tensor, method: str = "auto"
) -> tuple[Tensor, str]:
    """Relevance ``[N, C, H, W]`` of logit ``target[n]`` of sample ``n`` w.r.t. the input, and the method used.

    ``method`` is ``"auto"`` (see ``explanation_method``), ``"lrp"`` or ``"input_x_gradient"``.
    The model is explained in eval mode (BatchNorm uses its running statistics, as at test
    time); training flags are restored afterwards and parameters, buffers and their
    ``.grad`` are left as they were (canonizers are removed, gradients are taken w.r.t. the
    input only). Works on frozen parameters (``requires_grad=False``) and when called under
    ``torch.no_grad()`` (grad is enabled internally) or autocast (disabled internally:
    relevance in bf16 would not sum to the logit). The returned tensor is detached.

    ``"auto"`` and ``"input_x_gradient"`` also accept any ``nn.Module`` classifier (a
    method's ``eval_model`` wrapper, say). A ``LatentModel`` with an input normalisation is
    explained on the normalised input (see the module docstring); the map has ``x``'s shape.
    LRP's canonizers change the weights in place, and a normalised model skips its
    normalisation, for the duration of the call: do not run the same model in another
    thread meanwhile.
    """
    resolved = _resolve_method(model, method)
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    index = _check_target(x, target, getattr(model, "num_classes", None))
    explain = _lrp if resolved == "lrp" else _input_x_gradient
    normalization = model.input_normalization if isinstance(model, LatentModel) else None
    with eval_mode(model), torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        if normalization is None or not isinstance(model, LatentModel):
            # A leaf copy: the caller's tensor gets neither requires_grad nor a graph.
            relevance = explain(model, x.detach().clone().requires_grad_(True), index)
        else:
            with torch.no_grad():
                normalized = model.normalize_input(x.detach())
            # LatentModel: the module docstring says why the normalised tensor is the input.
            with model.inputs_already_normalized():
                relevance = explain(model, normalized.clone().requires_grad_(True), index)
            relevance = normalization.relevance_to_input(relevance)
    return relevance.detach(), resolved


def _one_hot_of_logit(index: Tensor) -> Callable[[Tensor], Tensor]:
    """The output relevance: the target logit itself, zero elsewhere (so relevance sums to it)."""

    def attr_output(output: Tensor) -> Tensor:
        one_hot = F.one_hot(index, output.shape[1]).to(output.dtype)
        return one_hot * output.detach()

    return attr_output


def _lrp(model: nn.Module, inputs: Tensor, index: Tensor) -> Tensor:
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlusFlat

    arch = cast(str, model.arch)  # a LatentModel, or a wrapper naming its architecture (_resolve_method)

    first_layer = LRP_FIRST_LAYER.get(arch)
    composite = EpsilonPlusFlat(canonizers=LRP_CANONIZERS[arch](),
                                first_map=first_layer() if first_layer is not None else None)
    # Gradient registers the canonizers and rule hooks on entry and removes them on exit,
    # also when the forward or backward raises, so the model is left as it was. The whole
    # model is explained (not only ``model.net``), so a latent edit in its forward, such
    # as P-ClArC's projection, is part of what is explained.
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(inputs, _one_hot_of_logit(index))
    return relevance


def _input_x_gradient(model: nn.Module, inputs: Tensor, index: Tensor) -> Tensor:
    logits = model(inputs)
    # Samples are independent in eval mode, so one backward of the sum gives every
    # sample's own gradient.
    selected = logits.gather(1, index[:, None]).sum()
    (gradient,) = torch.autograd.grad(selected, inputs)
    return inputs.detach() * gradient


# --------------------------------------------------------------------------- metrics

#: How ``artifact_region`` grows an artifact mask into the region whose relevance counts:
#: ``blur`` (default) the authors' rule at their image size, scaled to this image's;
#: ``blur_fixed`` the authors' rule in their pixels at any size; ``dilate`` a square
#: dilation by ``dilation`` pixels (this benchmark's earlier rule).
ARTIFACT_REGIONS: tuple[str, ...] = ("blur", "blur_fixed", "dilate")
#: How ``artifact_relevance`` turns a ``[C, H, W]`` relevance into one value per pixel:
#: ``sum`` (default, the authors') the channel sum's magnitude; ``abs`` the sum of the
#: channels' magnitudes (this benchmark's earlier rule; channels of opposite sign cannot
#: cancel).
RELEVANCE_CHANNELS: tuple[str, ...] = ("sum", "abs")

#: The authors' mask rule (frederikpahde/rrclarc@222d917 experiments/evaluation/artifact_relevance.py):
#: a mask is made binary where it exceeds ``MASK_BINARY`` of its maximum (l.139), blurred by
#: torchvision's GaussianBlur(kernel_size=41, sigma=8.0) (l.110, l.140) and the region is
#: where the blurred mask exceeds ``MASK_THRESHOLD`` of its maximum (l.141).
MASK_BINARY = 0.1
MASK_BLUR_KERNEL = 41
MASK_BLUR_SIGMA = 8.0
MASK_THRESHOLD = 0.3
#: The side of the authors' images (``img_size`` 224 for every dataset of their configs):
#: ``blur`` scales kernel and sigma by this image's side over it.
AUTHORS_IMAGE_SIDE = 224


def _as_mask(mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` as a float ``[N, 1, H, W]`` of its values matching ``like`` ``[N, H, W]``."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"mask must be [N, 1, H, W] or [N, H, W] matching {tuple(like.shape)}, got {tuple(mask.shape)}"
        )
    if mask.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"mask has {mask.shape[0]} samples, relevance {like.shape[0]}")
    return mask.to(like.device, like.dtype).expand(like.shape[0], -1, -1, -1)


def blur_scale(side: int, rule: str = "blur") -> tuple[int, float]:
    """(kernel size, sigma) of the mask blur along an image side of ``side`` pixels.

    ``blur_fixed``: the authors' 41 and 8.0 whatever the side. ``blur``: both scaled by
    ``side / AUTHORS_IMAGE_SIDE`` (the kernel to the nearest odd size, at least 1), so at
    224 px it is exactly the authors' rule and on smaller images it grows a mask by the
    same share of the image: at 32 px a 7-tap kernel with sigma 1.14, which grows a 5x5
    patch by one pixel along the middle of each side (to 37 px), where the authors' 41 px
    with sigma 8 would count 569 of the 1,024 pixels as the patch's region.
    """
    if rule == "blur_fixed":
        return MASK_BLUR_KERNEL, MASK_BLUR_SIGMA
    if rule != "blur":
        raise ValueError(f"no blur for the region rule {rule!r}")
    scale = side / AUTHORS_IMAGE_SIDE
    half = round((MASK_BLUR_KERNEL - 1) / 2 * scale)
    return 2 * half + 1, MASK_BLUR_SIGMA * scale


def gaussian_kernel1d(size: int, sigma: float, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """The normalised 1-D Gaussian torchvision's ``gaussian_blur`` uses: ``size`` taps at
    -(size-1)/2 ... (size-1)/2, weights exp(-x^2 / (2 sigma^2)) divided by their sum."""
    half = (size - 1) / 2
    x = torch.linspace(-half, half, size, device=device, dtype=dtype)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


def _reflected(length: int, pad: int, device: torch.device) -> Tensor:
    """Source index of each position of a side of ``length`` padded by ``pad`` on both ends,
    reflected at the edges without repeating the edge pixel (torch's ``reflect`` mode). Where
    ``pad`` is not below ``length`` (torch refuses that), the reflection repeats, i.e. the
    image is continued as its mirror images (numpy's ``reflect`` pad does the same)."""
    positions = torch.arange(-pad, length + pad, device=device)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    folded = positions.remainder(period)
    return torch.where(folded < length, folded, period - folded)


def gaussian_blur(images: Tensor, kernel_size: tuple[int, int], sigma: tuple[float, float]) -> Tensor:
    """``images`` ``[N, 1, H, W]`` blurred with a Gaussian of ``kernel_size`` (odd) and
    ``sigma`` per axis (rows, columns), as torchvision's ``gaussian_blur`` does (reflect
    padding, the kernel of ``gaussian_kernel1d``), computed separably: one 1-D convolution
    per axis on the device of ``images``. Images smaller than half the kernel are padded by
    repeated reflection (``_reflected``), where torchvision raises."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be [N, 1, H, W], got {tuple(images.shape)}")
    out = images
    for axis, (size, s) in enumerate(zip(kernel_size, sigma)):
        if size % 2 != 1:
            raise ValueError(f"kernel sizes must be odd, got {kernel_size}")
        if size == 1:
            continue
        dim = 2 + axis
        pad = size // 2
        padded = out.index_select(dim, _reflected(out.shape[dim], pad, out.device))
        kernel = gaussian_kernel1d(size, s, out.device, out.dtype)
        weight = kernel.view(1, 1, size, 1) if axis == 0 else kernel.view(1, 1, 1, size)
        out = F.conv2d(padded, weight)
    return out


def _per_sample_max(values: Tensor) -> Tensor:
    return values.flatten(1).amax(dim=1).view(-1, 1, 1, 1)


def artifact_region(mask: Tensor, rule: str = "blur", dilation: int = 1) -> Tensor:
    """The pixels ``[N, 1, H, W]`` (float 0 / 1) whose relevance counts as "on the artifact".

    ``mask`` is ``[N, 1, H, W]`` (non-zero = artifact). Rules (``ARTIFACT_REGIONS``):

    - ``blur`` (default) and ``blur_fixed``, the authors' rule
      (frederikpahde/rrclarc@222d917 experiments/evaluation/artifact_relevance.py:138-141):
      the mask made binary where it exceeds 0.1 of its maximum, blurred by a Gaussian,
      and kept where the blur exceeds 0.3 of its maximum. Their Gaussian is 41 px wide with
      sigma 8 on 224 px images; ``blur_fixed`` uses it as is at any size, ``blur`` scales it
      to this image (``blur_scale``). LRP's flat first-layer rule and gradients spread an
      artifact's relevance beyond its pixels, which the blurred region takes in; relative
      to its maximum, the blur grows a thin artifact (a 1 px line: +-12 px at 224 px) more
      than a large one (a 35 px patch: up to 4 px per side).
    - ``dilate``: the mask (non-zero) grown by ``dilation`` pixels, a square
      neighbourhood (max pooling); this benchmark's earlier rule, with ``dilation`` 1.

    A sample with an all-zero mask gets an empty region.
    """
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be [N, 1, H, W], got {tuple(mask.shape)}")
    mask = mask.float()
    if rule == "dilate":
        if dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {dilation}")
        region = (mask > 0).float()
        if dilation > 0:
            region = F.max_pool2d(region, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
        return region
    if rule not in ARTIFACT_REGIONS:
        raise ValueError(f"unknown artifact region rule {rule!r}; allowed: {', '.join(ARTIFACT_REGIONS)}")
    peak = _per_sample_max(mask.abs())
    binary = (mask > MASK_BINARY * peak).float() * (peak > 0)
    rows, cols = blur_scale(mask.shape[2], rule), blur_scale(mask.shape[3], rule)
    blurred = gaussian_blur(binary, (rows[0], cols[0]), (rows[1], cols[1]))
    peak = _per_sample_max(blurred)
    return ((blurred > MASK_THRESHOLD * peak) & (peak > 0)).float()


def artifact_relevance(relevance: Tensor, mask: Tensor, region: str = "blur", *, dilation: int = 1,
                       channels: str = "sum") -> Tensor:
    """Per sample ``[N]``: the share of the relevance's magnitude inside the artifact region.

    ``mask`` (``[N, 1, H, W]`` or ``[N, H, W]``, non-zero = artifact) becomes the region by
    ``artifact_region(mask, region, dilation)``. Per pixel the relevance is, with
    ``channels="sum"`` (default), the magnitude of its sum over channels, as the authors
    score it: their heatmap is zennit-crp's ``CondAttribution`` heatmap, the input
    relevance summed over channels with its sign, and the share is
    ``|heatmap * region|.sum() / (|heatmap|.sum() + 1e-10)``
    (frederikpahde/rrclarc@222d917 experiments/evaluation/artifact_relevance.py:135,143-144),
    with positive and negative relevance counted by magnitude and no other normalisation
    (their ``init_rel=1`` scales every pixel alike, which a share ignores). ``channels="abs"``
    sums the channels' magnitudes instead. Samples whose total is zero get 0 (as the
    authors' 1e-10 gives; it is left out otherwise, so shares do not depend on the scale
    of the relevance).
    """
    if relevance.ndim != 4:
        raise ValueError(f"relevance must be [N, C, H, W], got shape {tuple(relevance.shape)}")
    if channels == "sum":
        magnitude = relevance.detach().float().sum(dim=1).abs()  # [N, H, W]
    elif channels == "abs":
        magnitude = relevance.detach().float().abs().sum(dim=1)
    else:
        raise ValueError(f"unknown channels rule {channels!r}; allowed: {', '.join(RELEVANCE_CHANNELS)}")
    counted = artifact_region(_as_mask(mask, magnitude), region, dilation)[:, 0]
    inside = (magnitude * counted).flatten(1).sum(dim=1)
    total = magnitude.flatten(1).sum(dim=1)
    share = inside / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, share, torch.zeros_like(share))

