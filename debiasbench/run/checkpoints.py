"""Atomic checkpoints: a reader sees the previous file or the new one, never half of one.

Written to a temporary file in the same folder and renamed over the target, loaded
with ``weights_only=True`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from debiasbench.core.atomic import atomic_file
from debiasbench.core.files import CHECKPOINT_LIMIT, open_regular


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    with atomic_file(path) as handle:
        torch.save(state, handle)


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
