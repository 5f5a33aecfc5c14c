"""Controlled artifacts on any image dataset, as the RR-ClArC experiments insert them.

Samples of ``attacked_class`` carry the artifact with probability ``p`` in the train,
val and natural test splits, so the artifact becomes a shortcut to that class. The
controlled views are built from the same val / test images: ``*_clean`` without the
artifact anywhere and ``*_biased`` with it on every image (same positions as in the
natural split), so the accuracy drop between them is the model's reliance on it. The
bias attribute is "has the artifact" (0 / 1); masks mark exactly the changed pixels.

Images must be on the 8-bit grid (an image cache's ``uint8 / 255`` is), so the ``lsb``
mask is exactly the pattern's bits.

Nothing is painted here: the random choices of every sample (who carries the artifact,
where, which stamp) are drawn once, in a fixed order from the dataset's seed, and each
split or view is the same cached rows with an ``Injection`` that paints them per batch on
the device. Three views of a test split therefore cost no image memory at all.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from debiasbench.data.artifacts import ALL_COLORS, COLORS, KINDS, Injector, make_injector
from debiasbench.data.dataset import CAPABILITIES, Split
from debiasbench.core.errors import ConfigError
from debiasbench.core.hparams import HParam
from debiasbench.data.pixels import InjectedPixels, Injection, Pixels, TensorPixels

#: The dataset params of artifact injection, shared by every image-file dataset.
ARTIFACT_PARAMS: dict[str, HParam] = {
    "artifact": HParam("none", choices=("none", *KINDS),
                       help="artifact inserted into the attacked class (none: the data as it is); "
                            "any other adds bias_labels, artifact_labels, artifact_masks"),
    "attacked_class": HParam(0, low=0, help="class whose samples may carry the artifact"),
    "p": HParam(0.5, low=0.0, high=1.0, help="artifact probability in the attacked class"),
    "patch_size": HParam(None, type=int, low=1, help="artifact=patch: side in pixels (null: image_size // 8)"),
    "patch_color": HParam("red", choices=tuple(COLORS), help="artifact=patch: colour"),
    "artifact_strength": HParam(None, type=float, low=0.0, high=1.0,
                                help="artifact=brightness: share of the way to white (null: 0.3); "
                                     "artifact=tint: blend weight (null: 0.25)"),
    "artifact_color": HParam(None, type=str, choices=tuple(ALL_COLORS),
                             help="artifact=timestamp: text colour (null: white); artifact=tint: colour (null: red)"),
}


def injects(params: Mapping[str, Any]) -> bool:
    return params.get("artifact", "none") != "none"


def make_artifact(params: Mapping[str, Any], image_size: int, num_classes: int) -> Injector | None:
    """The configured injector (None for ``artifact=none``); bad combinations are ``ConfigError``."""
    kind = params["artifact"]
    for name, kinds in (("artifact_strength", ("brightness", "tint")),
                        ("artifact_color", ("timestamp", "tint")), ("patch_size", ("patch",))):
        if params[name] is not None and kind not in kinds:
            raise ConfigError(f"dataset_params.{name}: only artifact {' / '.join(kinds)} takes it; "
                              f"expected null for artifact {kind!r}, got {params[name]!r}")
    if kind == "none":
        return None
    if params["attacked_class"] >= num_classes:
        raise ConfigError(f"dataset_params.attacked_class: expected an integer in [0, {num_classes - 1}], "
                          f"got {params['attacked_class']}")
    if params["artifact_strength"] == 0.0:
        raise ConfigError("dataset_params.artifact_strength: expected a float in (0, 1] "
                          "(0 inserts no artifact), got 0.0")
    size = params["patch_size"] or max(1, image_size // 8)
    if kind == "patch" and size > image_size:
        raise ConfigError(f"dataset_params.patch_size: expected at most image_size ({image_size}), got {size}")
    options = {"patch": {"size": size, "color": params["patch_color"]},
               "brightness": {"strength": params["artifact_strength"]},
               "tint": {"strength": params["artifact_strength"], "color": params["artifact_color"]},
               "timestamp": {"color": params["artifact_color"]}}.get(kind, {})
    inject = make_injector(kind, **options)
    check_size = getattr(inject, "check_size", None)
    if check_size is not None:
        try:
            check_size(image_size, image_size)
        except ValueError as error:
            raise ConfigError(f"dataset_params.image_size: {error}") from None
    return inject


def injected_splits(pixels: Pixels | Tensor, y: Tensor, attacked_class: int, p: float, inject: Injector,
                    generator: torch.Generator, views: bool) -> tuple[Split, Split | None, Split | None]:
    """(natural, clean, biased) of the images ``pixels`` (a source, or a tensor of images);
    without ``views`` only natural (the training split: only the chosen samples draw an
    artifact).

    Draws in the order earlier versions painted in (who, then where), so the same seed
    gives the same pixels and masks."""
    if isinstance(pixels, Tensor):
        pixels = TensorPixels(pixels)
    base = pixels
    n = len(y)
    attacked = y == attacked_class
    has = attacked & (torch.rand(n, generator=generator) < p)
    height, width = pixels.sample_shape[1:]

    def split(injection: Injection, artifact: Tensor) -> Split:
        return Split(pixels=InjectedPixels(base, injection), y=y, bias=artifact.long(),
                     artifact=artifact, conflicting=artifact != attacked)

    if not views:
        chosen = has.nonzero().squeeze(1)
        drawn = inject.draw(len(chosen), height, width, generator) if len(chosen) else None
        draws = torch.zeros(n, 0 if drawn is None else drawn.shape[1], dtype=torch.long)
        if drawn is not None:
            draws[chosen] = drawn
        return split(Injection(inject, draws, has, "natural" if len(chosen) else "none"), has), None, None
    draws = inject.draw(n, height, width, generator)
    no_artifact = torch.zeros(n, dtype=torch.bool)
    return (split(Injection(inject, draws, has, "natural"), has),
            split(Injection(inject, draws, no_artifact, "none"), no_artifact),
            split(Injection(inject, draws, ~no_artifact, "all"), ~no_artifact))
