"""``build_model``: an architecture by name, its latent layer, its initial weights.

The one entry point to a network, like timm's ``create_model``: a built-in or plugin
builder (``debiasbench.models.architectures``), or ``timm:<name>``, wrapped as a
``LatentModel`` (``debiasbench.models.latent``), with ImageNet or file weights
(``debiasbench.models.pretrained``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Callable


from debiasbench.core.errors import UserError
from debiasbench.core.registry import MODELS
from debiasbench.models.architectures import TIMM_PREFIX, build_timm
from debiasbench.models.latent import LatentModel, Normalization
from debiasbench.models.pretrained import IMAGENET, load_pretrained, timm_imagenet, torchvision_imagenet


def build_model(
    arch: str,
    num_classes: int,
    latent_layer: str | None = None,
    pretrained: str | None = None,
    in_channels: int = 3,
    input_shape: Sequence[int] | None = None,
) -> LatentModel:
    """Build ``arch`` (a MODELS name or ``timm:<name>``) as a ``LatentModel``.

    ``input_shape`` is one sample's shape ``(C, H, W)`` (callers pass the dataset's); it
    sets ``in_channels`` and is handed to builders that declare it (see the module
    docstring). ``latent_layer`` overrides the builder's default. ``pretrained`` is ``"imagenet"``
    (the library's ImageNet weights from its local cache, a new seeded head for
    ``num_classes`` even when that is 1000, and the weights' input normalisation in the
    model) or a local checkpoint whose shape-compatible tensors are loaded (a head with
    another number of classes is left freshly initialised).
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) < 1 or min(input_shape) < 1:
            raise UserError(f"input_shape must be positive sizes (C, H, W), got {input_shape}")
        in_channels = input_shape[0]
    if in_channels < 1:
        raise UserError(f"in_channels must be at least 1, got {in_channels}")
    normalization: Normalization | None = None
    if arch.startswith(TIMM_PREFIX):
        if pretrained == IMAGENET:
            net, default, normalization = timm_imagenet(arch[len(TIMM_PREFIX) :], num_classes, in_channels)
        else:
            net, default = build_timm(arch[len(TIMM_PREFIX) :], num_classes, in_channels)
        if latent_layer is None and default is None:
            raise UserError(f"{arch!r} has no feature_info to choose a latent layer from; pass latent_layer")
    elif pretrained == IMAGENET:
        net, default, normalization = torchvision_imagenet(arch, num_classes, in_channels)
    else:
        builder = MODELS.get(arch)
        shape = {"input_shape": input_shape} if input_shape is not None and _takes_input_shape(builder) else {}
        net, default = builder(num_classes, in_channels, **shape)
    name = latent_layer if latent_layer is not None else default
    model = LatentModel(net, name or "", num_classes=num_classes, arch=arch, normalization=normalization)
    if pretrained is not None and pretrained != IMAGENET:
        load_pretrained(model.net, pretrained, arch=arch)
    return model


def _takes_input_shape(builder: Callable) -> bool:
    """Whether ``builder`` declares an ``input_shape`` parameter (or takes ``**kwargs``):
    builders written before it existed (plugins' too) are called without it."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "input_shape" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
