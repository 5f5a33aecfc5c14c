"""The file layout of the LfF / DisEnt / PGD line of work: Colored MNIST, Corrupted CIFAR-10, bFFHQ.

DisEnt (Lee et al., NeurIPS 2021) distributes its three datasets as PNG trees; later work
reads the same download (PGD's released code, sumyeongahn/PGD@0265520, reads only Colored
MNIST, and from ``.pt`` tensors it generates: trainer/module/data.py lines 25-33). What the authors' loader reads, from
kakaoenterprise/Learning-Debiased-Disentangled@7626f3692f412ebae8d872480fdaa85ab9cddec0
(``data/util.py`` unless stated)::

    <data_dir>/<name>/<percent>/align/<label>/<file>       train   (lines 47-50, 79-82, 113-116)
    <data_dir>/<name>/<percent>/conflict/<label>/<file>    train
    <data_dir>/cmnist/<percent>/valid/<file>               flat    (line 53; root is <name>/<percent>, line 277)
    <data_dir>/cifar10c/<percent>/valid/<sub>/<file>       (line 85; root line 286)
    <data_dir>/bffhq/valid/<file>                          flat, beside the percent folder (line 119)
    <data_dir>/<name>/test/<sub>/<file>                    cmnist, cifar10c (lines 55, 88: ``root/../test/*/*``)
    <data_dir>/bffhq/test/<file>                           flat (line 122)

so Colored MNIST and Corrupted CIFAR-10 ship a validation set per ratio folder, bFFHQ one
shared by all. Every file is ``<idx>_<label>_<bias>.png``: label and bias are the last two
``_``-separated fields of the name (lines 62, 95, 135); the folders say nothing more. The
README (lines 48-70) lists the ratio folders shipped: ``0.5pct``, ``1pct``, ``2pct``,
``5pct`` for cmnist and cifar10c, ``0.5pct`` only for bffhq (it spells ``conlict`` there;
the code reads ``conflict``). ``train.py`` line 22 defaults ``--percent`` to ``1pct``.

This loader reads that layout for all three. ``valid/`` and ``test/`` are searched
recursively (flat or one level of sub-folders: both occur above), and ``valid/`` is taken
from the ratio folder or beside it, whichever exists (the dataset's own place first, so a
missing one is reported there). ``root`` may be the folder holding ``<name>/`` or
``<name>/`` itself. Bias labels come from the file names; the ``ImageFileDataset``
machinery derives the bias-conflicting samples (a bias value's majority class on the
training split; in these datasets bias ``b`` is aligned with class ``b``) and the
``*_biased`` / ``*_clean`` views. Differences from the authors' code, on purpose:

* bFFHQ's test set there keeps only the conflicting images (label != bias, lines 121-129);
  here ``test`` holds them all, and the authors' number is ``test_conflicting_acc``.
* Image sizes: the authors feed Colored MNIST at its native 28 px (``T.ToTensor()`` only,
  lines 144-148; the MLP takes ``3*28*28`` inputs, ``module/mlp.py`` line 11) and Corrupted
  CIFAR-10 at its native 32 px (lines 154-158, 191-211); the defaults here are the same.
  bFFHQ is resized to 224 px there (lines 150-152, 169-188); the default here stays 64 px
  (a CPU-sized ResNet input and this harness's earlier bFFHQ default); set ``image_size``
  to 224 for the authors' setting.
* Augmentation: the authors flip Corrupted CIFAR-10 and bFFHQ training images (lines 171,
  195) but not Colored MNIST (lines 145, ``learner.py`` line 27), so ``hflip`` defaults to
  off for ``cmnist``. Their random crops and normalisation are not reproduced.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from debiasbench.datasets.image_folder import EXTENSIONS
from debiasbench.core.errors import UserError
from debiasbench.core.hparams import HParam
from debiasbench.data.image_files import ImageFileDataset, ImageTable, image_params

#: ``<idx>_<label>_<bias>``: the authors read the last two ``_`` fields (data/util.py line 62).
FILE_NAME = re.compile(r".+_(\d+)_(\d+)", re.ASCII)
NAMED = "<idx>_<label>_<bias>.png"


def images_under(folder: Path, pattern: str) -> list[Path]:
    """Image files matching ``pattern`` under ``folder``, sorted, hidden ones skipped."""
    return sorted(path for path in folder.glob(pattern)
                  if path.suffix.lower() in EXTENSIONS and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


class DisEntLayout(ImageFileDataset):
    """Base of the datasets in the DisEnt layout; a subclass declares only what differs.

    ``name`` is also the folder under root; ``classes`` the label names (label ``i`` is
    ``classes[i]``); ``num_bias_values`` the bias values in the names; ``default_percent``
    and ``default_image_size`` the param defaults; ``ratios`` the ratio folders the authors
    ship (help text only: any folder present is accepted); ``valid_in_ratio`` whether the
    authors keep ``valid/`` inside the ratio folder; ``hflip_default`` the ``hflip`` default.
    """

    classes: Sequence[str] = ()
    num_bias_values: ClassVar[int] = 2
    default_percent: ClassVar[str] = "1pct"
    default_image_size: ClassVar[int] = 64
    ratios: ClassVar[tuple[str, ...]] = ()
    valid_in_ratio: ClassVar[bool] = False
    hflip_default: ClassVar[bool] = True
    provides = frozenset({"bias_labels"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "layout" not in cls.__dict__:
            valid = "<percent>/valid" if cls.valid_in_ratio else "valid"
            cls.layout = (f"<root>/{cls.name}/<percent>/align/<label>/*.png, <root>/{cls.name}/<percent>/conflict/"
                          f"<label>/*.png, <root>/{cls.name}/{valid}/ and <root>/{cls.name}/test/ (searched "
                          f"recursively), files named '{NAMED}'")
        if "params" not in cls.__dict__:
            shipped = f"; the authors ship {', '.join(cls.ratios)}" if cls.ratios else ""
            cls.params = {
                **image_params(image_size=cls.default_image_size),
                "hflip": HParam(cls.hflip_default,
                                help="random horizontal flips of training batches (on the device)"),
                "percent": HParam(cls.default_percent,
                                  help=f"training folder: share of bias-conflicting images{shipped}"),
            }

    def read_table(self, root: Path) -> ImageTable:
        base = root / self.name if (root / self.name).is_dir() else root
        percent = self.p["percent"]
        train = base / percent
        if Path(percent).name != percent or percent in ("", ".", "..") or not train.is_dir():
            # a ratio folder is one with training images under align/: a root pointed at the
            # wrong folder lists none, not every folder it holds
            ratio_folders = sorted(child.name for child in base.iterdir()
                                   if not child.name.startswith(".") and (child / "align").is_dir())
            raise UserError(f"{self.name}: dataset_params.percent={percent!r} but '{train}' is not a folder; "
                            f"ratio folders found in '{base}': {', '.join(ratio_folders) or 'none'}; "
                            f"expected layout: {self.layout}")
        own, other = (train / "valid", base / "valid") if self.valid_in_ratio else (base / "valid", train / "valid")
        valid = other if not own.exists() and other.is_dir() else own
        files = {"train": images_under(self.require(train / "align"), "*/*")
                 + images_under(self.require(train / "conflict"), "*/*"),
                 "val": images_under(self.require(valid), "**/*"),
                 "test": images_under(self.require(base / "test"), "**/*")}
        paths: list[Path] = []
        labels, bias, splits = [], [], []
        for split, found in files.items():
            for path in found:
                match = FILE_NAME.fullmatch(path.stem)
                if match is None:
                    raise UserError(f"{self.name}: '{path}' is not named '{NAMED}' (label 0..{len(self.classes) - 1}, "
                                    f"bias 0..{self.num_bias_values - 1}); expected layout: {self.layout}")
                label, value = int(match.group(1)), int(match.group(2))
                for what, got, count in (("label", label, len(self.classes)), ("bias", value, self.num_bias_values)):
                    if got >= count:
                        raise UserError(f"{self.name}: {what} {got} of '{path}' is outside 0..{count - 1}; "
                                        f"expected layout: {self.layout}")
                paths.append(path)
                labels.append(label)
                bias.append(value)
                splits.append(split)
        return ImageTable(paths=paths, labels=np.array(labels, dtype=np.int64), classes=list(self.classes),
                          bias=np.array(bias, dtype=np.int64), num_bias=self.num_bias_values,
                          splits=np.array(splits, dtype=object))


class CMNIST(DisEntLayout):
    """Colored MNIST as DisEnt ships it: the digit is the label, the colour (one of 10) the
    bias, colour ``i`` being digit ``i``'s majority colour (LfF's generator puts the aligned
    share on the diagonal: alinlab/LfF@e66796e, make_dataset.py line 25). 28 px, no flips
    (see the module notes)."""

    name = "cmnist"
    description = "Colored MNIST, digit vs colour (the DisEnt/PGD PNG layout; files you download)."
    classes = tuple(str(digit) for digit in range(10))
    num_bias_values = 10
    default_percent = "1pct"
    default_image_size = 28
    ratios = ("0.5pct", "1pct", "2pct", "5pct")
    valid_in_ratio = True
    hflip_default = False


class CIFAR10C(DisEntLayout):
    """Corrupted CIFAR-10 as DisEnt ships it: the CIFAR-10 class is the label (torchvision's
    order, as LfF's generator takes ``CIFAR10(...).targets``: alinlab/LfF@e66796e,
    make_dataset.py line 72), one of 10 corruption types the bias, corruption ``i`` being
    class ``i``'s majority (make_dataset.py line 25). Neither the DisEnt nor the PGD code
    names the corruption of each index. LfF's generator orders them Snow, Frost, Fog,
    Brightness, Contrast, Spatter, Elastic, JPEG, Pixelate, Saturate ("type 0",
    make_dataset.py lines 159-170) or Gaussian Noise, Shot Noise, Impulse Noise, Speckle
    Noise, Gaussian Blur, Defocus Blur, Glass Blur, Motion Blur, Zoom Blur, Original
    ("type 1", lines 178-189); DisEnt's loader mentions both variants only in a comment
    (data/util.py lines 281-285) and not which one it ships, so bias values are indices
    here. 32 px (the native size the authors use)."""

    name = "cifar10c"
    description = "Corrupted CIFAR-10, object vs corruption type (the DisEnt/PGD PNG layout; files you download)."
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    num_bias_values = 10
    default_percent = "1pct"
    default_image_size = 32
    ratios = ("0.5pct", "1pct", "2pct", "5pct")
    valid_in_ratio = True


class BFFHQ(DisEntLayout):
    """bFFHQ (BiaSwap, Kim et al. ICCV 2021, as DisEnt ships it): label 0 young / 1 old,
    bias 0 female / 1 male (names not given in the DisEnt code). Only ``0.5pct`` is shipped;
    ``valid/`` and ``test/`` lie beside it. 64 px by default (the authors: 224)."""

    name = "bffhq"
    description = "bFFHQ faces, age vs gender (the LfF/PGD layout; files you download)."
    classes = ("young", "old")
    num_bias_values = 2
    default_percent = "0.5pct"
    default_image_size = 64
    ratios = ("0.5pct",)
    valid_in_ratio = False
