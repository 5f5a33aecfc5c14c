"""Procedural shapes with an artifact inserted into one attacked class.

Every class is a shape (disk, square, ring, cross, diamond, triangle) at a random
position, size and brightness on a noisy grey background. In train, val and the natural
test split, samples of ``attacked_class`` carry the artifact with probability ``p``, so
the artifact is a shortcut to that class. ``test_clean`` is every test image without the
artifact, ``test_biased`` every test image with it (same images, same positions), so the
accuracy drop between the two views is the model's reliance on the artifact.
The bias attribute is "has the artifact" (0 / 1); masks are exact per-sample pixel sets.

``artifact`` picks the kind (see ``debiasbench.data.artifacts``): ``patch`` (a ``patch_size``
square of ``patch_color``, the default), ``lsb`` (a fixed bit pattern in the least
significant bit of every pixel), ``brightness`` (the image moved ``artifact_strength``,
default 0.3, towards white), ``timestamp`` (a date / time stamp in ``artifact_color``,
default white; needs ``image_size`` >= 30) or ``tint`` (the image blended with
``artifact_color``, default red, at weight ``artifact_strength``, default 0.25).
With ``lsb`` every image of every split and view is quantised to 8 bits
(``round(x * 255) / 255``), so the clean view is exactly the quantised image and the
masks mark exactly the pixels the pattern changed.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from debiasbench.data.artifacts import ALL_COLORS, COLORS, KINDS, quantize
from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.errors import ConfigError
from debiasbench.core.hparams import HParam
from debiasbench.data.injection import make_artifact
from debiasbench.core.resources import check_memory

#: Most samples of one generated split: a bound before the memory check, so that a typo
#: (``n_train: 10**9``) is refused by name.
MAX_SAMPLES = 1_000_000
SHAPES = ("disk", "square", "ring", "cross", "diamond", "triangle")


def draw_shapes(labels: Tensor, size: int, generator: torch.Generator, noise: float = 0.0) -> Tensor:
    """Grey images [N, 3, size, size] in [0, 1], one shape per sample chosen by its label.

    ``noise`` is the standard deviation of Gaussian pixel noise: it makes shapes harder to
    tell apart, so that a model has a reason to take the artifact's shortcut.
    """
    n = labels.shape[0]
    coords = torch.arange(size, dtype=torch.float32)
    center_y = size * (0.3 + 0.4 * torch.rand(n, 1, 1, generator=generator))
    center_x = size * (0.3 + 0.4 * torch.rand(n, 1, 1, generator=generator))
    radius = size * (0.15 + 0.13 * torch.rand(n, 1, 1, generator=generator))
    dy = coords.view(1, size, 1) - center_y
    dx = coords.view(1, 1, size) - center_x
    dist = torch.sqrt(dx**2 + dy**2)
    ax, ay = dx.abs(), dy.abs()
    shapes = torch.stack([
        dist < radius,
        torch.maximum(ax, ay) < 0.85 * radius,
        (dist < radius) & (dist > 0.55 * radius),
        (torch.minimum(ax, ay) < 0.25 * radius) & (torch.maximum(ax, ay) < radius),
        ax + ay < 1.2 * radius,
        (dy > -radius) & (dy < 0.8 * radius) & (ax < 0.55 * (dy + radius)),
    ])  # [shapes, N, H, W]
    foreground = shapes[labels, torch.arange(n)].float()
    brightness = 0.55 + 0.45 * torch.rand(n, 1, 1, generator=generator)
    background = 0.35 * torch.rand(n, size, size, generator=generator)
    grey = torch.where(foreground > 0, brightness.expand_as(background), background)
    if noise > 0:
        grey = (grey + noise * torch.randn(grey.shape, generator=generator)).clamp(0, 1)
    return grey.unsqueeze(1).expand(n, 3, size, size).contiguous()


class SyntheticArtifacts(BenchmarkDataset):
    name = "synthetic_artifacts"
    description = ("Procedural shapes; an artifact (patch, lsb, brightness, timestamp, tint) marks "
                   "one attacked class (exact masks).")
    provides = frozenset({"bias_labels", "artifact_labels", "artifact_masks"})
    params = {
        "num_classes": HParam(4, low=2, high=len(SHAPES), help="number of shape classes"),
        "image_size": HParam(32, low=16, high=256, help="side of the square images"),
        "n_train": HParam(2000, low=10, high=MAX_SAMPLES, help="training images generated"),
        "n_val": HParam(500, low=10, high=MAX_SAMPLES, help="validation images generated"),
        "n_test": HParam(1000, low=10, high=MAX_SAMPLES,
                         help="test images generated (each test view shows the same images)"),
        "attacked_class": HParam(0, low=0, help="class whose samples may carry the artifact"),
        "p": HParam(0.5, low=0.0, high=1.0, help="artifact probability in the attacked class"),
        "artifact": HParam("patch", choices=tuple(KINDS), help="artifact kind"),
        "patch_size": HParam(5, low=1, help="patch side (artifact=patch)"),
        "patch_color": HParam("red", choices=tuple(COLORS), help="patch colour (artifact=patch)"),
        "artifact_strength": HParam(None, type=float, low=0.0, high=1.0,
                                    help="artifact=brightness: share of the way to white (null: 0.3); "
                                         "artifact=tint: blend weight (null: 0.25)"),
        "artifact_color": HParam(None, type=str, choices=tuple(ALL_COLORS),
                                 help="artifact=timestamp: text colour (null: white); "
                                      "artifact=tint: colour (null: red)"),
        "noise": HParam(0.3, low=0.0, high=1.0, help="std of Gaussian pixel noise (harder shapes)"),
        "seed": HParam(0, low=0, help="seed of the generated data (fixed across run seeds)"),
    }
    train_defaults = {"epochs": 5, "batch_size": 64, "lr": 1e-3}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """The attacked class must exist, the patch fit the image, and building the images
        fit the memory available now. Peak memory while building, measured at 32 px: about
        40 bytes per pixel position of a training sample and 52 of a val or test sample (float32
        images, the clean and biased views of val and test, masks, and temporaries)."""
        if params["attacked_class"] >= params["num_classes"]:
            raise ConfigError(f"dataset_params.attacked_class: expected an integer below num_classes "
                              f"({params['num_classes']}), got {params['attacked_class']}")
        if params["artifact"] == "patch" and params["patch_size"] > params["image_size"]:
            raise ConfigError(f"dataset_params.patch_size: expected at most image_size ({params['image_size']}), "
                              f"got {params['patch_size']}")
        per_position = 40 * params["n_train"] + 52 * (params["n_val"] + params["n_test"])
        check_memory(per_position * params["image_size"] ** 2, "dataset synthetic_artifacts at these sizes")

    @classmethod
    def shortcut_in_one_class(cls, params) -> bool:
        """The artifact points to ``attacked_class`` only."""
        return True

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self.num_classes = p["num_classes"]
        self.num_bias = 2
        self.attacked_class = p["attacked_class"]
        # patch_size has a default here (the patch is the default kind); other kinds ignore it.
        inject = make_artifact({**p, "patch_size": p["patch_size"] if p["artifact"] == "patch" else None},
                               p["image_size"], p["num_classes"])
        assert inject is not None  # this dataset's artifact choices have no "none"
        self.inject = inject
        generator = torch.Generator().manual_seed(p["seed"])
        self.splits, self.views = {}, {}
        for split in ("train", "val", "test"):
            clean, biased, natural = self._build(p[f"n_{split}"], generator)
            self.splits[split] = natural
            if split != "train":
                self.views[f"{split}_clean"] = clean
                self.views[f"{split}_biased"] = biased
        clean_x, biased_x = self.views["test_clean"].x, self.views["test_biased"].x
        direction = (biased_x - clean_x).mean(0)
        self.artifact_direction = direction / direction.norm()

    def _build(self, n: int, generator: torch.Generator) -> tuple[Split, Split, Split]:
        """The same images three ways: without artifact, all with it, and as sampled."""
        labels = torch.randint(0, self.num_classes, (n,), generator=generator)
        clean_x = draw_shapes(labels, self.p["image_size"], generator, self.p["noise"])
        if self.p["artifact"] == "lsb":
            clean_x = quantize(clean_x)  # on the 8-bit grid, so only the pattern's bits change
        biased_x, mask = self.inject(clean_x, generator)
        attacked = labels == self.attacked_class
        has = attacked & (torch.rand(n, generator=generator) < self.p["p"])

        def view(x: Tensor, artifact: Tensor, view_mask: Tensor) -> Split:
            return Split(x=x, y=labels, bias=artifact.long(), artifact=artifact,
                         conflicting=artifact != attacked, mask=view_mask)

        no_artifact = torch.zeros(n, dtype=torch.bool)
        natural_x = torch.where(has.view(n, 1, 1, 1), biased_x, clean_x)
        natural_mask = mask & has.view(n, 1, 1, 1)
        return (view(clean_x, no_artifact, torch.zeros_like(mask)),
                view(biased_x, ~no_artifact, mask),
                view(natural_x, has, natural_mask))
