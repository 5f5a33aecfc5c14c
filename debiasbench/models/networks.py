"""Networks with a named latent layer, and the builders that make them.

Many debiasing methods act on one intermediate activation: CAVs are fitted on it,
P-ClArC projects it, RRR-style penalties take gradients with respect to it, and
corrections fine-tune only what comes after it. ``LatentModel`` gives every method the
same view of that activation, whatever the architecture, through forward hooks, so that
any torchvision, timm or plugin network works without being rewritten.

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
``timm:`` are built by timm. ``pretrained`` is a local file, or ``"imagenet"`` for
the libraries' own ImageNet weights (torchvision's for ``vgg16``, ``resnet18`` and
``efficientnet_b0``, timm's for ``timm:<name>``) read from the libraries' standard caches.
Nothing here downloads weights, so runs are reproducible offline and a missing file is
one readable error instead of a network hang.

ImageNet weights expect inputs normalised with the dataset's mean and std, while every
input in this harness is an image in [0, 1]. The normalisation therefore lives in the
``LatentModel`` (in front of ``net``, outside ``net``'s state dict), so training,
evaluation, CAVs, per-sample gradients and explanations all get it without knowing.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from debiasbench.core.errors import UserError, unknown_name_message
from debiasbench.core.registry import MODELS

__all__ = [
    "IMAGENET",
    "IMAGENET_ARCHS",
    "InputNormalization",
    "LatentModel",
    "Normalization",
    "TIMM_PREFIX",
    "build_model",
    "check_imagenet_weights",
    "eval_mode",
    "imagenet_weights_file",
    "load_pretrained",
]

log = logging.getLogger(__name__)

#: ``build_model("timm:<name>", ...)`` builds ``<name>`` with ``timm.create_model``.
TIMM_PREFIX = "timm:"

#: ``pretrained=IMAGENET`` loads the library's ImageNet weights instead of a file.
IMAGENET = "imagenet"

Edit = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Normalization:
    """What inputs a network's weights expect: ``(x - mean) / std`` per channel.

    ``in_channels`` is the number of channels the data has: equal to ``len(mean)``, or 1
    for a grey image, which is repeated to ``len(mean)`` channels first (a grey photo shown
    as RGB), so the pretrained first convolution stays exactly the library's.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std need one value per channel, got {self.mean} and {self.std}")
        if self.in_channels not in (1, len(self.mean)):
            raise ValueError(f"in_channels must be 1 or {len(self.mean)}, got {self.in_channels}")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


#: Attribute of a network that records the ``Normalization`` its weights expect. Every
#: ``LatentModel`` built around that network (a method's test-time wrapper, say, made as
#: ``LatentModel(model.net, ...)``) then normalises its inputs the same way. A plain
#: attribute: it is not a tensor, so ``net.state_dict()`` does not change.
NORMALIZATION_ATTRIBUTE = "debiasbench_input_normalization"


class InputNormalization(nn.Module):
    """Applies a ``Normalization``; its constants are non-persistent buffers.

    Buffers, so ``.to(device)`` moves them with the model and ``functional_call`` sees
    them; non-persistent, so neither ``LatentModel.state_dict()`` nor ``net.state_dict()``
    changes and checkpoints load with ``strict=True`` as before.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, normalization: Normalization, device: torch.device | None = None):
        super().__init__()
        self.normalization = normalization
        shape = (1, len(normalization.mean), 1, 1)
        self.register_buffer("mean", torch.tensor(normalization.mean, device=device).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(normalization.std, device=device).view(shape), persistent=False)

    @property
    def in_channels(self) -> int:
        return self.normalization.in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input normalisation expects [N, {self.in_channels}, H, W] images, got {tuple(x.shape)}"
            )
        channels = self.mean.shape[1]
        if self.in_channels != channels:
            x = x.expand(-1, channels, -1, -1)
        mean, std = self.mean, self.std
        if mean.device != x.device or (x.is_floating_point() and mean.dtype != x.dtype):
            dtype = x.dtype if x.is_floating_point() else mean.dtype
            mean, std = mean.to(x.device, dtype), std.to(x.device, dtype)
        return (x - mean) / std

    def relevance_to_input(self, relevance: Tensor) -> Tensor:
        """Relevance of the normalised tensor ``[N, len(mean), H, W]`` in the input's channels.

        A per-channel affine map moves no relevance between pixels, so the map is the
        same; a repeated grey channel gets the sum of its copies' relevance (a copy hands
        all its relevance back to its source), which keeps the total.
        """
        if self.in_channels != relevance.shape[1]:
            return relevance.sum(dim=1, keepdim=True)
        return relevance

    def extra_repr(self) -> str:
        n = self.normalization
        return f"mean={n.mean}, std={n.std}, in_channels={n.in_channels}"


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

    ``normalization`` (default: what ``net`` records under ``NORMALIZATION_ATTRIBUTE``,
    set by ``build_model`` for ImageNet weights) is applied to every input before ``net``
    sees it, in ``forward``, ``forward_with_latent``, ``latent`` and
    ``parameters_after_latent``; it is recorded on ``net`` so every wrapper of the same
    network inherits it. Without one, inputs reach ``net`` untouched, as they always did.
    """

    def __init__(
        self,
        net: nn.Module,
        latent_layer: str,
        num_classes: int,
        arch: str = "custom",
        normalization: Normalization | None = None,
    ):
        super().__init__()
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.latent_layer = latent_layer
        _latent_module(net, latent_layer, arch)  # fail at construction, not at first use
        if normalization is None:
            normalization = getattr(net, NORMALIZATION_ATTRIBUTE, None)
        self.input_normalization: InputNormalization | None = None
        if normalization is not None:
            setattr(net, NORMALIZATION_ATTRIBUTE, normalization)
            self.input_normalization = InputNormalization(normalization, device=_device_of(net))
        self._inputs_normalized = False

    def normalize_input(self, x: Tensor) -> Tensor:
        """What ``net`` sees for input ``x``: ``x`` normalised, or ``x`` itself without a normalisation."""
        return x if self.input_normalization is None else self.input_normalization(x)

    @contextlib.contextmanager
    def inputs_already_normalized(self) -> Iterator[LatentModel]:
        """For the block, every forward takes ``normalize_input(x)`` instead of ``x``.

        Explanations use it: LRP treats the normalised tensor as the input, so the
        normalisation (a per-channel affine map, which no LRP rule covers) does not stand
        between the rules and the pixels. Sets a flag on this model: do not run it in
        another thread meanwhile.
        """
        previous = self._inputs_normalized
        self._inputs_normalized = True
        try:
            yield self
        finally:
            self._inputs_normalized = previous

    def _net_input(self, x: Tensor) -> Tensor:
        if self.input_normalization is None or self._inputs_normalized:
            return x
        return self.input_normalization(x)

    @property
    def latent_module(self) -> nn.Module:
        """The submodule whose output is the latent activation."""
        return self.net.get_submodule(self.latent_layer)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x``."""
        return self.net(self._net_input(x))

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
            logits = self.net(self._net_input(x))
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
            self.net(self._net_input(x))
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
                self.net(self._net_input(example_input))
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


def _device_of(net: nn.Module) -> torch.device | None:
    """Where ``net``'s tensors live (None for a net without any): a wrapper built around an
    already moved network must put its normalisation constants there too."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return None


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


def _check_timm_name(name: str) -> None:
    """A UserError suggesting close names unless timm knows ``name``."""
    import difflib

    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(TIMM_PREFIX + c) for c in close)}?" if close else ""
        raise UserError(f"unknown timm model {name!r}{hint} (see timm.list_models())")


def _timm_feature_module(net: nn.Module) -> str | None:
    """The module timm names as the last feature map, if it says."""
    info = getattr(net, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], Mapping):
        return info[-1].get("module") or None
    if info is not None and hasattr(info, "module_name"):
        return info.module_name()[-1] or None
    return None


def _build_timm(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str | None]:
    """A timm model with random weights and its last feature module, if timm says."""
    import timm

    _check_timm_name(name)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except Exception as exc:  # bad kwargs for this family, etc.: the user's choice of model
        raise UserError(f"timm model {name!r} could not be built: {_one_line(exc)}") from exc
    return net, _timm_feature_module(net)


# --------------------------------------------------------------------------- ImageNet weights


@dataclass(frozen=True)
class _TorchvisionWeights:
    """Where torchvision keeps one model's ImageNet weights, and which tensors are its head."""

    enum: str  # class name in torchvision.models; its IMAGENET1K_V1 member is used
    head: str  # module whose tensors are replaced for another number of classes

    def weights(self) -> Any:
        import torchvision.models

        return getattr(torchvision.models, self.enum).IMAGENET1K_V1


#: Built-in architectures with torchvision ImageNet weights (``timm:<name>`` uses timm's).
IMAGENET_ARCHS: dict[str, _TorchvisionWeights] = {
    "vgg16": _TorchvisionWeights("VGG16_Weights", "classifier.6"),
    "resnet18": _TorchvisionWeights("ResNet18_Weights", "fc"),
    "efficientnet_b0": _TorchvisionWeights("EfficientNet_B0_Weights", "classifier.1"),
}


def _torch_hub_checkpoints() -> Path:
    """torch's download cache, ``$TORCH_HOME/hub/checkpoints`` (read at every call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_weights_file(arch: str) -> Path:
    """The file ``pretrained: imagenet`` reads for torchvision model ``arch``.

    It is where ``torchvision.models.<arch>(weights=...IMAGENET1K_V1)`` caches its download,
    so a file fetched by torchvision on any machine can be copied there as it is.
    """
    url = IMAGENET_ARCHS[arch].weights().url
    return _torch_hub_checkpoints() / os.path.basename(url)


def _imagenet_normalization(mean: Sequence[float], std: Sequence[float], in_channels: int, arch: str) -> Normalization:
    if in_channels not in (1, len(mean)):
        raise UserError(
            f"pretrained: imagenet needs {len(mean)}-channel images (or grey ones, repeated to "
            f"{len(mean)} channels); the data has {in_channels} channels for {arch!r}"
        )
    return Normalization(tuple(float(v) for v in mean), tuple(float(v) for v in std), in_channels)


def _verify_hash(path: Path) -> None:
    """Compare ``path``'s sha256 with the prefix its name carries (``name-<hex>.pth``).

    torch's hub checks this only while downloading; a cached copy is loaded as it is. A
    truncated or replaced file would otherwise train under the name of ImageNet weights.
    Costs one more read of the file, small next to loading and training it (docs/models.md,
    "ImageNet-pretrained backbones", has the time for VGG-16).
    """
    match = re.search(torch.hub.HASH_REGEX, path.name)
    if match is None or not match.group(1):
        return
    expected = match.group(1)
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise UserError(
            f"{path} is not the published file (its sha256 starts with {digest.hexdigest()[:len(expected)]}, "
            f"its name says {expected}): a partial or different download; delete it and fetch it again"
        )


def _torchvision_imagenet(arch: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str, Normalization]:
    """torchvision's ``arch`` with its ImageNet weights and a new, seeded head.

    The network is built as for random init (so the head is drawn from the global RNG,
    i.e. the run seed, exactly as a non-pretrained build draws it), then every other
    tensor is replaced by the cached file's. The file is checked before anything is read,
    and read with ``torch.load`` directly: torchvision's own loader would try to download.
    """
    path, normalization = _locate_torchvision(arch, in_channels)
    spec = IMAGENET_ARCHS[arch]
    _verify_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read ImageNet weights {path}: {_one_line(exc)}") from exc
    if not isinstance(state, MutableMapping):
        raise UserError(f"ImageNet weights {path} hold a {type(state).__name__}, not a state dict")

    net, default = MODELS.get(arch)(num_classes, 3)
    target = net.state_dict()
    head = {k for k in target if k.startswith(spec.head + ".")}
    for key in [k for k in state if k.startswith(spec.head + ".")]:
        del state[key]  # in place: keeps the metadata BatchNorm reads for old checkpoints
    for key, value in state.items():
        if key in target and (not isinstance(value, Tensor) or value.shape != target[key].shape):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise UserError(f"{path} is not torchvision's {arch} ImageNet checkpoint: {key} is {shape}, "
                            f"the network's is {tuple(target[key].shape)}")
    result = net.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - head
    if missing or result.unexpected_keys:
        odd = sorted(missing) + list(result.unexpected_keys)
        raise UserError(
            f"{path} is not torchvision's {arch} ImageNet checkpoint: "
            f"{len(missing)} tensors missing, {len(result.unexpected_keys)} unexpected (e.g. {odd[0]})"
        )
    log.info("loaded torchvision ImageNet weights for %s from %s; new %d-class head %s",
             arch, path, num_classes, spec.head)
    return net, default, normalization


def _timm_weights_file(name: str, cfg: Any) -> tuple[Path, bool]:
    """The cached file timm would load for ``name``, and whether it needs timm's custom loader.

    timm prefers the Hugging Face hub (``model.safetensors``, else ``pytorch_model.bin``,
    in ``HF_HUB_CACHE``) and falls back to the URL (in torch's hub cache); both caches are
    looked up without any network access, so an offline machine never hangs.
    """
    hf_hub_id = getattr(cfg, "hf_hub_id", None)
    url = getattr(cfg, "url", None)
    custom_load = getattr(cfg, "custom_load", False)
    places: list[str] = []
    if hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = hf_hub_id.partition("@")
        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            found = try_to_load_from_cache(repo, filename, cache_dir=constants.HF_HUB_CACHE, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), custom_load == "hf"
        folder = f"models--{repo.replace('/', '--')}"
        places.append(
            f"{filenames[0]} of Hugging Face repo {repo} in {constants.HF_HUB_CACHE} (HF_HUB_CACHE) as "
            f"{folder}/snapshots/<commit>/{filenames[0]} with <commit> in {folder}/refs/main, the layout "
            f"`huggingface-cli download {repo} {filenames[0]}` makes online"
        )
    if url:
        path = _torch_hub_checkpoints() / os.path.basename(url)
        if path.is_file():
            return path, bool(custom_load)
        places.append(f"{path.name} in {path.parent} (TORCH_HOME; the file is {url})")
    if not places:
        raise UserError(f"pretrained: imagenet: timm has no pretrained weights for {name!r}")
    raise UserError(f"pretrained: imagenet weights for {TIMM_PREFIX}{name} not found: put " + ", or ".join(places))


def _locate_timm(name: str, in_channels: int) -> tuple[Any, Path, bool, Normalization]:
    """timm's pretrained cfg for ``name``, its cached file, custom-load flag and normalisation."""
    from timm.models import get_pretrained_cfg

    _check_timm_name(name)
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"pretrained: imagenet: timm has no pretrained weights for {name!r}")
    normalization = _imagenet_normalization(cfg.mean, cfg.std, in_channels, TIMM_PREFIX + name)
    path, custom_load = _timm_weights_file(name, cfg)
    return cfg, path, custom_load, normalization


def _locate_torchvision(arch: str, in_channels: int) -> tuple[Path, Normalization]:
    """The cached file of torchvision's ``arch`` and the normalisation its weights expect."""
    MODELS.get(arch)  # an unknown name is reported as such, with suggestions
    if arch not in IMAGENET_ARCHS:
        raise UserError(
            f"pretrained: imagenet has no weights for {arch!r}; it is available for "
            f"{', '.join(IMAGENET_ARCHS)} and {TIMM_PREFIX}<name>"
        )
    weights = IMAGENET_ARCHS[arch].weights()
    transforms = weights.transforms()
    normalization = _imagenet_normalization(transforms.mean, transforms.std, in_channels, arch)
    path = imagenet_weights_file(arch)
    if not path.is_file():
        raise UserError(
            f"pretrained: imagenet weights for {arch} not found: put {path.name} in {path.parent} "
            f"(torch's hub cache; set TORCH_HOME to move it; the file is {weights.url})"
        )
    return path, normalization


def check_imagenet_weights(arch: str, in_channels: int = 3) -> Path:
    """The cached file ``build_model(arch, ..., pretrained="imagenet")`` would load.

    Raises the same one-line UserError the build would for an architecture without
    ImageNet weights, a channel count they cannot take, or a missing file. Cheap (the
    file is neither read nor hashed, nothing is built or downloaded), so a sweep can check
    every job before the first one trains.
    """
    if arch.startswith(TIMM_PREFIX):
        return _locate_timm(arch[len(TIMM_PREFIX) :], in_channels)[1]
    return _locate_torchvision(arch, in_channels)[0]


def _timm_imagenet(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str | None, Normalization]:
    """timm's ``name`` with its pretrained weights, loaded by timm from the cached file.

    timm itself drops the pretrained classifier for another number of classes (the new
    one keeps its seeded init) and applies the model's checkpoint filter; only the source
    is overridden (``pretrained_cfg_overlay=dict(file=...)``), so timm never downloads.
    The network always reads 3 channels: grey images are repeated by the normalisation,
    which keeps the first convolution exactly timm's.
    """
    import timm

    cfg, path, custom_load, normalization = _locate_timm(name, in_channels)
    _verify_hash(path)  # a no-op for Hugging Face names (no hash in them)
    try:
        net = timm.create_model(
            name,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path), "custom_load": custom_load},
            num_classes=num_classes,
            in_chans=len(cfg.mean),
        )
    except Exception as exc:
        raise UserError(f"timm could not load {TIMM_PREFIX}{name} weights from {path}: {_one_line(exc)}") from exc
    log.info("loaded timm pretrained weights for %s from %s", name, path)
    return net, _timm_feature_module(net), normalization


# --------------------------------------------------------------------------- build + load


def check_model_name(arch: str) -> None:
    """A ``UserError`` unless ``arch`` names a registered builder or a model timm knows:
    checked when a config is resolved, so a sweep with a misspelt model fails before its
    first job instead of after the others trained."""
    if arch.startswith(TIMM_PREFIX):
        _check_timm_name(arch[len(TIMM_PREFIX):])
    elif arch not in MODELS:
        known = [*MODELS.names(), f"{TIMM_PREFIX}<name>"]
        raise UserError(unknown_name_message("model", arch, known))


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
            net, default, normalization = _timm_imagenet(arch[len(TIMM_PREFIX) :], num_classes, in_channels)
        else:
            net, default = _build_timm(arch[len(TIMM_PREFIX) :], num_classes, in_channels)
        if latent_layer is None and default is None:
            raise UserError(f"{arch!r} has no feature_info to choose a latent layer from; pass latent_layer")
    elif pretrained == IMAGENET:
        net, default, normalization = _torchvision_imagenet(arch, num_classes, in_channels)
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
