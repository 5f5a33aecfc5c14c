"""CelebA faces: a ``target`` attribute to predict, a ``bias`` attribute as the shortcut.

The aligned-and-cropped release: ``root/list_attr_celeba.txt`` (a count line, a line of
the 40 attribute names, then ``<file> ±1 ...`` per image), ``root/list_eval_partition.txt``
(``<file> 0|1|2`` = train / val / test) and ``root/img_align_celeba/<file>.jpg``.
Default target ``Blond_Hair``, bias ``Male`` (the GroupDRO / GA / LfF protocol): bias
labels are the bias attribute, and blond men and non-blond women are bias-conflicting.
An injected ``artifact`` replaces the bias attribute by "has the artifact".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.core.errors import UserError
from debiasbench.core.hparams import HParam
from debiasbench.data.image_files import ImageFileDataset, ImageTable, image_params

ATTRIBUTES = "list_attr_celeba.txt"
PARTITION = "list_eval_partition.txt"
IMAGES = "img_align_celeba"
#: The 40 attribute names of list_attr_celeba.txt, in the file's order.
NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}


class CelebA(ImageFileDataset):
    name = "celeba"
    description = "CelebA faces, target vs bias attribute (default Blond_Hair vs Male; files you download)."
    layout = (f"<root>/{ATTRIBUTES} (count line, 40 attribute names, '<file> ±1 ...' rows), "
              f"<root>/{PARTITION} ('<file> 0|1|2') and <root>/{IMAGES}/<file>.jpg")
    provides = frozenset({"bias_labels"})
    #: The RR-ClArC protocol trains with class-weighted CE (debiasbench/class_weights.py).
    train_defaults = {**ImageFileDataset.train_defaults, "class_weights": "inverse_frequency"}
    params = {
        **image_params(),
        "target": HParam("Blond_Hair", choices=tuple(NAMES), help="attribute predicted (2 classes)"),
        "bias": HParam("Male", choices=tuple(NAMES), help="attribute that is the shortcut (bias labels)"),
    }

    def read_table(self, root: Path) -> ImageTable:
        if self.p["target"] == self.p["bias"]:
            from debiasbench.core.errors import ConfigError

            raise ConfigError(f"dataset_params.bias: expected an attribute other than the target "
                              f"{self.p['target']!r}, got {self.p['bias']!r}")
        path = self.require_table(root / ATTRIBUTES)
        with open(path) as handle:
            handle.readline()  # the image count
            names = handle.readline().split()
        wanted = [self.p["target"], self.p["bias"]]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise UserError(f"{self.name}: '{path}' has no attribute {missing[0]!r} in its header line; "
                            f"expected layout: {self.layout}")
        frame = self.read_csv(path, wanted, sep=r"\s+", skiprows=2, header=None, names=["file", *names])
        partition = self.read_csv(root / PARTITION, ("file", "split"), sep=r"\s+", header=None,
                                  names=["file", "split"])
        codes = dict(zip(partition["file"].astype(str), partition["split"]))
        files = frame["file"].astype(str).tolist()
        unknown = [f for f in files if codes.get(f) not in SPLIT_CODES]
        if unknown:
            raise UserError(f"{self.name}: '{root / PARTITION}' gives no split 0|1|2 for {unknown[0]!r}; "
                            f"expected layout: {self.layout}")
        images = self.require(root / IMAGES)
        return ImageTable(
            paths=[images / f for f in files],
            labels=(self.numbers(frame, self.p["target"], path) > 0).astype(np.int64),
            bias=(self.numbers(frame, self.p["bias"], path) > 0).astype(np.int64), num_bias=2,
            splits=np.array([SPLIT_CODES[codes[f]] for f in files], dtype=object),
            classes=[f"not {self.p['target']}", self.p["target"]])
