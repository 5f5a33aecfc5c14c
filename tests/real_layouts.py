"""Tiny fixture trees in the real datasets' on-disk layouts: real file names and columns,
a handful of small generated images (each class a different mean colour, so a model can
learn something in one epoch); the DisEnt trees (cmnist, cifar10c) and MNIST's IDX files
(colored_mnist) likewise. ``fixture_params`` writes the fixture of any registered dataset
that reads files and returns the parameters that build it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from debiasbench.data.idx import MNIST_FILES, write_idx
from debiasbench.datasets.celeba import NAMES
from debiasbench.datasets.isic import CLASSES as ISIC_CLASSES

SIZE = (24, 20)  # width, height: not square, so resize + centre crop is exercised


def write_image(path: Path, label: int, index: int, size: tuple[int, int] = SIZE) -> Path:
    rng = np.random.default_rng(index)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [40, 200, 200]])[label % 5]
    pixels = np.clip(base + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def split_of(i: int, n: int) -> int:
    """0 train for the first 60%, 1 val for the next 20%, 2 test for the rest."""
    return 0 if i < 0.6 * n else (1 if i < 0.8 * n else 2)


def isic(root: Path, n: int = 30) -> Path:
    rows = ["image," + ",".join(ISIC_CLASSES) + ",UNK"]
    for i in range(n):
        label = i % 3
        name = f"ISIC_{i:07d}"
        onehot = ["1.0" if k == label else "0.0" for k in range(len(ISIC_CLASSES))]
        rows.append(f"{name},{','.join(onehot)},0.0")
        write_image(root / "ISIC_2019_Training_Input" / f"{name}.jpg", label, i)
    rows.append("ISIC_9999999," + ",".join(["0.0"] * len(ISIC_CLASSES)) + ",1.0")  # UNK only, no file
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return root


def celeba_attributes(i: int) -> tuple[int, int]:
    """(blond, male) of fixture image i: two in three blond images are of women, two in three
    others of men, and every split holds all four combinations."""
    blond = i % 2
    return blond, (1 - blond) if i % 3 else blond


def celeba(root: Path, n: int = 40) -> Path:
    lines = [str(n), " ".join(NAMES)]
    partition = []
    blond, male = NAMES.index("Blond_Hair"), NAMES.index("Male")
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        values = ["-1"] * len(NAMES)
        b, m = celeba_attributes(i)
        values[blond], values[male] = ("1" if b else "-1"), ("1" if m else "-1")
        lines.append(name + " " + " ".join(f"{v:>2}" for v in values))  # the file pads with spaces
        partition.append(f"{name} {split_of(i, n)}")
        write_image(root / "img_align_celeba" / name, b, i)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return root


def waterbirds(root: Path, n: int = 30) -> Path:
    folder = root / "waterbird_complete95_forest2water2"
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    for i in range(n):
        y = i % 2
        place = y if i % 3 else 1 - y
        filename = f"{1 + y:03d}.Bird_{y}/Bird_{y}_{i:04d}.jpg"
        rows.append(f"{i + 1},{filename},{y},{split_of(i, n)},{place},/b/bamboo_forest/00000{i}.jpg")
        write_image(folder / filename, y, i)
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def bone_age(root: Path, n: int = 30) -> Path:
    rows = ["id,boneage,male"]
    for i in range(n):
        months = [30, 120, 200][i % 3]
        rows.append(f"{1377 + i},{months},{'True' if i % 2 else 'False'}")
        write_image(root / "boneage-training-dataset" / f"{1377 + i}.png", i % 3, i)
    (root / "boneage-training-dataset.csv").write_text("\n".join(rows) + "\n")
    return root


def bffhq(root: Path) -> Path:
    """8 aligned and 2 conflicting training images, 6 mixed in valid/ and test/ each:
    files 0-7, 8-9, 10-15, 16-21."""
    base = root / "bffhq"
    index = 0
    for folder, aligned, count in (("0.5pct/align", True, 8), ("0.5pct/conflict", False, 2),
                                   ("valid", None, 6), ("test", None, 6)):
        for k in range(count):
            label = k % 2
            bias = label if aligned or (aligned is None and k % 4 < 2) else 1 - label
            sub = f"{folder}/{label}" if aligned is not None else folder
            write_image(base / sub / f"{index}_{label}_{bias}.png", label, index)
            index += 1
    return root


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 10,
                 splits: tuple[str, ...] = ()) -> Path:
    for split in splits or ("",):
        for label, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}", label,
                            100 * label + i)
    return root


LAYOUTS = {"isic": isic, "celeba": celeba, "waterbirds": waterbirds, "bone_age": bone_age,
           "bffhq": bffhq, "image_folder": image_folder}


# --------------------------------------------------------------------------- DisEnt trees

#: Conflicting training images (label, bias) per ratio folder of the fixture.
#: A conflict's bias value is never a class that has conflicts itself, so on these few images
#: every bias value's majority class is still its own (``aligned_classes``).
CONFLICTS = {"1pct": [(3, 5), (7, 1)], "5pct": [(0, 9), (2, 4), (3, 5), (6, 8)]}
#: Validation and test images (label, bias): aligned ones and two conflicting ones each.
HELD_OUT = [(0, 0), (1, 1), (2, 2), (4, 4), (5, 2), (8, 3)]
SIZES = {"cmnist": (28, 28), "cifar10c": (32, 32)}


def disent_tree(root: Path, name: str) -> Path:
    """``<name>/<ratio>/{align,conflict}/<label>/`` for two ratios, each with its own
    ``valid/`` (flat for cmnist, a folder per label for cifar10c, as the authors read
    them), and ``<name>/test/<label>/``; images written by ``write_image``."""
    base, index = root / name, 0

    def write(folder: Path, label: int, bias: int) -> None:
        nonlocal index
        write_image(folder / f"{index}_{label}_{bias}.png", label, index, SIZES[name])
        index += 1

    for ratio, conflicts in CONFLICTS.items():
        for label in range(10):
            write(base / ratio / "align" / str(label), label, label)
        for label, bias in conflicts:
            write(base / ratio / "conflict" / str(label), label, bias)
        for label, bias in HELD_OUT:
            write(base / ratio / "valid" / (str(label) if name == "cifar10c" else ""), label, bias)
    for label, bias in HELD_OUT:
        write(base / "test" / str(label), label, bias)
    return root


# --------------------------------------------------------------------------- MNIST IDX files

#: A pixel every fixture digit has at full ink (255): its colour is the stroke colour.
INK = (14, 14)


def fake_digits(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 28x28 "digits": a class-dependent bar of full ink plus grey noise strokes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
    rng.shuffle(labels)
    images = (rng.random((len(labels), 28, 28)) < 0.1) * rng.integers(0, 200, (len(labels), 28, 28))
    images = images.astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 4 + 2 * label:6 + 2 * label, 6:22] = 255
        images[i, 10:18, INK[1]] = 255
    return images, labels


def write_mnist(folder: Path, n_train: int = 100, n_test: int = 20, gz_train: bool = True,
                gz_test: bool = False) -> Path:
    """The four IDX files (train gzip, test plain by default) of fake digits in ``folder``."""
    arrays = {}
    arrays["train_images"], arrays["train_labels"] = fake_digits(n_train, seed=0)
    arrays["test_images"], arrays["test_labels"] = fake_digits(n_test, seed=1)
    for role, array in arrays.items():
        gz = gz_train if role.startswith("train") else gz_test
        write_idx(folder / (MNIST_FILES[role] + (".gz" if gz else "")), array)
    return folder


# --------------------------------------------------------------------------- every dataset

#: Side of the images every file-reading dataset is built at in the contract checks.
FIXTURE_IMAGE_SIZE = 16


def fixture_params(name: str, folder: Path) -> dict[str, Any] | None:
    """Write the tiny fixture of the registered dataset ``name`` under ``folder`` and return
    the parameters that build the dataset on it (small images); None for a dataset that
    reads no files (synthetic_artifacts, colored_digits: ``TINY_PARAMS``) or one without a
    fixture here."""
    if name in LAYOUTS:
        return {"root": str(LAYOUTS[name](folder)), "image_size": FIXTURE_IMAGE_SIZE}
    if name in SIZES:
        return {"root": str(disent_tree(folder, name)), "image_size": FIXTURE_IMAGE_SIZE}
    if name == "colored_mnist":  # 28x28 digits, 10 a class for train (and val), 2 for test
        write_mnist(folder / "MNIST" / "raw", n_train=10, n_test=2)
        return {"root": str(folder)}
    return None
