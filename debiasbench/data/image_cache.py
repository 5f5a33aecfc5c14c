"""Decode image files once: every image resized, centre-cropped and stored in one uint8 .npy.

Real datasets are tens of thousands of JPEGs or PNGs; decoding them is what makes a run
slow, not the model. The first run decodes each file once (shorter side resized to
``image_size``, then a centre crop to ``image_size`` x ``image_size``: the evaluation
transform) into a single uint8 array [N, 3, S, S] stored as a ``.npy`` file; later runs
read rows of that file (``debiasbench.data.pixels.ImageStore``) and never open an image again.
Rows are written and read with positioned file I/O, not a memory map, so neither
building nor reading the cache makes the process's memory grow with the dataset.

The file name is a hash of the file list, each file's size and modification time and
``image_size``, so a changed, added or removed image or another size is a new cache and
never a stale one. It is written to a temporary name and renamed when complete, so a
killed run never leaves a half-written cache behind (rename is atomic on one filesystem).
Its space is reserved before the first row is written, so a full disk is one line naming
the folder and the bytes needed, not a failure halfway through.

Beside it, ``<cache>.crc`` holds the CRC-32 of every row, written before the cache is
renamed into place. Opening a cache checks its header, its size and the checksums of
``VERIFIED_ROWS`` rows spread over the file (milliseconds, whatever the size); a cache
that fails (truncated, zero bytes, garbled, overwritten by other bytes) is removed and
rebuilt with a one-line note, instead of failing every later run or feeding it other
pixels.

Hostile or odd files: every image is checked to be a regular file of at most
``IMAGE_FILE_LIMIT`` bytes before it is opened (a named pipe would be waited on forever),
and its size is read from its header before it is decoded: more than ``MAX_PIXELS``
pixels or a side more than ``MAX_ASPECT`` times the other (a 1 x 1,000,000 PNG of 3 KB
would be resized to 64,000,000 x 64) is refused in one line naming it. 16-bit images are
scaled to 8 bits by their bit depth, not clipped. Running out of memory while decoding or
building the cache is one line naming the file or the cache.

Temporary files carry the writer's host and process id (``.<cache>~<host>~<pid>~<random>
.npy.tmp``): a process killed outright (``kill -9``, the OOM killer) leaves its reserved
temporary behind, and the next ``open_images`` on that folder removes the temporaries of
writers on this host that are no longer running, never those of a live writer. Ctrl-C and
SIGTERM remove the writer's own temporary before it ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from debiasbench.core.atomic import atomic_file, left_by_dead_writer, make_folders, remove_empty_folders, writer_tag
from debiasbench.core.errors import UserError, sentence
from debiasbench.core.files import IMAGE_FILE_LIMIT, FileRefused, check_stat, open_regular, size_text
from debiasbench.data.pixels import ImageStore

#: Environment variable naming the folder of every image cache (default: the user's
#: cache folder, ``$XDG_CACHE_HOME/debiasbench`` or ``~/.cache/debiasbench``).
CACHE_ENV = "DEBIASBENCH_CACHE"
#: Bumped when the decoding or the file format changes, so caches written by an older
#: version are not reused (2: row checksums beside the cache; 3: 16-bit images scaled by their bit depth).
FORMAT_VERSION = 3
#: Rows whose checksum is verified when a cache is opened (spread evenly, first and last included).
VERIFIED_ROWS = 64
#: Most pixels an image may have, read from its header before decoding: 50 megapixels
#: (150 MB decoded as RGB, per decoding thread). The largest images of the supported
#: datasets (ISIC's dermoscopy photos) have about 24.
MAX_PIXELS = 50_000_000
#: Largest ratio of an image's longer side to its shorter one. Photographs and scans are
#: within 3:1; resizing the shorter side to ``image_size`` makes an intermediate image
#: ``ratio * image_size**2`` pixels large, so a thin strip would cost gigabytes.
MAX_ASPECT = 100
# PIL warns of images above 89 megapixels when it opens them; MAX_PIXELS, checked right
# after, is lower and refuses them in one line, so the warning would only add two lines
# of PIL's source to that line.
warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels, could be "
                        "decompression bomb")
#: Temporaries of a writer of an older version (no process id in the name) are removed
#: once they have not been written to for this long (seconds): a live writer writes rows
#: continually.
LEGACY_TEMPORARY_AGE = 24 * 3600
#: ``.<cache stem>~<host>~<pid>~<random>.npy.tmp``: a temporary cache and who writes it.
TEMPORARY = re.compile(r"^\.(?P<stem>[^~]+)~(?P<host>[^~]*)~(?P<pid>[0-9]+)~[^~]+\.npy\.tmp$")
#: Temporaries written before names carried their writer: ``.images-<key>-<N>x<S>-<random>.npy.tmp``.
LEGACY_TEMPORARY = re.compile(r"^\.images-[0-9a-f]+-[0-9]+x[0-9]+-[a-z0-9_]+\.npy\.tmp$")


class ImageReadError(UserError):
    """An image file that is missing or cannot be decoded; ``path`` names it."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image '{path}' ({reason})")
        self.path = path


class OutOfMemory(UserError):
    """A ``MemoryError`` while decoding an image or building the cache, naming which."""


def cache_key(paths: Sequence[Path], image_size: int) -> str:
    """Hash of the file list, their sizes and modification times, and the output size."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION} size={image_size}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            check_stat("image", path, stat, IMAGE_FILE_LIMIT)  # not a pipe, device or folder
        except OSError as exc:
            raise ImageReadError(Path(path), exc.strerror or "not found") from None
        except FileRefused as exc:
            raise ImageReadError(Path(path), exc.problem) from None
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def check_dimensions(path: Path, width: int, height: int) -> None:
    """Refuse an image whose header declares more than ``MAX_PIXELS`` pixels or sides
    further apart than ``MAX_ASPECT``: checked before a pixel is decoded."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(Path(path), f"{width} x {height} pixels, more than the limit of {MAX_PIXELS:,} "
                                         "pixels of an image")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageReadError(Path(path), f"{width} x {height} pixels: one side is more than {MAX_ASPECT} times "
                                         "the other")


def eight_bit(image):  # PIL images, typed loosely as PIL is imported lazily
    """``image`` with 8 bits per channel, scaled by its bit depth: PIL's own conversion of a
    16-bit greyscale image (mode ``I;16``, or ``I`` as PNG's 16-bit greyscale may load)
    clips every value above 255, so almost every pixel would be white. Images with 8 bits
    (and 16-bit colour PNGs, which PIL reads as 8-bit RGB) pass through."""
    from PIL import Image

    if not image.mode.startswith("I"):
        return image
    values = np.asarray(image)
    if image.mode.startswith("I;16") or image.format == "PNG" or values.max(initial=0) <= 0xFFFF:
        top, wide = 0xFFFF, np.uint32  # 16 bits: 65535 * 255 still fits 32
    else:
        top, wide = 0x7FFFFFFF, np.uint64  # PIL's mode I: signed 32-bit
    scaled = (np.clip(values, 0, top).astype(wide) * 255 + top // 2) // top  # rounded to the nearest
    return Image.fromarray(scaled.astype(np.uint8), "L")


def decode(path: Path, image_size: int) -> np.ndarray:
    """[3, S, S] uint8: RGB, shorter side resized to ``image_size``, centre crop.

    Refused before decoding (``ImageReadError``): anything but a regular file, and images
    too large or too thin (``check_dimensions``). A ``MemoryError`` is ``OutOfMemory``
    naming the file."""
    from PIL import Image

    size_read = ""
    try:
        with open_regular(path, "image", IMAGE_FILE_LIMIT) as stream, Image.open(stream) as image:
            check_dimensions(path, *image.size)
            size_read = f"{image.size[0]} x {image.size[1]} pixels, "
            # JPEG: let the decoder downscale by a power of two first (much faster, and
            # never below the requested size, so the resize below still sees enough pixels).
            image.draft("RGB", (image_size, image_size))
            image = eight_bit(image).convert("RGB")
            width, height = image.size
            scale = image_size / min(width, height)
            size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
            left, top = (size[0] - image_size) // 2, (size[1] - image_size) // 2
            image = image.crop((left, top, left + image_size, top + image_size))
            pixels = np.asarray(image, dtype=np.uint8)
    except FileRefused as exc:
        raise ImageReadError(Path(path), exc.problem) from None
    except MemoryError:
        raise OutOfMemory(f"out of memory decoding image '{path}' ({size_read}resized to {image_size} px)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's errors for bad files
        raise ImageReadError(Path(path), f"{type(exc).__name__}: {exc}") from None
    return pixels.transpose(2, 0, 1)


def cache_root() -> Path:
    """Where image caches live unless a dataset names its ``cache_dir``: ``$DEBIASBENCH_CACHE``,
    else ``$XDG_CACHE_HOME/debiasbench``, else ``~/.cache/debiasbench``. Never inside a
    dataset's folder: other tools (torchvision's ``ImageFolder``) take every folder there
    for a class, and a dataset folder may be read-only or shared."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "debiasbench"


def dataset_cache_dir(root: Path) -> Path:
    """The cache folder of the dataset at ``root``: ``images/<folder name>-<hash of its
    resolved path>`` under ``cache_root()``, one per dataset folder (the caches in it are
    keyed by the file list, sizes, modification times and image size, so a changed file
    is decoded again)."""
    resolved = Path(root).expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return cache_root() / "images" / f"{resolved.name or 'root'}-{digest}"


def load_images(paths: Sequence[Path], image_size: int, cache_dir: Path,
                workers: int | None = None) -> np.ndarray:
    """[N, 3, S, S] uint8 (read-only memory map) of ``paths``, decoded at most once.

    A convenience for small data and tests; datasets use ``open_images``, which reads rows.
    """
    store = open_images(paths, image_size, cache_dir, workers)
    return np.load(store.path, mmap_mode="r")


def open_images(paths: Sequence[Path], image_size: int, cache_dir: Path,
                workers: int | None = None) -> ImageStore:
    """The image cache of ``paths`` as an ``ImageStore``, decoding it first on a miss or
    where the cache found is damaged.

    ``workers`` threads decode in parallel on a cache miss (PIL releases the GIL while
    decoding); default: the CPU count, at most 8.
    """
    paths = [Path(p) for p in paths]
    key = cache_key(paths, image_size)
    target = Path(cache_dir) / f"images-{key}-{len(paths)}x{image_size}.npy"
    shape = (len(paths), 3, image_size, image_size)
    remove_stale_temporaries(Path(cache_dir))
    if target.exists():
        damage = check_cache(target, shape)
        if damage is None:
            return read_store(target)
        print(sentence(f"image cache '{target}' is damaged ({damage}): rebuilding it"), file=sys.stderr)
        for stale in (target, checksum_path(target)):
            stale.unlink(missing_ok=True)
    write_cache(paths, image_size, target, workers)
    return read_store(target)


def checksum_path(cache: Path) -> Path:
    """The file of per-row CRC-32s beside ``cache``."""
    return cache.with_name(cache.name + ".crc")


def verified_rows(n: int) -> np.ndarray:
    """The rows whose checksums ``check_cache`` verifies: ``VERIFIED_ROWS`` spread over ``n``."""
    return np.unique(np.linspace(0, n - 1, num=min(n, VERIFIED_ROWS)).round().astype(np.int64)) if n else \
        np.zeros(0, dtype=np.int64)


def check_cache(path: Path, shape: tuple[int, ...]) -> str | None:
    """Why the cache at ``path`` cannot be used (None if it can): a header that does not
    describe a uint8 array of ``shape``, a size other than the header's, a missing or short
    checksum file, or a verified row whose checksum differs."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            found, fortran, dtype = read_header(handle)
            offset = handle.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        return f"unreadable header: {type(exc).__name__}"
    if fortran or dtype != np.uint8 or tuple(found) != tuple(shape):
        return f"header says {dtype} {tuple(found)}, expected uint8 {tuple(shape)}"
    row_bytes = int(np.prod(shape[1:]))
    expected = offset + shape[0] * row_bytes
    if size != expected:
        return f"{size} bytes, expected {expected}"
    try:
        sums = np.fromfile(checksum_path(path), dtype="<u4")
    except (OSError, ValueError):
        return "its checksum file is missing"
    if len(sums) != shape[0]:
        return "its checksum file does not match"
    with open(path, "rb") as handle:
        fd = handle.fileno()
        for row in verified_rows(shape[0]):
            data = os.pread(fd, row_bytes, offset + int(row) * row_bytes)
            if zlib.crc32(data) != int(sums[row]):
                return f"row {int(row)} differs from its checksum"
    return None


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


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary caches in ``folder`` whose writer is gone: a process of this
    host that no longer runs, or (older names without a writer) untouched for
    ``LEGACY_TEMPORARY_AGE``. Temporaries of live writers, of other hosts, and anything
    that is not a plain file of ours are left alone. The paths removed, each with a note."""
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no cache folder yet, or not readable: nothing of ours to tidy
        return []
    now, removed = time.time(), []
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if match is not None:
                if left_by_dead_writer(entry.name) is None:  # another host's, or a live writer's
                    continue
                whose = f"process {match['pid']}, which is no longer running"
            elif LEGACY_TEMPORARY.match(entry.name):
                if now - entry.stat(follow_symlinks=False).st_mtime < LEGACY_TEMPORARY_AGE:
                    continue
                whose = "a writer that stopped more than a day ago"
            else:
                continue
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except FileNotFoundError:  # removed meanwhile by another run
            continue
        except OSError as exc:
            print(sentence(f"cannot remove the stale image cache temporary '{entry.path}' ({exc.strerror})"),
                  file=sys.stderr)
            continue
        print(sentence(f"removed the image cache temporary '{entry.path}' ({size_text(size)}) left by {whose}"),
              file=sys.stderr)
        removed.append(Path(entry.path))
    return removed


class _Terminated(BaseException):
    """SIGTERM while the cache is written: unwinds like Ctrl-C so the temporary is removed."""


@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``_Terminated`` in the main thread (where it
    still had its default action), so ``finally`` clauses run; the process then ends by
    SIGTERM as it would have."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def unwind(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def write_cache(paths: list[Path], image_size: int, target: Path, workers: int | None) -> None:
    """Decode ``paths`` into ``target`` and its checksums: temporary files, reserved whole
    before the first row is written, renamed when complete (the checksums first). The
    temporary is removed however this ends, SIGTERM included (``kill -9`` excepted: the next
    run removes it)."""
    with _terminate_unwinds():
        try:
            _write_cache(paths, image_size, target, workers)
        except MemoryError:
            raise OutOfMemory(f"out of memory building the image cache '{target}' ({len(paths)} images at "
                              f"{image_size} px)") from None


def _write_cache(paths: list[Path], image_size: int, target: Path, workers: int | None) -> None:
    shape = (len(paths), 3, image_size, image_size)
    created: list[Path] = []
    try:
        created = make_folders(target.parent)  # the dataset's cache folder: removed again where left empty
        handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}{writer_tag()}",
                                             suffix=".npy.tmp", dir=target.parent)
    except OSError as exc:
        remove_empty_folders(created)
        raise UserError(f"cannot write the image cache in '{target.parent}' ({exc.strerror}): "
                        f"set dataset_params.cache_dir to a writable folder") from None
    row_bytes = 3 * image_size * image_size
    needed = 0
    try:
        os.close(handle)
        sums = np.zeros(len(paths), dtype="<u4")
        with open(temporary, "r+b") as file:
            np.lib.format.write_array_header_2_0(
                file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                       "fortran_order": False, "shape": shape})
            offset = file.tell()
            file.flush()
            fd = file.fileno()
            needed = offset + len(paths) * row_bytes + sums.nbytes
            reserve(fd, offset + len(paths) * row_bytes)

            def fill(i: int) -> None:
                pixels = np.ascontiguousarray(decode(paths[i], image_size)).tobytes()
                sums[i] = zlib.crc32(pixels)
                if os.pwrite(fd, pixels, offset + i * row_bytes) != row_bytes:
                    raise OSError(errno.EIO, f"short write to the image cache '{temporary}'")

            pool = ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))
            try:
                for _ in pool.map(fill, range(len(paths))):  # re-raises the first error
                    pass
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # a bad file stops the rest
            file.flush()
            os.fsync(fd)
        with atomic_file(checksum_path(target)) as stream:
            stream.write(sums.tobytes())
        os.replace(temporary, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left for the image cache in '{target.parent}': it needs {needed} bytes "
                            f"({needed / 2**30:.2f} GiB); free space there or set dataset_params.cache_dir "
                            "to a folder with room") from None
        raise
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if not target.exists():  # refused (no space, a bad image, an interrupt): nothing left behind
            remove_empty_folders(created)


def reserve(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real disk blocks now (``posix_fallocate``), so that
    a full disk fails here with ENOSPC rather than in the middle of writing; where the
    filesystem cannot allocate ahead, the file is only extended (sparse)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)
    except AttributeError:  # no posix_fallocate on this platform
        os.ftruncate(fd, size)
