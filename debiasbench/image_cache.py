"""Decode image files once: every image resized, centre-cropped and stored in one uint8 .npy.

Real datasets are tens of thousands of JPEGs or PNGs; decoding them is what makes a run
slow, not the model. The first run decodes each file once (shorter side resized to
``image_size``, then a centre crop to ``image_size`` x ``image_size``: the evaluation
transform) into a single uint8 array [N, 3, S, S] stored as a ``.npy`` file; later runs
read rows of that file (``debiasbench.pixels.ImageStore``) and never open an image again.
Rows are written and read with positioned file I/O, not a memory map, so neither
building nor reading the cache makes the process's memory grow with the dataset.

The file name is a hash of the file list, each file's size and modification time and
``image_size``, so a changed, added or removed image or another size is a new cache and
never a stale one. It is written to a temporary name and renamed when complete, so a
killed run never leaves a half-written cache behind (rename is atomic on one filesystem).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from debiasbench.errors import UserError
from debiasbench.pixels import ImageStore

#: Name of the cache folder made inside a dataset's root when no ``cache_dir`` is given.
CACHE_FOLDER = ".debiasbench_cache"
#: Bumped when the decoding changes, so caches written by an older version are not reused.
FORMAT_VERSION = 1


class ImageReadError(UserError):
    """An image file that is missing or cannot be decoded; ``path`` names it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image '{path}' ({reason})")
        self.path = path


def cache_key(paths: Sequence[Path], image_size: int) -> str:
    """Hash of the file list, their sizes and modification times, and the output size."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION} size={image_size}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise ImageReadError(Path(path), exc.strerror or "not found") from None
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decode(path: Path, image_size: int) -> np.ndarray:
    """[3, S, S] uint8: RGB, shorter side resized to ``image_size``, centre crop."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG: let the decoder downscale by a power of two first (much faster, and
            # never below the requested size, so the resize below still sees enough pixels).
            image.draft("RGB", (image_size, image_size))
            image = image.convert("RGB")
            width, height = image.size
            scale = image_size / min(width, height)
            size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for bad files
        raise ImageReadError(Path(path), f"{type(exc).__name__}: {exc}") from None
    return pixels.transpose(2, 0, 1)


def load_images(paths: Sequence[Path], image_size: int, cache_dir: Path,
                workers: int | None = None) -> np.ndarray:
    """[N, 3, S, S] uint8 (read-only memory map) of ``paths``, decoded at most once.

    A convenience for small data and tests; datasets use ``open_images``, which reads rows.
    """
    store = open_images(paths, image_size, cache_dir, workers)
    return np.load(store.path, mmap_mode="r")


def open_images(paths: Sequence[Path], image_size: int, cache_dir: Path,
                workers: int | None = None) -> ImageStore:
    """The image cache of ``paths`` as an ``ImageStore``, decoding it first on a miss.

    ``workers`` threads decode in parallel on a cache miss (PIL releases the GIL while
    decoding); default: the CPU count, at most 8.
    """
    paths = [Path(p) for p in paths]
    key = cache_key(paths, image_size)
    target = Path(cache_dir) / f"images-{key}-{len(paths)}x{image_size}.npy"
    if not target.exists():
        write_cache(paths, image_size, target, workers)
    return read_store(target)


def read_store(path: Path) -> ImageStore:
    """The ``ImageStore`` of a uint8 ``.npy`` file (its header gives shape and data offset)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if fortran or dtype != np.uint8 or len(shape) != 4:
        raise UserError(f"image cache '{path}' is not a uint8 [N, C, S, S] array; delete it to rebuild")
    return ImageStore(path, shape, offset)


def write_cache(paths: list[Path], image_size: int, target: Path, workers: int | None) -> None:
    """Decode ``paths`` into ``target``: a temporary file renamed when complete."""
    shape = (len(paths), 3, image_size, image_size)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".npy.tmp", dir=target.parent)
        os.close(handle)
    except OSError as exc:
        raise UserError(f"cannot write the image cache in '{target.parent}' ({exc.strerror}): "
                        f"set dataset_params.cache_dir to a writable folder") from None
    try:
        with open(temporary, "r+b") as file:
            np.lib.format.write_array_header_2_0(
                file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                       "fortran_order": False, "shape": shape})
            offset = file.tell()
            row_bytes = 3 * image_size * image_size
            file.truncate(offset + len(paths) * row_bytes)
            fd = file.fileno()

            def fill(i: int) -> None:
                pixels = np.ascontiguousarray(decode(paths[i], image_size))
                if os.pwrite(fd, pixels.tobytes(), offset + i * row_bytes) != row_bytes:
                    raise OSError(f"short write to the image cache '{temporary}'")

            pool = ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))
            try:
                for _ in pool.map(fill, range(len(paths))):  # re-raises the first error
                    pass
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # a bad file stops the rest
            file.flush()
            os.fsync(fd)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
