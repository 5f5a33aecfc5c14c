"""Files read from the user: checked to be regular files of a sane size before they are opened.

Opening a named pipe waits for a writer that never comes (and ignores Ctrl-C while it
waits), a device such as ``/dev/zero`` never ends, and a huge file is read whole into
memory or copied into what is published. So every file the harness reads (images, CSV
tables, IDX files, config and sweep files, leaderboard notes, checkpoints) is first looked
at with ``os.stat``, which never opens it: anything but a regular file, or a file larger
than the limit for its kind, is one ``FileRefused`` line naming the file and what it is.

``read_regular_bytes`` and ``open_regular`` also open the file without waiting
(``O_NONBLOCK``) and check the opened file again, so a path swapped for a pipe between the
check and the open is refused, not waited on.

The limits are set well above the largest real file of each kind, so they only stop
input no real dataset or run produces.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from debiasbench.core.errors import UserError

MiB = 1 << 20
GiB = 1 << 30

#: Config and sweep files: a few hundred lines of YAML at most.
CONFIG_LIMIT = 1 * MiB
#: ``leaderboard --notes``: a few paragraphs, copied into README.md and index.html.
NOTES_LIMIT = 1 * MiB
#: Dataset tables (CSV and text lists). CelebA's list_attr_celeba.txt, the largest of the
#: supported layouts, is about 26 MB; ISIC's and Waterbirds' a few MB.
TABLE_LIMIT = 512 * MiB
#: One image file. ISIC's largest JPEGs are about 10 MB; a 50-megapixel 16-bit PNG is
#: about 300 MB before compression.
IMAGE_FILE_LIMIT = 512 * MiB
#: An IDX file (MNIST's training images are 47 MB; EMNIST's largest about 550 MB), on disk
#: and after gzip decompression.
IDX_LIMIT = 1 * GiB
#: A checkpoint or weights file: VGG-16 with Adam's two moments is about 1.6 GB, a
#: ViT-Huge (632 M parameters) with them about 7.6 GB.
CHECKPOINT_LIMIT = 16 * GiB


class FileRefused(UserError):
    """A file that is missing, not a regular file, or too large for its kind.

    ``problem`` is the reason alone ("is a named pipe (FIFO), not a regular file"), for
    callers that phrase the line themselves."""

    def __init__(self, what: str, path: str | os.PathLike, problem: str):
        super().__init__(f"{what} '{path}' {problem}")
        self.path = Path(path)
        self.problem = problem


def kind_of(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def size_text(size: int) -> str:
    """``size`` bytes in the unit that reads best: ``50.0 MiB``, or ``1 MiB`` for a whole number."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size // unit} {name}" if size % unit == 0 else f"{size / unit:.1f} {name}"
    return f"{size} bytes"


def check_stat(what: str, path: str | os.PathLike, info: os.stat_result, max_bytes: int | None) -> int:
    """``check_regular_file`` on a ``stat`` result the caller already has: the size, or
    ``FileRefused``."""
    if not stat.S_ISREG(info.st_mode):
        kind = kind_of(info.st_mode)
        raise FileRefused(what, path, f"is {kind}, not a regular file" if kind != "not a regular file" else kind)
    if max_bytes is not None and info.st_size > max_bytes:
        raise FileRefused(what, path, f"is {size_text(info.st_size)} ({info.st_size} bytes), over the "
                                      f"{size_text(max_bytes)} limit")
    return info.st_size


def check_regular_file(path: str | os.PathLike, what: str, max_bytes: int | None) -> int:
    """The size of ``path`` if it is a regular file (a symbolic link to one included) of at
    most ``max_bytes`` (None: any size); else ``FileRefused`` naming it, ``what`` it
    should be and what it is. Looks with ``os.stat`` only: nothing is opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileRefused(what, path, "not found") from None
    except NotADirectoryError:
        raise FileRefused(what, path, "not found (a part of its path is a file)") from None
    except OSError as exc:
        raise FileRefused(what, path, f"cannot be read ({exc.strerror or exc})") from None
    return check_stat(what, path, info, max_bytes)


def open_regular(path: str | os.PathLike, what: str, max_bytes: int | None) -> BinaryIO:
    """``path`` opened for binary reading after ``check_regular_file``; the opened file is
    checked again (opened without waiting, so a pipe swapped in meanwhile is refused too)."""
    check_regular_file(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileRefused(what, path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        check_stat(what, path, os.fstat(fd), max_bytes)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike, what: str, max_bytes: int | None) -> bytes:
    """The bytes of ``path``, checked as ``open_regular`` does; at most ``max_bytes`` are
    read even if the file grows meanwhile."""
    with open_regular(path, what, max_bytes) as stream:
        try:
            data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
        except OSError as exc:
            raise FileRefused(what, path, f"cannot be read ({exc.strerror or exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise FileRefused(what, path, f"grew past its limit of {size_text(max_bytes)} while it was read")
    return data
