"""Base class of datasets read from image files a user downloaded: a table in, Splits out.

A subclass only reads its own layout into an ``ImageTable`` (file, label, bias attribute,
split per image); this class checks the root, decodes through the image cache, splits,
subsets, optionally injects a controlled artifact and builds the splits and views.

Memory: the images live once, as uint8 (N x 3 x S x S bytes), in the image cache file;
every split and view is row numbers into it (``debiasbench.data.pixels``), converted to float
per batch on the device. The run key ``data_placement`` keeps them on the device
(``device``: ISIC's 25,331 images at 224 px are 3.8 GB) or reads each batch from the file
(``stream``: the process holds only the batches in flight, whatever N is); ``auto``
decides by size. ``max_per_split`` keeps a seeded subset of each split; only the images
kept are decoded.

Views: with an injected artifact, clean / biased copies of val and test; with natural
bias labels (CelebA, Waterbirds, bFFHQ) the bias-aligned samples (``*_biased``) and a
group-balanced subset (``*_clean``); without either (ISIC, Bone Age, a plain folder) none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from debiasbench.data.dataset import CAPABILITIES, Batch, BenchmarkDataset, Split
from debiasbench.core.errors import ConfigError, UserError
from debiasbench.core.files import TABLE_LIMIT, FileRefused, check_regular_file
from debiasbench.core.hparams import HParam
from debiasbench.data.image_cache import ImageReadError, dataset_cache_dir, open_images
from debiasbench.data.injection import ARTIFACT_PARAMS, injected_splits, injects, make_artifact
from debiasbench.data.pixels import CachedPixels, ImageStore

SPLITS = ("train", "val", "test")
#: Split values a table may hold besides ``SPLITS``: split by the seed into train / val,
#: or into all three.
TRAINVAL, UNASSIGNED = "trainval", ""
#: Images per batch when a statistic is computed over a whole view.
STAT_BATCH = 256


@dataclass
class ImageTable:
    """One row per image. ``bias`` is the natural bias attribute (-1 unknown) or None."""

    paths: list[Path]
    labels: np.ndarray
    splits: np.ndarray
    classes: list[str]
    bias: np.ndarray | None = None
    num_bias: int = 1


def image_params(image_size: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2) -> dict[str, HParam]:
    """The params every image-file dataset takes (its own come on top)."""
    return {
        "root": HParam(None, type=str, help="folder of the downloaded dataset (its layout: docs/datasets.md)"),
        "image_size": HParam(image_size, low=8, high=1024,
                             help="side after resizing the shorter side and centre cropping; "
                                  "cache N*3*S*S bytes"),
        "max_per_split": HParam(None, type=int, low=1, help="keep at most this many images per split "
                                                            "(a seeded subset; null: all)"),
        "val_fraction": HParam(val_fraction, low=0.0, high=0.9,
                               help="share held out for validation where the layout has no val split"),
        "test_fraction": HParam(test_fraction, low=0.0, high=0.9,
                                help="share held out for testing where the layout has no test split"),
        "seed": HParam(0, low=0, help="seed of splits, subsets and artifacts (fixed across run seeds)"),
        "cache_dir": HParam(None, type=str, help="image cache folder (null: a folder per dataset under "
                                                 "$DEBIASBENCH_CACHE, else ~/.cache/debiasbench; never inside root)"),
        "hflip": HParam(True, help="random horizontal flips of training batches (on the device)"),
        **ARTIFACT_PARAMS,
    }


class ImageFileDataset(BenchmarkDataset):
    """Subclasses set ``layout`` (one line: the files expected under root) and implement
    ``read_table``; ``provides`` lists what the data gives without an artifact."""

    layout: ClassVar[str] = ""
    #: Class names, in label order (read from the files unless a subclass fixes them).
    classes: Sequence[str] = ()
    train_defaults: ClassVar[dict[str, Any]] = {"epochs": 10, "batch_size": 64, "lr": 1e-3}

    @classmethod
    def provides_for(cls, params: Mapping[str, Any]) -> frozenset[str]:
        return cls.provides | CAPABILITIES if injects(params) else cls.provides

    @classmethod
    def shortcut_in_one_class(cls, params: Mapping[str, Any]) -> bool:
        """An injected artifact marks the attacked class only; natural bias labels span classes."""
        return injects(params)

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.p
        self.provides = type(self).provides_for(p)
        table, inject, rows = self.read_checked()
        self.classes = list(table.classes)
        self.num_classes = len(self.classes)
        order = np.concatenate([rows[s] for s in SPLITS])
        self.store = self.load([table.paths[i] for i in order])
        bounds = np.cumsum([0] + [len(rows[s]) for s in SPLITS])
        labels = torch.from_numpy(np.array(table.labels, dtype=np.int64))
        bias = (torch.full_like(labels, -1) if table.bias is None
                else torch.from_numpy(np.array(table.bias, dtype=np.int64)))
        aligned = aligned_classes(labels[rows["train"]], bias[rows["train"]], self.num_classes, table.num_bias)
        generator = torch.Generator().manual_seed(p["seed"])
        self.splits, self.views = {}, {}
        self.num_bias = 2 if inject is not None else table.num_bias
        self.attacked_class = p["attacked_class"] if inject is not None else None
        self._direction: Tensor | None | bool = inject is not None  # computed on first use
        for k, split in enumerate(SPLITS):
            pixels = CachedPixels(self.store, torch.arange(int(bounds[k]), int(bounds[k + 1])))
            index = torch.as_tensor(rows[split])
            y = labels[index]
            if inject is None:
                b = bias[index]
                conflicting = ((b >= 0) & (aligned[b.clamp(min=0)] != y) if aligned is not None
                               else torch.zeros_like(y, dtype=torch.bool))
                self.splits[split] = Split(pixels=pixels, y=y, bias=b, artifact=torch.zeros_like(y, dtype=torch.bool),
                                           conflicting=conflicting)
                if split != "train" and aligned is not None:
                    self.views.update(natural_views(split, self.splits[split], table.num_bias, generator))
                continue
            natural, clean, biased = injected_splits(pixels, y, p["attacked_class"], p["p"], inject, generator,
                                                     views=split != "train")
            self.splits[split] = natural
            if clean is not None and biased is not None:
                self.views[f"{split}_clean"], self.views[f"{split}_biased"] = clean, biased

    @property
    def artifact_direction(self) -> Tensor | None:  # type: ignore[override]  # computed on first use
        """Mean of (biased - clean) test images, unit length; computed in batches on first use."""
        if self._direction is True:
            biased, clean = self.views["test_biased"], self.views["test_clean"]
            total = torch.zeros(self.sample_shape, dtype=torch.float64, device=biased.device)
            for with_artifact, without in zip(biased.batches(STAT_BATCH), clean.batches(STAT_BATCH)):
                total += (with_artifact.x - without.x).double().sum(0)
            direction = (total / len(biased)).float()
            norm = direction.norm()
            self._direction = direction / norm if norm > 0 else None
        return self._direction if isinstance(self._direction, Tensor) else None

    def place(self, device: torch.device | str, placement: str = "auto") -> str:
        """Images resident on ``device`` or streamed from the cache file (``placement``)."""
        device = torch.device(device)
        chosen = self.store.place(device, placement)
        self.to(device)
        return chosen

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> None:
        """The root, the table the layout gives (every file named, its labels, the splits)
        and the artifact checked as building does, without decoding an image."""
        dataset = cls.__new__(cls)
        BenchmarkDataset.__init__(dataset, **params)
        dataset.provides = cls.provides_for(params)
        dataset.read_checked()

    def read_checked(self) -> tuple[ImageTable, Any, dict[str, np.ndarray]]:
        """The table of the files under root, checked (inside root, labels in range), the
        artifact injected (None: none) and the rows of each split, none of them empty."""
        p = self.p
        self.root = self.check_root()
        table = self.read_table(self.root)
        self.check_inside_root(table)
        self.check_labels(table)
        inject = make_artifact(p, p["image_size"], len(table.classes))
        rows = self.assign_splits(table)
        for split in SPLITS:
            if len(rows[split]) == 0:
                raise UserError(f"{self.name}: no {split} images under '{self.root}'; expected layout: {self.layout}")
        return table, inject, rows

    def read_table(self, root: Path) -> ImageTable:
        raise NotImplementedError

    # -- helpers for subclasses: every failure is one line naming the file and the layout --

    def check_root(self) -> Path:
        root = self.p["root"]
        if root is None:
            raise ConfigError(f"dataset_params.root: expected the folder holding {self.layout}, got null")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise UserError(f"dataset_params.root: folder '{path}' not found; expected layout: {self.layout}")
        return path

    def require(self, path: Path) -> Path:
        """``path`` if it exists, else a ``UserError`` naming it and the expected layout."""
        if not path.exists():
            raise UserError(f"{self.name}: '{path}' not found; expected layout: {self.layout}")
        return path

    def require_table(self, path: Path) -> Path:
        """``path`` if it is a regular file of at most ``TABLE_LIMIT`` bytes: a missing file,
        a folder, a pipe or a device is one line naming it and the expected layout."""
        self.require(path)
        try:
            check_regular_file(path, "table", TABLE_LIMIT)
        except FileRefused as exc:
            raise UserError(f"{self.name}: '{path}' {exc.problem}; expected layout: {self.layout}") from None
        return path

    def read_csv(self, path: Path, columns: Sequence[str], **options: Any):
        """The CSV at ``path`` as a DataFrame that has every one of ``columns``."""
        import pandas as pd

        try:
            frame = pd.read_csv(self.require_table(path), **options)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise UserError(f"{self.name}: cannot parse '{path}' ({type(exc).__name__}: {exc}); "
                            f"expected layout: {self.layout}") from None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UserError(f"{self.name}: '{path}' has no column {missing[0]!r}; expected columns "
                            f"{', '.join(columns)} (layout: {self.layout})")
        return frame

    def numbers(self, frame: Any, column: str, path: Path, integer: bool = True) -> np.ndarray:
        """``frame[column]`` as int64 (or float64 without ``integer``): a value that is not
        such a number (``bird``, an empty cell, ``1.5`` for an integer) is one line naming
        the file, its row and the value, not a pandas error or a garbage label."""
        import pandas as pd

        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if integer:
            bad |= values != np.round(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raw = frame[column].iloc[row]
            shown_value = "an empty cell" if pd.isna(raw) else repr(str(raw)[:40])
            kind = "an integer" if integer else "a number"
            raise UserError(f"{self.name}: column {column!r} of '{path}' holds {shown_value} in data row "
                            f"{row + 1}; expected {kind} (layout: {self.layout})")
        return values.astype(np.int64) if integer else values

    def check_inside_root(self, table: ImageTable) -> None:
        """Refuse a table whose image path leaves the dataset root (``../../x.jpg``,
        ``/etc/passwd``): a listed file is read, and a CSV must not reach files the user
        never pointed at. Checked on the path as written (normalised, not resolved), so a
        root whose image folder is a symbolic link to another disk still works."""
        root = os.path.normpath(os.path.abspath(self.root))
        prefix = root.rstrip(os.sep) + os.sep
        for row, path in enumerate(table.paths):
            full = os.path.normpath(os.path.abspath(path))
            if not full.startswith(prefix):
                raise UserError(f"{self.name}: image path of data row {row + 1} ('{path}') leaves the dataset root "
                                f"'{root}'; expected layout: {self.layout}")

    def check_labels(self, table: ImageTable) -> None:
        """Labels in [0, classes), bias in [-1, num_bias): a file's bad value, not a crash later."""
        for what, values, high in (("label", table.labels, len(table.classes)),
                                   ("bias", table.bias, table.num_bias)):
            if values is None or len(values) == 0:
                continue
            bad = (values < (0 if what == "label" else -1)) | (values >= high)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise UserError(f"{self.name}: {what} {int(values[row])} of '{table.paths[row]}' is outside "
                                f"0..{high - 1}; expected layout: {self.layout}")

    # -- splitting and loading --

    def assign_splits(self, table: ImageTable) -> dict[str, np.ndarray]:
        """Row indices per split: the table's own, seeded ones where it has none, then at
        most ``max_per_split`` of each (a seeded subset, in table order)."""
        p = self.p
        rng = np.random.default_rng(p["seed"])
        splits = np.asarray(table.splits, dtype=object).copy()
        for pool, targets in ((UNASSIGNED, ("test", "val")), (TRAINVAL, ("val",))):
            rows = rng.permutation(np.flatnonzero(splits == pool))
            total, start = len(rows), 0
            for target in targets:
                count = int(round(p[f"{target}_fraction"] * total))
                splits[rows[start:start + count]] = target
                start += count
            splits[rows[start:]] = "train"
        out = {}
        for split in SPLITS:
            rows = np.flatnonzero(splits == split)
            if p["max_per_split"] is not None and len(rows) > p["max_per_split"]:
                rows = np.sort(rng.choice(rows, p["max_per_split"], replace=False))
            out[split] = rows
        return out

    def load(self, paths: list[Path]) -> ImageStore:
        cache = Path(self.p["cache_dir"]).expanduser() if self.p["cache_dir"] else dataset_cache_dir(self.root)
        try:
            return open_images(paths, self.p["image_size"], cache)
        except ImageReadError as exc:
            raise UserError(f"{self.name}: {exc}; expected layout: {self.layout}") from None

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Random horizontal flips (masks flip with their images) when ``hflip``."""
        if not self.p["hflip"]:
            return batch
        flip = torch.rand(len(batch), generator=generator, device=generator.device) < 0.5
        flip = flip.to(batch.x.device).view(-1, 1, 1, 1)
        x = torch.where(flip, batch.x.flip(3), batch.x)
        mask = None if batch.mask is None else torch.where(flip, batch.mask.flip(3), batch.mask)
        return replace(batch, x=x, mask=mask)


def natural_views(name: str, split: Split, num_bias: int, generator: torch.Generator) -> dict[str, Split]:
    """Views of a split with natural bias labels: ``<name>_biased`` the samples whose bias
    points to their own class; ``<name>_clean`` a seeded group-balanced subset (as many
    samples from every non-empty class x bias cell as the smallest holds), where the bias
    carries no information about the label, so a shortcut is worth chance."""
    known = split.bias >= 0
    groups = split.groups(num_bias)
    cells = groups[known].unique()
    counts = torch.stack([(groups == c).sum() for c in cells]) if len(cells) else torch.zeros(0)
    keep = []
    for cell in cells:
        members = (groups == cell).nonzero().squeeze(1)
        keep.append(members[torch.randperm(len(members), generator=generator)[:int(counts.min())]])
    balanced = torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.long)
    aligned = (known & ~split.conflicting).nonzero().squeeze(1)
    return {f"{name}_clean": split.subset(balanced), f"{name}_biased": split.subset(aligned)}


def aligned_classes(y: Tensor, bias: Tensor, num_classes: int, num_bias: int) -> Tensor | None:
    """Per bias value, the class it is a shortcut to: the class in which that value is
    most over-represented (highest count(y, b) / count(y)), on the training split.

    On CelebA (blond hair, gender) female points to blond and male to not blond, so
    blond men and non-blond women are bias-conflicting, as the GA / LfF papers count them.
    None where the bias is unknown.
    """
    known = bias >= 0
    if not known.any():
        return None
    counts = torch.zeros(num_classes, num_bias)
    counts.index_put_((y[known], bias[known]), torch.ones(int(known.sum())), accumulate=True)
    share = counts / counts.sum(1, keepdim=True).clamp(min=1)
    return share.argmax(0)
