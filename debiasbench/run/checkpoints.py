"""Atomic checkpoints: a reader sees the previous file or the new one, never half of one.

Written to a temporary file in the same folder and renamed over the target, loaded
with ``weights_only=True`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from debiasbench.core.atomic import atomic_file
from debiasbench.core.errors import UserError
from debiasbench.core.files import CHECKPOINT_LIMIT, open_regular
from debiasbench.core.interrupts import deferred


class CheckpointFolderFull(UserError):
    """The checkpoint folder's disk is full: one line naming the folder, instead of
    torch's ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``."""


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` whole or not at all; a full disk is
    ``CheckpointFolderFull`` (the temporary file removed). Ctrl-C or SIGTERM during the
    write arrives after it (``interrupts.deferred``), not as torch's writer error."""
    try:
        with deferred(), atomic_file(path) as handle:
            torch.save(state, handle)
    except (OSError, RuntimeError) as exc:
        folder = Path(path).parent
        if not _disk_full(exc, folder):
            raise
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        raise CheckpointFolderFull(f"the disk of checkpoint folder '{folder}' is full ({free / 2**20:.1f} MiB "
                                   "free): free space there or set checkpoint_dir to another folder") from None


#: The room a checkpoint write needs beyond what is free: torch reports a short write as
#: a RuntimeError naming no cause, so the folder's free space tells a full disk apart.
_FULL_BELOW = 1 << 20


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether writing into ``folder`` failed for want of space (ENOSPC, a quota, or a
    short write by torch's zip writer on a disk with less than a MiB free)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BELOW
    except OSError:
        return False


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``; a path that is not a regular file of at most
    ``CHECKPOINT_LIMIT`` bytes (a pipe, a device, a folder) is ``FileRefused``, not waited on."""
    with open_regular(path, "checkpoint", CHECKPOINT_LIMIT) as stream:
        return torch.load(stream, map_location=device, weights_only=True)


def set_aside(path: str | Path, folder: str | Path, label: str) -> Path:
    """Move an unusable checkpoint into ``folder`` as ``<label>-<name>.<time>`` (kept for
    a look, never read again, and not removed with its run's checkpoints); the new path."""
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = folder / f"{label}-{path.name}.{stamp}"
    counter = 1
    while kept.exists():
        kept = folder / f"{label}-{path.name}.{stamp}-{counter}"
        counter += 1
    os.replace(path, kept)
    return kept
