"""Any ImageNet-style folder: ``root/<class>/*.jpg|png``, or ``root/train|val[|test]/<class>/``.

The class is the folder name (sorted; ``classes`` picks a subset, comma-separated). With
``train/`` and ``val/`` folders, ``val/`` is the test split (as ImageNet's validation set
is used) and validation is a seeded ``val_fraction`` of ``train/``; with ``test/`` too,
each folder is its split. Without them every image is split by the seed
(``val_fraction``, ``test_fraction``). No bias labels: inject an artifact
(``artifact``) for a controlled benchmark, as the RR-ClArC paper does on ImageNet.
A class folder without an image, or a class without a folder among the training images,
is refused naming it: it would add an output no sample ever targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.core.errors import UserError
from debiasbench.core.hparams import HParam
from debiasbench.data.image_files import TRAINVAL, UNASSIGNED, ImageFileDataset, ImageTable, image_params

EXTENSIONS = (".jpg", ".jpeg", ".png")


def class_folders(folder: Path) -> list[str]:
    return sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS and not f.name.startswith("."))


class ImageFolder(ImageFileDataset):
    name = "image_folder"
    description = "Any ImageNet-style folder of class sub-folders; controlled artifacts by injection."
    layout = "<root>/<class>/*.jpg|png, or <root>/train/<class>/ and <root>/val/<class>/ (optionally test/)"
    params = {
        **image_params(),
        "classes": HParam(None, type=str, help="comma-separated class folders to keep (null: all)"),
    }

    def read_table(self, root: Path) -> ImageTable:
        named = {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
        if "train" in named and "val" in named:
            plan = {"train": TRAINVAL, "val": "test"} if "test" not in named else \
                {"train": "train", "val": "val", "test": "test"}
            folders = {named[s]: split for s, split in plan.items()}
        else:
            folders = {root: UNASSIGNED}
        classes = sorted(set().union(*(class_folders(f) for f in folders)))
        if self.p["classes"]:
            wanted = [c.strip() for c in self.p["classes"].split(",") if c.strip()]
            unknown = [c for c in wanted if c not in classes]
            if unknown:
                raise UserError(f"dataset_params.classes: no class folder {unknown[0]!r} under '{root}'; "
                                f"found: {', '.join(classes[:20]) or 'none'}")
            classes = wanted
        if len(classes) < 2:
            raise UserError(f"{self.name}: expected at least 2 class folders under '{root}', found "
                            f"{len(classes)}; expected layout: {self.layout}")
        paths, labels, splits = [], [], []
        for folder, split in folders.items():
            for label, name in enumerate(classes):
                if not (folder / name).is_dir():
                    continue
                files = image_files(folder / name)
                if not files:  # a class of no samples would train an output that never has a target
                    raise UserError(f"{self.name}: class folder '{folder / name}' holds no image "
                                    f"({', '.join(EXTENSIONS)}); remove it or pick classes with "
                                    f"dataset_params.classes; expected layout: {self.layout}")
                paths += files
                labels += [label] * len(files)
                splits += [split] * len(files)
        first = next(iter(folders))  # the training images' folder
        untrained = [name for name in classes if not (first / name).is_dir()]
        if untrained:
            raise UserError(f"{self.name}: class {untrained[0]!r} has no folder under '{first}', so no training "
                            f"images; expected layout: {self.layout}")
        return ImageTable(paths=paths, labels=np.array(labels), splits=np.array(splits, dtype=object),
                          classes=classes)
