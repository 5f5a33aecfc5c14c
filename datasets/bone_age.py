"""RSNA Pediatric Bone Age: hand radiographs, the age in months binned into classes.

``root/boneage-training-dataset.csv`` (columns ``id``, ``boneage`` in months, ``male``) and
``root/boneage-training-dataset/<id>.png``. The RR-ClArC paper treats bone age as a
5-class problem and inserts a controlled artifact (its "white colour": ``brightness``)
into one class; the bin edges are not in the text we have, so ``age_bins`` defaults to
equal 48-month bins over 0-240 months (edges 48, 96, 144, 192), and any other inner
edges can be given (comma-separated months; k edges make k + 1 classes).
The challenge's training set has no split: val and test are seeded shares.
No natural bias labels (sex is recorded but is not a shortcut of this task).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from debiasbench.core.errors import ConfigError
from debiasbench.core.hparams import HParam
from debiasbench.data.image_files import UNASSIGNED, ImageFileDataset, ImageTable, image_params

CSV = "boneage-training-dataset.csv"
IMAGES = "boneage-training-dataset"


def parse_edges(text: str) -> list[float]:
    """Increasing inner bin edges in months from '48,96,144'."""
    try:
        edges = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        edges = []
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"dataset_params.age_bins: expected increasing comma-separated months "
                          f"such as '48,96,144,192', got {text!r}")
    return edges


class BoneAge(ImageFileDataset):
    name = "bone_age"
    description = "RSNA Bone Age radiographs, age bins as classes (files you download); artifacts by injection."
    layout = f"<root>/{CSV} (columns id, boneage, male) and <root>/{IMAGES}/<id>.png"
    #: The RR-ClArC protocol trains with class-weighted CE (debiasbench/class_weights.py).
    train_defaults = {**ImageFileDataset.train_defaults, "class_weights": "inverse_frequency"}
    params = {
        **image_params(),
        "age_bins": HParam("48,96,144,192", help="inner bin edges in months (k edges: k + 1 classes)"),
    }

    def read_table(self, root: Path) -> ImageTable:
        edges = parse_edges(self.p["age_bins"])
        frame = self.read_csv(root / CSV, ("id", "boneage", "male"))
        images = self.require(root / IMAGES)
        bounds = ["0", *(f"{e:g}" for e in edges), "inf"]
        classes = [f"{low}-{high} months" for low, high in zip(bounds, bounds[1:])]
        ages = self.numbers(frame, "boneage", root / CSV, integer=False)
        labels = np.searchsorted(np.array(edges), ages, side="right")
        return ImageTable(paths=[images / f"{i}.png" for i in frame["id"].astype(str)], labels=labels,
                          classes=classes, splits=np.full(len(frame), UNASSIGNED, dtype=object))
