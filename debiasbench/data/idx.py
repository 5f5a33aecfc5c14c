"""IDX files, the format MNIST is published in, read and written (plain or gzip).

An IDX file is a 4-byte magic number -- two zero bytes, a type code (0x08 unsigned byte,
0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and the number of
dimensions -- then one big-endian uint32 per dimension, then the values in C order,
big-endian (Y. LeCun, C. Cortes, C. Burges, "The MNIST database", the section "The IDX
file format"). MNIST's images are ``[N, 28, 28]`` and its labels ``[N]``, both uint8.

A file may be gzip-compressed, as the files are distributed: ``read_idx`` decides by its
content (the gzip magic ``1f 8b``), ``write_idx`` compresses when the name ends in
``.gz``. A file that is cut short, has the wrong magic or more bytes than its header
declares is one ``UserError`` naming it, never a numpy reshape error.

``MNIST_FILES`` is the layout torchvision's ``MNIST`` keeps under ``<root>/MNIST/raw``;
``find_mnist`` looks for it under the usual roots.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np

from debiasbench.core.atomic import atomic_file
from debiasbench.core.errors import UserError
from debiasbench.core.files import IDX_LIMIT, read_regular_bytes, size_text

__all__ = ["MNIST_FILES", "find_mnist", "mnist_file", "read_idx", "read_mnist", "write_idx"]

#: IDX type code -> numpy dtype of its (big-endian) values.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: The four MNIST files by role, as torchvision's ``MNIST`` names them in ``MNIST/raw``
#: (each may also be present with a ``.gz`` suffix).
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _decompressed(path: Path, raw: bytes) -> bytes:
    """``raw``, gunzipped if it is gzip; at most ``IDX_LIMIT`` bytes are inflated (a small
    file that inflates to gigabytes is refused, not decompressed into memory)."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(IDX_LIMIT + 1)
    except (EOFError, OSError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable gzip file ({exc}); download or convert it again") from None
    if len(data) > IDX_LIMIT:
        raise UserError(f"{path}: decompresses to more than {size_text(IDX_LIMIT)}, the limit for an IDX file")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in IDX file ``path`` (plain or gzip), in native byte order."""
    path = Path(path)
    data = _decompressed(path, read_regular_bytes(path, "IDX file", IDX_LIMIT))
    if len(data) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes, not even the 4-byte magic)")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\0\0" or code not in IDX_TYPES:
        raise UserError(f"{path}: not an IDX file (magic {data[:4].hex()}, expected 0000 then a type code "
                        f"of {', '.join(f'{c:02x}' for c in IDX_TYPES)} and the number of dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes, its {ndim}-dimension header needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(f"{path}: {what}: {len(data)} bytes where an IDX file of shape {list(shape)} "
                        f"({dtype.name}) has {expected}; download or convert it again")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX file ``path`` atomically (a temporary file renamed into place).

    ``compress`` None gzips exactly when the name ends in ``.gz``. The gzip header carries
    no time stamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, t in IDX_TYPES.items() if t.newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None:
        raise ValueError(f"IDX has no type for {array.dtype}; use one of {[t.name for t in IDX_TYPES.values()]}")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"shape {array.shape} does not fit an IDX header")
    payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes())
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_file(path, permissions=0o644) as stream:  # data other users read too
        stream.write(payload)
    return path


def mnist_file(folder: str | os.PathLike, role: str) -> Path | None:
    """The file of ``role`` (a key of ``MNIST_FILES``) in ``folder``, plain or ``.gz``.

    A regular file is preferred; failing one, anything else of that name (a named pipe,
    a device, a folder) is returned too, so that ``read_idx`` refuses it saying what it is
    instead of the files being reported missing."""
    name = MNIST_FILES[role]
    candidates = (Path(folder) / name, Path(folder) / f"{name}.gz")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return next((candidate for candidate in candidates if candidate.exists()), None)


def find_mnist(root: str | os.PathLike) -> Path | None:
    """The folder holding all four ``MNIST_FILES``: ``root`` itself, ``root/MNIST/raw``
    (torchvision's layout) or ``root/raw`` (``root`` is torchvision's ``MNIST`` folder)."""
    root = Path(root).expanduser()
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        if all(mnist_file(folder, role) is not None for role in MNIST_FILES):
            return folder
    return None


def read_mnist(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four MNIST arrays of ``folder`` by role, checked to be uint8 images [N, H, W]
    with as many uint8 labels [N]."""
    arrays: dict[str, np.ndarray] = {}
    for role in MNIST_FILES:
        path = mnist_file(folder, role)
        if path is None:
            raise UserError(f"MNIST file missing: {Path(folder) / MNIST_FILES[role]}[.gz]")
        arrays[role] = read_idx(path)
        expected_ndim = 3 if role.endswith("images") else 1
        if arrays[role].dtype != np.uint8 or arrays[role].ndim != expected_ndim:
            raise UserError(f"{path}: expected uint8 {'images [N, H, W]' if expected_ndim == 3 else 'labels [N]'}, "
                            f"got {arrays[role].dtype} of shape {list(arrays[role].shape)}")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise UserError(f"{folder}: {MNIST_FILES[f'{split}_images']} holds {len(images)} images but "
                            f"{MNIST_FILES[f'{split}_labels']} {len(labels)} labels")
    return arrays
