"""The built-in architectures, and timm's by name.

Builders live in ``debiasbench.core.registry.MODELS`` as
``(num_classes, in_channels=3) -> (network, default latent layer name)``; a builder that
also declares an ``input_shape`` parameter (or ``**kwargs``) receives one sample's shape
``(C, H, W)`` from ``build_model`` (the runner passes the dataset's), which a network
without global pooling needs (``mlp``); builders without it are called as before. A
package adds an architecture as it adds a method, through an entry point::

    [project.entry-points."debiasbench.models"]
    mynet = "mypackage.nets:mynet"

The built-ins below are declared the same way in debiasbench's pyproject.toml (so
``debiasbench models`` lists them with any plugin's) and also carry
``@MODELS.register(name=...)``, the in-process way to add one (a notebook, a test), so
they resolve as soon as this module is imported. A plugin's entry point that reuses a
built-in name is ignored with a warning (``debiasbench.core.registry``). Names starting with
``timm:`` are built by timm.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import nn

from debiasbench.core.errors import UserError, unknown_name_message
from debiasbench.core.registry import MODELS


#: ``build_model("timm:<name>", ...)`` builds ``<name>`` with ``timm.create_model``.
TIMM_PREFIX = "timm:"


# --------------------------------------------------------------------------- builders


def conv_with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of ``conv`` that reads ``in_channels`` channels."""
    if conv.in_channels == in_channels:
        return conv
    if conv.groups != 1:
        raise UserError(f"cannot change the input channels of a grouped first convolution ({conv})")
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


@MODELS.register(name="small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """Three conv-BN-ReLU blocks (32/64/128 channels): fast enough for CPU tests.

    Pools use ``ceil_mode`` so any input from 8x8 up (odd sizes too) keeps every pixel.
    """
    net = nn.Sequential(
        OrderedDict(
            block1=_conv_bn_relu(in_channels, 32),
            pool1=nn.MaxPool2d(2, ceil_mode=True),
            block2=_conv_bn_relu(32, 64),
            pool2=nn.MaxPool2d(2, ceil_mode=True),
            block3=_conv_bn_relu(64, 128),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(128, num_classes),
        )
    )
    return net, "block3"


#: Sample shape the ``mlp`` builder assumes when it is not told one: Colored MNIST's.
MLP_DEFAULT_INPUT = (3, 28, 28)


#: Hidden layers of the ``mlp`` and their width (LfF's module/mlp.py:8-13).
MLP_DEPTH, MLP_WIDTH = 3, 100


@MODELS.register(name="mlp")
def mlp(num_classes: int, in_channels: int = 3, input_shape: Sequence[int] | None = None) -> tuple[nn.Module, str]:
    """The MLP that LfF, DisEnt and PGD train on Colored MNIST: flatten, three hidden
    Linear(100) + ReLU layers, a Linear classifier (alinlab/LfF@e66796e module/mlp.py:7-15).

    ``input_shape`` ``(C, H, W)`` sets the first layer's width (default ``(in_channels,
    28, 28)``: LfF's ``3 * 28 * 28``). The latent is ``feature``, the last hidden layer's
    output after its ReLU, ``[N, 100]``: what LfF's ``forward(return_feat=True)`` returns
    (module/mlp.py:19). Unlike LfF's, the network does not divide its input by 255
    (module/mlp.py:18): our inputs are already in [0, 1], whereas LfF's ``ToTensor`` had
    scaled them once before (data/util.py:46), so their MLP sees pixels in [0, 1/255].
    """
    shape = tuple(input_shape) if input_shape is not None else (in_channels, *MLP_DEFAULT_INPUT[1:])
    if shape[0] != in_channels:
        raise ValueError(f"input_shape {shape} does not have in_channels={in_channels} channels")
    layers: list[nn.Module] = []
    width = math.prod(shape)
    for _ in range(MLP_DEPTH):
        layers += [nn.Linear(width, MLP_WIDTH), nn.ReLU()]
        width = MLP_WIDTH
    net = nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            feature=nn.Sequential(*layers),
            classifier=nn.Linear(width, num_classes),
        )
    )
    return net, "feature"


@MODELS.register(name="resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision ResNet-18, random init; other ``in_channels`` get a new ``conv1``."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = conv_with_in_channels(net.conv1, in_channels)
    return net, "layer4"


@MODELS.register(name="vgg16")
def vgg16(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision VGG-16, random init; latent is the last conv (before its ReLU and pool)."""
    from torchvision.models import vgg16 as tv_vgg16

    net = tv_vgg16(weights=None, num_classes=num_classes)
    net.features[0] = conv_with_in_channels(net.features[0], in_channels)
    return net, "features.28"


@MODELS.register(name="efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision EfficientNet-B0, random init; latent is the last feature map (1280 ch)."""
    from torchvision.models import efficientnet_b0 as tv_efficientnet_b0

    net = tv_efficientnet_b0(weights=None, num_classes=num_classes)
    stem = net.features[0]
    stem[0] = conv_with_in_channels(stem[0], in_channels)
    return net, "features.8"


def check_timm_name(name: str) -> None:
    """A UserError suggesting close names unless timm knows ``name``."""
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise UserError(f"unknown timm model {name!r}{hint} (see timm.list_models())")


def timm_feature_module(net: nn.Module) -> str | None:
    """The module timm names as the last feature map, if it says."""
    info = getattr(net, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], Mapping):
        return info[-1].get("module") or None
    if info is not None and hasattr(info, "module_name"):
        return info.module_name()[-1] or None
    return None


def build_timm(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str | None]:
    """A timm model with random weights and its last feature module, if timm says."""
    import timm

    check_timm_name(name)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except Exception as exc:  # bad kwargs for this family, etc.: the user's choice of model
        raise UserError(f"timm model {name!r} could not be built: {exception_line(exc)}") from exc
    return net, timm_feature_module(net)


# --------------------------------------------------------------------------- build + load


def check_model_name(arch: str) -> None:
    """A ``UserError`` unless ``arch`` names a registered builder or a model timm knows:
    checked when a config is resolved, so a sweep with a misspelt model fails before its
    first job instead of after the others trained."""
    if arch.startswith(TIMM_PREFIX):
        check_timm_name(arch[len(TIMM_PREFIX):])
    elif arch not in MODELS:
        known = [*MODELS.names(), f"{TIMM_PREFIX}<name>"]
        raise UserError(unknown_name_message("model", arch, known))


def exception_line(exc: BaseException) -> str:
    """An exception as ``Type: first line``, for one-line messages about a library's failure."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
