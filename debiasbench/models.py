"""Networks with a named latent layer, and the builders that make them.

Many debiasing methods act on one intermediate activation: CAVs are fitted on it,
P-ClArC projects it, RRR-style penalties take gradients with respect to it, and
corrections fine-tune only what comes after it. ``LatentModel`` gives every method the
same view of that activation, whatever the architecture, through forward hooks, so that
any torchvision, timm or plugin network works without being rewritten.

Builders are registered in ``debiasbench.registry.MODELS`` as
``(num_classes, in_channels=3) -> (network, default latent layer name)``; names starting
with ``timm:`` are built by timm. ``pretrained`` is always a local file: nothing here
downloads weights, so runs are reproducible offline.
"""

from __future__ import annotations

import logging
import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from debiasbench.errors import UserError, unknown_name_message
from debiasbench.registry import MODELS

__all__ = ["LatentModel", "build_model", "eval_mode", "load_pretrained", "TIMM_PREFIX"]

log = logging.getLogger(__name__)

#: ``build_model("timm:<name>", ...)`` builds ``<name>`` with ``timm.create_model``.
TIMM_PREFIX = "timm:"

Edit = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; afterwards every module gets back its own
    training flag (``model.train(was_training)`` would also unfreeze BatchNorm layers a
    correction keeps in eval mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class _LatentReached(Exception):
    """Raised from a hook to stop a forward pass once the latent is known (saves compute)."""


class LatentModel(nn.Module):
    """A classifier ``net`` plus the dotted name of the submodule whose output is "the latent".

    ``forward`` is the plain network; ``forward_with_latent`` also returns (and may edit)
    the latent activation. The wrapped ``net`` is not modified: hooks are added per call
    and always removed, so the model stays picklable, copyable and ``state_dict``-stable.
    """

    def __init__(self, net: nn.Module, latent_layer: str, num_classes: int, arch: str = "custom"):
        super().__init__()
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.latent_layer = latent_layer
        _latent_module(net, latent_layer, arch)  # fail at construction, not at first use

    @property
    def latent_module(self) -> nn.Module:
        """The submodule whose output is the latent activation."""
        return self.net.get_submodule(self.latent_layer)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x``."""
        return self.net(x)

    def forward_with_latent(self, x: Tensor, edit: Edit | None = None) -> tuple[Tensor, Tensor]:
        """``(logits, latent)``; with ``edit``, the rest of the network sees ``edit(latent)``.

        The returned latent is the (edited) tensor the head was computed from, so
        ``torch.autograd.grad(logits.sum(), latent, create_graph=True)`` works. The head
        receives a copy of it: an in-place activation after the latent layer (VGG's
        ``ReLU(inplace=True)``) would otherwise overwrite the returned latent.
        If the latent module runs more than once per forward, the last call is returned.
        """
        captured: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple, output: object) -> Tensor:
            out = self._check_output(output)
            if edit is not None:
                out = self._check_output(edit(out), what="edit result")
            captured.clear()
            captured.append(out)
            return out.clone()

        handle = self.latent_module.register_forward_hook(hook)
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        return logits, captured[0]

    def latent(self, x: Tensor) -> Tensor:
        """The latent activation of ``x`` (its first call); the layers after it are not run."""
        captured: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            captured.append(self._check_output(output))
            raise _LatentReached

        handle = self.latent_module.register_forward_hook(hook)
        try:
            self.net(x)
        except _LatentReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        return captured[0]

    def parameters_after_latent(self, example_input: Tensor) -> list[nn.Parameter]:
        """Parameters of the modules that start running after the latent is produced.

        This is the "head" that corrections may fine-tune while the features stay frozen.
        The order is found from one no-grad forward of ``example_input`` in eval mode
        (training flags are restored, BN statistics untouched). A module that also runs
        before the latent (a shared module) is excluded, since training it would change
        the latent too. Parameters are listed once each, in execution order.
        """
        latent_module = self.latent_module
        owners = [m for m in self.net.modules() if next(m.parameters(recurse=False), None) is not None]
        before: set[int] = set()
        after: list[nn.Module] = []
        done = [False]

        def start(module: nn.Module, inputs: tuple) -> None:
            if not done[0]:
                before.add(id(module))
            elif id(module) not in before and module not in after:
                after.append(module)

        def finish(module: nn.Module, inputs: tuple, output: object) -> None:
            done[0] = True

        handles = [m.register_forward_pre_hook(start) for m in owners]
        handles.append(latent_module.register_forward_hook(finish))
        try:
            with eval_mode(self.net), torch.no_grad():
                self.net(example_input)
        finally:
            for h in handles:
                h.remove()
        if not done[0]:
            raise UserError(f"latent layer {self.latent_layer!r} of {self.arch!r} did not run in forward")
        params: list[nn.Parameter] = []
        seen: set[int] = set()
        for m in after:
            for p in m.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        return params

    def _check_output(self, output: object, what: str = "output") -> Tensor:
        if not isinstance(output, Tensor):
            raise UserError(
                f"latent layer {self.latent_layer!r} of {self.arch!r}: {what} is a "
                f"{type(output).__name__}, not a tensor; choose another latent layer"
            )
        return output

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, latent_layer={self.latent_layer!r}, num_classes={self.num_classes}"


def _latent_module(net: nn.Module, name: str, arch: str) -> nn.Module:
    """``net.get_submodule(name)``, or a UserError that suggests a close module name."""
    if name:
        try:
            return net.get_submodule(name)
        except AttributeError:
            pass
    known = [n for n, _ in net.named_modules() if n]
    raise UserError(unknown_name_message(f"{arch} latent layer", name, known))


# --------------------------------------------------------------------------- builders


def _conv_with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
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


@MODELS.register(name="resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision ResNet-18, random init; other ``in_channels`` get a new ``conv1``."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    net.conv1 = _conv_with_in_channels(net.conv1, in_channels)
    return net, "layer4"


@MODELS.register(name="vgg16")
def vgg16(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision VGG-16, random init; latent is the last conv (before its ReLU and pool)."""
    from torchvision.models import vgg16 as tv_vgg16

    net = tv_vgg16(weights=None, num_classes=num_classes)
    net.features[0] = _conv_with_in_channels(net.features[0], in_channels)
    return net, "features.28"


@MODELS.register(name="efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int = 3) -> tuple[nn.Module, str]:
    """torchvision EfficientNet-B0, random init; latent is the last feature map (1280 ch)."""
    from torchvision.models import efficientnet_b0 as tv_efficientnet_b0

    net = tv_efficientnet_b0(weights=None, num_classes=num_classes)
    stem = net.features[0]
    stem[0] = _conv_with_in_channels(stem[0], in_channels)
    return net, "features.8"


def _build_timm(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str | None]:
    """A timm model (never pretrained by timm) and its last feature module, if timm says."""
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise UserError(f"unknown timm model {name!r}{hint} (see timm.list_models())")
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except Exception as exc:  # bad kwargs for this family, etc.: the user's choice of model
        raise UserError(f"timm model {name!r} could not be built: {_one_line(exc)}") from exc
    info = getattr(net, "feature_info", None)
    default: str | None = None
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], Mapping):
        default = info[-1].get("module") or None
    elif info is not None and hasattr(info, "module_name"):
        default = info.module_name()[-1] or None
    return net, default


# --------------------------------------------------------------------------- build + load


def build_model(
    arch: str,
    num_classes: int,
    latent_layer: str | None = None,
    pretrained: str | None = None,
    in_channels: int = 3,
) -> LatentModel:
    """Build ``arch`` (a MODELS name or ``timm:<name>``) as a ``LatentModel``.

    ``latent_layer`` overrides the builder's default; ``pretrained`` is a local checkpoint
    whose shape-compatible tensors are loaded (a head with another number of classes is
    left freshly initialised).
    """
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise UserError(f"in_channels must be at least 1, got {in_channels}")
    if arch.startswith(TIMM_PREFIX):
        net, default = _build_timm(arch[len(TIMM_PREFIX) :], num_classes, in_channels)
        if latent_layer is None and default is None:
            raise UserError(f"{arch!r} has no feature_info to choose a latent layer from; pass latent_layer")
    else:
        builder = MODELS.get(arch)
        net, default = builder(num_classes, in_channels)
    name = latent_layer if latent_layer is not None else default
    model = LatentModel(net, name or "", num_classes=num_classes, arch=arch)
    if pretrained is not None:
        load_pretrained(model.net, pretrained, arch=arch)
    return model


_WRAPPER_PREFIXES = ("module.", "net.", "model.")


def _target_key(key: str, target: Mapping[str, Tensor]) -> str | None:
    """The key of ``target`` that ``key`` names, after stripping wrapper prefixes.

    Checkpoints saved from a LatentModel (``net.``), DataParallel (``module.``) or a
    Lightning-style wrapper (``model.``) name the same tensors with a prefix.
    """
    while True:
        if key in target:
            return key
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        else:
            return None


def load_pretrained(net: nn.Module, path: str | Path, arch: str = "model") -> list[str]:
    """Load the tensors of checkpoint ``path`` whose names and shapes fit ``net``.

    Accepts a raw state dict or a dict holding one under ``"model"`` or ``"state_dict"``.
    Mismatched tensors (typically the classifier) are skipped, so a backbone trained on
    another label set can be reused. Returns the names of ``net``'s tensors left as they
    were. Raises UserError if the file is missing or unreadable, or if nothing fits.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"pretrained checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read pretrained checkpoint {path}: {_one_line(exc)}") from exc
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), Mapping):
                state = checkpoint[key]
                break
    if not isinstance(state, Mapping):
        raise UserError(f"pretrained checkpoint {path} holds a {type(state).__name__}, not a state dict")

    target = net.state_dict()
    matched: dict[str, Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        name = _target_key(str(key), target) if isinstance(value, Tensor) else None
        if name is not None and tuple(value.shape) == tuple(target[name].shape):
            matched[name] = value
        else:
            skipped.append(str(key))
    if not matched:
        raise UserError(f"pretrained checkpoint {path} has no tensors that fit {arch!r} (names or shapes differ)")
    net.load_state_dict(matched, strict=False)
    untouched = [k for k in target if k not in matched]
    log.info(
        "loaded %d tensors from %s into %s; skipped %d (%s); left %d as initialised (%s)",
        len(matched), path, arch, len(skipped), ", ".join(skipped[:5]), len(untouched), ", ".join(untouched[:5]),
    )
    return untouched


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
