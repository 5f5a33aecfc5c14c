"""Initial weights: the libraries' ImageNet weights from their standard caches, or a file.

``pretrained`` is a local file, or ``"imagenet"`` for the libraries' own ImageNet weights
(torchvision's for ``vgg16``, ``resnet18`` and ``efficientnet_b0``, timm's for
``timm:<name>``) read from the libraries' standard caches. Nothing here downloads weights,
so runs are reproducible offline and a missing file is one readable error instead of a
network hang.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from debiasbench.core.errors import UserError
from debiasbench.core.files import CHECKPOINT_LIMIT, check_regular_file, open_regular
from debiasbench.core.registry import MODELS
from debiasbench.models.architectures import TIMM_PREFIX, check_timm_name, exception_line, timm_feature_module
from debiasbench.models.latent import Normalization


log = logging.getLogger(__name__)


#: ``pretrained=IMAGENET`` loads the library's ImageNet weights instead of a file.
IMAGENET = "imagenet"


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


def torchvision_imagenet(arch: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str, Normalization]:
    """torchvision's ``arch`` with its ImageNet weights and a new, seeded head.

    The network is built as for random init (so the head is drawn from the global RNG,
    i.e. the run seed, exactly as a non-pretrained build draws it), then every other
    tensor is replaced by the cached file's. The file is checked before anything is read,
    and read with ``torch.load`` directly: torchvision's own loader would try to download.
    """
    path, normalization = _locate_torchvision(arch, in_channels)
    spec = IMAGENET_ARCHS[arch]
    check_regular_file(path, "ImageNet weights file", CHECKPOINT_LIMIT)  # a pipe would hang the hash
    _verify_hash(path)
    try:
        with open_regular(path, "ImageNet weights file", CHECKPOINT_LIMIT) as stream:
            state = torch.load(stream, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read ImageNet weights {path}: {exception_line(exc)}") from exc
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

    check_timm_name(name)
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


def timm_imagenet(name: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str | None, Normalization]:
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
        raise UserError(f"timm could not load {TIMM_PREFIX}{name} weights from {path}: {exception_line(exc)}") from exc
    log.info("loaded timm pretrained weights for %s from %s", name, path)
    return net, timm_feature_module(net), normalization


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
    if not path.exists():
        raise UserError(f"pretrained checkpoint not found: {path}")
    try:
        with open_regular(path, "pretrained checkpoint", CHECKPOINT_LIMIT) as stream:
            checkpoint = torch.load(stream, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read pretrained checkpoint {path}: {exception_line(exc)}") from exc
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
