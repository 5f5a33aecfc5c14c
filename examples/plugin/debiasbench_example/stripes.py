"""Coloured stripes: the class is the stripes' orientation, the shortcut their background.

Every image is white stripes (random period and phase) of one orientation per class
(horizontal, vertical, diagonal, anti-diagonal) on a coloured background, plus pixel
noise. In train and val the background colour agrees with the class for exactly
``bias_ratio`` of the samples, another class's colour otherwise, so colour is a shortcut
that is easier to learn than orientation. The natural test split has a uniformly random
colour, ``*_biased`` views the aligned colour and ``*_clean`` views a grey background
(bias unknown, -1); all three show the same stripes. The data is generated in code from
``seed``, so it ships with the package and is the same on every machine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.hparams import HParam

#: Direction along which the stripes alternate, per class.
ORIENTATIONS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)],
                             [math.sqrt(0.5), -math.sqrt(0.5)]])
#: Background colour aligned with each class.
PALETTE = torch.tensor([[0.75, 0.15, 0.15], [0.15, 0.6, 0.15], [0.15, 0.25, 0.8], [0.75, 0.65, 0.1]])
GREY = torch.tensor([0.45, 0.45, 0.45])


def draw_stripes(labels: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Boolean stripe masks [N, size, size], oriented by label, random period and phase."""
    n = labels.shape[0]
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = coords.view(1, size, 1), coords.view(1, 1, size)
    direction = ORIENTATIONS[labels]
    period = 3.0 + 3.0 * torch.rand(n, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=generator)
    along = direction[:, 0].view(n, 1, 1) * rows + direction[:, 1].view(n, 1, 1) * cols
    return torch.sin(2 * math.pi * along / period + phase) > 0


def colours_with_ratio(labels: Tensor, ratio: float, num_colours: int, generator: torch.Generator) -> Tensor:
    """Colour = label for exactly round(ratio * n) random samples, another colour for the rest."""
    n = labels.shape[0]
    colours = labels.clone()
    conflicting = torch.randperm(n, generator=generator)[:n - round(ratio * n)]
    shift = torch.randint(1, num_colours, (len(conflicting),), generator=generator)
    colours[conflicting] = (labels[conflicting] + shift) % num_colours
    return colours


class ColoredStripes(BenchmarkDataset):
    name = "colored_stripes"
    description = "Stripe orientation is the class; background colour agrees with it at bias_ratio."
    provides = frozenset({"bias_labels"})
    params = {
        "num_classes": HParam(4, low=2, high=len(ORIENTATIONS), help="number of orientations"),
        "image_size": HParam(16, low=8, high=64),
        "n_train": HParam(1000, low=10),
        "n_val": HParam(300, low=10),
        "n_test": HParam(500, low=10),
        "bias_ratio": HParam(0.95, low=0.0, high=1.0,
                             help="share of train/val samples whose background matches the class"),
        "noise": HParam(0.1, low=0.0, high=1.0, help="std of Gaussian pixel noise"),
        "seed": HParam(0, low=0, help="seed of the generated data (fixed across run seeds)"),
    }
    train_defaults = {"epochs": 3, "batch_size": 64, "lr": 1e-3}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self.num_classes = self.num_bias = p["num_classes"]
        generator = torch.Generator().manual_seed(p["seed"])
        self.splits, self.views = {}, {}
        for split in ("train", "val", "test"):
            n = p[f"n_{split}"]
            labels = torch.randint(0, self.num_classes, (n,), generator=generator)
            stripes = draw_stripes(labels, p["image_size"], generator)
            noise = p["noise"] * torch.randn(n, 3, p["image_size"], p["image_size"], generator=generator)
            if split == "test":
                colours = torch.randint(0, self.num_classes, (n,), generator=generator)
            else:
                colours = colours_with_ratio(labels, p["bias_ratio"], self.num_classes, generator)

            def paint(background: Tensor, bias: Tensor) -> Split:
                x = torch.where(stripes.unsqueeze(1), torch.ones(()), background.view(-1, 3, 1, 1))
                return Split(x=(x + noise).clamp(0, 1), y=labels, bias=bias,
                             artifact=torch.zeros(n, dtype=torch.bool),
                             conflicting=(bias >= 0) & (bias != labels))

            self.splits[split] = paint(PALETTE[colours], colours)
            if split != "train":
                self.views[f"{split}_biased"] = paint(PALETTE[labels], labels.clone())
                self.views[f"{split}_clean"] = paint(GREY.expand(n, 3), torch.full_like(labels, -1))
