"""Files written whole or not at all: a reader sees the previous file or the new one.

Every file the harness writes for others to read (checkpoints, IDX files, heatmaps) goes
through ``atomic_file``: the bytes go to a temporary file in the target's folder, are
flushed to disk and renamed over the target; an error or a kill mid-write leaves the
target as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, permissions: int | None = None) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the block ends without error.

    ``permissions`` (e.g. ``0o644``) replaces ``mkstemp``'s owner-only ``0o600`` for files
    other users must read."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        if permissions is not None:
            os.chmod(temporary, permissions)
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
