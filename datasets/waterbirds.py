"""Waterbirds: land / water birds pasted on land / water backgrounds (Sagawa et al.).

``root/waterbird_complete95_forest2water2/metadata.csv`` (columns ``img_id``,
``img_filename``, ``y``, ``split`` (0 train, 1 val, 2 test), ``place``), images at
``img_filename`` relative to that folder; ``root`` may also be the folder itself.
Label ``y`` (1 = waterbird), bias labels = ``place`` (1 = water): in training 95% of the
birds sit on their own kind of background, so landbirds on water and waterbirds on land
are bias-conflicting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.core.errors import UserError
from debiasbench.data.image_files import ImageFileDataset, ImageTable, image_params

FOLDER = "waterbird_complete95_forest2water2"
COLUMNS = ("img_id", "img_filename", "y", "split", "place")
SPLIT_CODES = {0: "train", 1: "val", 2: "test"}


class Waterbirds(ImageFileDataset):
    name = "waterbirds"
    description = "Waterbirds (bird type vs background place; files you download)."
    layout = (f"<root>/{FOLDER}/metadata.csv (columns {', '.join(COLUMNS)}; split 0|1|2) and the "
              f"images at img_filename relative to <root>/{FOLDER}/")
    provides = frozenset({"bias_labels"})
    params = image_params()

    def read_table(self, root: Path) -> ImageTable:
        folder = root if (root / "metadata.csv").exists() else root / FOLDER
        csv = folder / "metadata.csv"
        frame = self.read_csv(csv, COLUMNS)
        codes = self.numbers(frame, "split", csv)
        bad = ~np.isin(codes, list(SPLIT_CODES))
        if bad.any():
            raise UserError(f"{self.name}: '{csv}' has split {codes[bad][0]!r}; expected 0 (train), 1 (val) "
                            f"or 2 (test) (layout: {self.layout})")
        return ImageTable(paths=[folder / f for f in frame["img_filename"].astype(str)],
                          labels=self.numbers(frame, "y", csv), classes=["landbird", "waterbird"],
                          bias=self.numbers(frame, "place", csv), num_bias=2,
                          splits=np.array([SPLIT_CODES[int(c)] for c in codes], dtype=object))
