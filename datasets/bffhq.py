"""bFFHQ: faces whose age (young / old) is the label and gender the shortcut.

The layout the LfF / DisEnt / PGD line of work distributes: ``root/bffhq/<percent>/align/
<label>/*.png`` and ``root/bffhq/<percent>/conflict/<label>/*.png`` (training; ``percent``
the share of bias-conflicting images, default ``0.5pct``), ``root/bffhq/valid/`` and
``root/bffhq/test/`` (searched recursively). Every file is named ``<idx>_<label>_<bias>.png``:
label 0 young / 1 old, bias 0 female / 1 male; ``root`` may also be the ``bffhq`` folder.
Bias labels come from the names; conflicting = label and bias disagree with the training
majority (the ``conflict`` folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.errors import UserError
from debiasbench.hparams import HParam
from debiasbench.image_dataset import ImageFileDataset, ImageTable, image_params


class BFFHQ(ImageFileDataset):
    name = "bffhq"
    description = "bFFHQ faces, age vs gender (the LfF/PGD layout; files you download)."
    layout = ("<root>/bffhq/<percent>/align/<label>/*.png, <root>/bffhq/<percent>/conflict/<label>/*.png, "
              "<root>/bffhq/valid/*.png and <root>/bffhq/test/*.png named '<idx>_<label>_<bias>.png'")
    provides = frozenset({"bias_labels"})
    params = {
        **image_params(image_size=64),
        "percent": HParam("0.5pct", help="training folder: share of bias-conflicting images ('0.5pct')"),
    }

    def read_table(self, root: Path) -> ImageTable:
        base = root if (root / "valid").is_dir() or (root / self.p["percent"]).is_dir() else root / "bffhq"
        train = self.require(base / self.p["percent"])
        files = {"train": sorted(self.require(train / "align").glob("*/*.png"))
                 + sorted(self.require(train / "conflict").glob("*/*.png")),
                 "val": sorted(self.require(base / "valid").rglob("*.png")),
                 "test": sorted(self.require(base / "test").rglob("*.png"))}
        paths, labels, bias, splits = [], [], [], []
        for split, found in files.items():
            for path in found:
                parts = path.stem.split("_")
                if len(parts) < 3 or parts[-2] not in ("0", "1") or parts[-1] not in ("0", "1"):
                    raise UserError(f"{self.name}: '{path}' is not named '<idx>_<label>_<bias>.png' with "
                                    f"label and bias 0 or 1; expected layout: {self.layout}")
                paths.append(path)
                labels.append(int(parts[-2]))
                bias.append(int(parts[-1]))
                splits.append(split)
        return ImageTable(paths=paths, labels=np.array(labels, dtype=np.int64), classes=["young", "old"],
                          bias=np.array(bias, dtype=np.int64), num_bias=2,
                          splits=np.array(splits, dtype=object))
