"""Atomic checkpoints: a reader sees the previous file or the new one, never half of one.

Written to a temporary file in the same folder and renamed over the target, loaded
with ``weights_only=True`` so a checkpoint cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from debiasbench.atomic import atomic_file


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    with atomic_file(path) as handle:
        torch.save(state, handle)


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)
