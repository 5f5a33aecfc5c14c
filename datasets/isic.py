"""ISIC 2019 skin lesions (8 diagnoses), as the challenge distributes its training data.

``root/ISIC_2019_Training_GroundTruth.csv`` (columns ``image`` and one-hot ``MEL``, ``NV``,
``BCC``, ``AK``, ``BKL``, ``DF``, ``VASC``, ``SCC``, ``UNK``) and
``root/ISIC_2019_Training_Input/<image>.jpg``. The label is the one-hot diagnosis; ``UNK``
has no training image and is not a class (rows marked only ``UNK`` are left out).
The challenge's training set has no split: val and test are seeded shares.

The real images carry real artifacts (rulers, band-aids, colour charts) without labels;
for a controlled benchmark inject one (``artifact``, e.g. ``timestamp`` into
``attacked_class`` 0 = MEL), as the RR-ClArC paper does, which adds bias labels,
artifact labels and masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.core.errors import UserError
from debiasbench.data.image_files import UNASSIGNED, ImageFileDataset, ImageTable, image_params

CSV = "ISIC_2019_Training_GroundTruth.csv"
IMAGES = "ISIC_2019_Training_Input"
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")


class ISIC(ImageFileDataset):
    name = "isic"
    description = "ISIC 2019 skin lesions, 8 diagnoses (files you download); controlled artifacts by injection."
    layout = f"<root>/{CSV} (columns image, {', '.join(CLASSES)}, UNK) and <root>/{IMAGES}/<image>.jpg"
    #: The RR-ClArC protocol trains with class-weighted CE (debiasbench/class_weights.py).
    train_defaults = {**ImageFileDataset.train_defaults, "class_weights": "inverse_frequency"}
    params = image_params()

    def read_table(self, root: Path) -> ImageTable:
        frame = self.read_csv(root / CSV, ("image", *CLASSES))
        onehot = np.stack([self.numbers(frame, c, root / CSV, integer=False) for c in CLASSES], axis=1)
        keep = onehot.max(1) > 0
        if not keep.any():
            raise UserError(f"{self.name}: '{root / CSV}' marks no image with one of {', '.join(CLASSES)}; "
                            f"expected layout: {self.layout}")
        images = root / IMAGES
        self.require(images)
        paths = [images / f"{name}.jpg" for name in frame["image"].astype(str)[keep]]
        return ImageTable(paths=paths, labels=onehot[keep].argmax(1), classes=list(CLASSES),
                          splits=np.full(len(paths), UNASSIGNED, dtype=object))
