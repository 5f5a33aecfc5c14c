"""Artifact injectors: put a controlled shortcut into images and say exactly where.

Each injector maps a batch ``x`` [N, C, H, W] in [0, 1] to ``(x_with_artifact, mask)``;
``mask`` [N, 1, H, W] marks exactly the pixels whose value changed, which is what
artifact relevance and RRR's input-gradient penalty need. Injection is vectorised over
the batch (no Python loop over samples) and drawn from the caller's generator, so a
dataset built with the same seed is the same dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}


class Injector(Protocol):
    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class Patch:
    """A solid square of ``color`` and side ``size`` pixels at a random position per image."""

    size: int = 5
    color: tuple[float, float, float] = COLORS["red"]

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, channels, height, width = x.shape
        if self.size > min(height, width):
            raise ValueError(f"patch size {self.size} exceeds image size {height}x{width}")
        top = torch.randint(0, height - self.size + 1, (n, 1, 1), generator=generator)
        left = torch.randint(0, width - self.size + 1, (n, 1, 1), generator=generator)
        rows = torch.arange(height).view(1, height, 1)
        cols = torch.arange(width).view(1, 1, width)
        region = ((rows >= top) & (rows < top + self.size) & (cols >= left) & (cols < left + self.size))
        region = region.unsqueeze(1).to(x.device)
        color = torch.tensor(self.color[:channels], dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
        out = torch.where(region, color, x)
        return out, (out != x).any(dim=1, keepdim=True)


def make_injector(kind: str, **options) -> Injector:
    """The injector named ``kind`` (only ``patch`` so far) with its options."""
    if kind == "patch":
        return Patch(size=options.get("size", 5), color=COLORS[options.get("color", "red")])
    raise ValueError(f"unknown artifact kind {kind!r}; known: patch")
