"""Controlled artifacts on any image dataset, as the RR-ClArC experiments insert them.

Samples of ``attacked_class`` carry the artifact with probability ``p`` in the train,
val and natural test splits, so the artifact becomes a shortcut to that class. The
controlled views are built from the same val / test images: ``*_clean`` without the
artifact anywhere and ``*_biased`` with it on every image (same positions as in the
natural split), so the accuracy drop between them is the model's reliance on it. The
bias attribute is "has the artifact" (0 / 1); masks mark exactly the changed pixels.

Images must be on the 8-bit grid (an image cache's ``uint8 / 255`` is), so the ``lsb``
mask is exactly the pattern's bits.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from debiasbench.artifacts import ALL_COLORS, COLORS, KINDS, Injector, make_injector
from debiasbench.data import Split
from debiasbench.errors import ConfigError
from debiasbench.hparams import HParam

#: What a dataset provides once an artifact is injected.
ARTIFACT_PROVIDES = frozenset({"bias_labels", "artifact_labels", "artifact_masks"})

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


def injected_splits(x: Tensor, y: Tensor, attacked_class: int, p: float, inject: Injector,
                    generator: torch.Generator, views: bool) -> tuple[Split, Split | None, Split | None]:
    """(natural, clean, biased) of the images ``x``; without ``views`` only natural
    (the training split: only the chosen samples are injected, no second copy)."""
    n = len(y)
    attacked = y == attacked_class
    has = attacked & (torch.rand(n, generator=generator) < p)

    def split(images: Tensor, artifact: Tensor, mask: Tensor) -> Split:
        return Split(x=images, y=y, bias=artifact.long(), artifact=artifact,
                     conflicting=artifact != attacked, mask=mask)

    if not views:
        natural_x = x.clone()
        mask = torch.zeros(n, 1, *x.shape[2:], dtype=torch.bool)
        chosen = has.nonzero().squeeze(1)
        if len(chosen):
            natural_x[chosen], mask[chosen] = inject(x[chosen], generator)
        return split(natural_x, has, mask), None, None
    biased_x, mask = inject(x, generator)
    shown = has.view(n, 1, 1, 1)
    no_artifact = torch.zeros(n, dtype=torch.bool)
    return (split(torch.where(shown, biased_x, x), has, mask & shown),
            split(x, no_artifact, torch.zeros_like(mask)),
            split(biased_x, ~no_artifact, mask))
