"""Files written whole or not at all: a reader sees the previous file or the new one.

Every file the harness writes for others to read (checkpoints, IDX files, heatmaps) goes
through ``atomic_file``: the bytes go to a temporary file in the target's folder, are
flushed to disk and renamed over the target; an error or a kill mid-write leaves the
target as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
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


def make_folders(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; those this call created, the outermost
    first (for ``remove_empty_folders`` to take back where what was to go in them failed)."""
    folder = Path(folder)
    missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
    created: list[Path] = []
    for path in missing:
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by another process: not ours to remove
            continue
        except OSError:
            remove_empty_folders(created)
            raise
        created.append(path)
    return created


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders of ``make_folders`` that are empty, innermost first, stopping at
    the first one that is not (it holds what another process put there meanwhile)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


def this_host() -> str:
    """This machine's name as temporaries carry it: no ``~``, ``/`` or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64]


def running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's included). A reused id
    reads as running: its temporary is kept, which is safe."""
    if pid <= 0:
        return True  # not a writer's id: leave the file alone
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def writer_tag() -> str:
    """``~<host>~<pid>~``: what a temporary's name carries of its writer, between the name
    it stands for and mkstemp's random part (``.<name>~<host>~<pid>~<random><suffix>``)."""
    return f"~{this_host()}~{os.getpid()}~"


#: ``.<name>~<host>~<pid>~<random><suffix>``: a temporary named with ``writer_tag``.
TAGGED_TEMPORARY = re.compile(r"^\.(?P<name>[^~]+)~(?P<host>[^~]*)~(?P<pid>[0-9]+)~[^~]+$")


def left_by_dead_writer(name: str) -> str | None:
    """Where ``name`` is a temporary named with ``writer_tag`` by a process of this host
    that no longer runs, its pid; else None (another host's, a live writer's, not one)."""
    match = TAGGED_TEMPORARY.match(name)
    if match is None or match["host"] != this_host() or running(int(match["pid"])):
        return None
    return match["pid"]
