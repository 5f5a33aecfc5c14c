"""Coloured handwritten digits: the Colored-MNIST protocol on data that ships with scikit-learn.

scikit-learn's ``load_digits`` (1,797 real 8x8 digits) are upscaled and their strokes
coloured with one of ten colours. In train and val the colour agrees with the digit for
exactly ``bias_ratio`` of the samples (the rest get one of the other nine colours), so
colour is a shortcut. The natural test split has a uniformly random colour (about 90%
bias-conflicting), ``test_biased`` the aligned colour for every digit and ``test_clean``
no colour cue at all (white strokes). The bias attribute is the colour index.
The defaults (the digits' native 8x8 pixels, 95% aligned) are chosen so that a run shows
something: with only 1,078 training digits, the vanilla small CNN learns the shapes
(clean accuracy about 0.64 against a chance of 0.1) while the shortcut stays visible
(bias-aligned 1.0, conflicting about 0.42; 3 seeds, data version 2). At 0.99 only 11 training digits conflict and
at 28 px the upscaled strokes are no easier to learn: vanilla ends near chance on clean
digits, and every method with it; Colored MNIST proper (``colored_mnist``, 8,000 and more
real digits) is the dataset for the papers' 99% and 99.5% settings.
Validation follows the training distribution by default: nothing about the test
distribution leaks into model selection. ``val_bias_ratio`` sets it apart for protocols
that assume a held-out set with minority groups, as Waterbirds' validation split (balanced
over backgrounds) is for DFR's last-layer refit and for worst-group model selection.

Randomness: the 60/20/20 split is scikit-learn's stratified ``train_test_split`` with
``random_state=seed``; the colours of each split come from a stream of their own, named
and derived from ``seed`` as a run's streams are (``debiasbench.core.randomness.stream``:
``colored_digits.train``, ``colored_digits.val``, ``colored_digits.test``), so a
parameter of one split (``val_bias_ratio``) changes nothing in the others.
Version 2 (``version``): the colours come from these named streams; version 1 drew train,
val and test colours one after the other from one generator seeded with ``seed`` (and the
validation colours of ``val_bias_ratio`` from ``seed + 7919``). The same parameters give
other colours, so runs record ``dataset_version: 2`` and get other run keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.hparams import HParam
from debiasbench.core.randomness import stream

#: Ten well separated stroke colours, one per digit (the colour "aligned" with digit k).
PALETTE = torch.tensor([
    [0.90, 0.10, 0.10], [0.10, 0.70, 0.10], [0.10, 0.25, 0.95], [0.95, 0.85, 0.10],
    [0.85, 0.10, 0.85], [0.10, 0.85, 0.85], [1.00, 0.55, 0.00], [0.55, 0.25, 0.05],
    [0.55, 0.55, 1.00], [0.60, 1.00, 0.60],
])
WHITE = torch.ones(3)


class ColoredDigits(BenchmarkDataset):
    name = "colored_digits"
    description = "scikit-learn digits coloured by class with ratio bias_ratio (Colored-MNIST protocol)."
    provides = frozenset({"bias_labels"})
    version = 2  # colours from named streams (module docstring)
    params = {
        "bias_ratio": HParam(0.95, low=0.0, high=1.0,
                             help="share of train/val samples whose colour matches the digit"),
        "val_bias_ratio": HParam(None, type=float, low=0.0, high=1.0,
                                 help="the same share for val only (null: bias_ratio; 0.1 = random colours)"),
        "image_size": HParam(8, low=8, high=224,
                             help="side in pixels (8: the digits' own resolution; larger sizes upscale)"),
        "val_fraction": HParam(0.2, low=0.05, high=0.5,
                               help="share of the 1,797 digits held out for validation (stratified)"),
        "test_fraction": HParam(0.2, low=0.05, high=0.5,
                                help="share of the 1,797 digits held out for testing (stratified)"),
        "seed": HParam(0, low=0, help="seed of the split and colouring (fixed across run seeds)"),
    }
    train_defaults = {"epochs": 10, "batch_size": 64, "lr": 1e-3}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self.num_classes = 10
        self.num_bias = 10
        # Imported here: scikit-learn takes most of a second to import, which every process
        # listing the registry would pay otherwise.
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = F.interpolate(images, size=(p["image_size"],) * 2, mode="bilinear",
                               align_corners=False).clamp(0, 1)
        labels = torch.tensor(digits.target, dtype=torch.long)
        index = torch.arange(len(labels)).numpy()
        rest, test_idx = train_test_split(index, test_size=p["test_fraction"],
                                          stratify=labels.numpy(), random_state=p["seed"])
        val_share = p["val_fraction"] / (1 - p["test_fraction"])
        train_idx, val_idx = train_test_split(rest, test_size=val_share,
                                              stratify=labels.numpy()[rest], random_state=p["seed"])

        def colour(idx, colours) -> Split:
            y = labels[idx]
            x = images[idx] * PALETTE[colours].view(-1, 3, 1, 1)
            return Split(x=x, y=y, bias=colours, artifact=torch.zeros_like(y, dtype=torch.bool),
                         conflicting=colours != y)

        # One stream per split: train and test stay the same images and colours whatever
        # val_bias_ratio is, so runs remain comparable.
        val_ratio = p["bias_ratio"] if p["val_bias_ratio"] is None else p["val_bias_ratio"]
        train_colours = _colours_with_ratio(labels[train_idx], p["bias_ratio"],
                                            stream(p["seed"], "colored_digits.train"))
        val_colours = _colours_with_ratio(labels[val_idx], val_ratio, stream(p["seed"], "colored_digits.val"))
        test_colours = torch.randint(0, 10, (len(test_idx),), generator=stream(p["seed"], "colored_digits.test"))
        self.splits = {
            "train": colour(train_idx, train_colours),
            "val": colour(val_idx, val_colours),
            "test": colour(test_idx, test_colours),
        }
        self.views = {}
        for name, idx in (("val", val_idx), ("test", test_idx)):
            y = labels[idx]
            self.views[f"{name}_biased"] = colour(idx, y.clone())
            white = images[idx].expand(-1, 3, -1, -1).contiguous()
            self.views[f"{name}_clean"] = Split(
                x=white, y=y, bias=torch.full_like(y, -1),
                artifact=torch.zeros_like(y, dtype=torch.bool),
                conflicting=torch.zeros_like(y, dtype=torch.bool))


def _colours_with_ratio(y: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Colour = label for exactly round(ratio * n) random samples, another colour otherwise."""
    n = len(y)
    n_conflicting = n - round(ratio * n)
    colours = y.clone()
    chosen = torch.randperm(n, generator=generator)[:n_conflicting]
    shift = torch.randint(1, 10, (n_conflicting,), generator=generator)
    colours[chosen] = (y[chosen] + shift) % 10
    return colours
