"""The heatmap picture of a run: per explained sample its input, artifact mask and relevance.

Drawn directly into pixels (each image enlarged by whole-pixel repetition, colours
computed here) and written with Pillow: a grid of 24 matplotlib axes took about 0.45 s,
longer than the two training epochs of a tiny run, and this picture is made once per run.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from debiasbench.core.atomic import atomic_file

#: A panel's side is enlarged to at least this many pixels (whole multiples of the image's).
PANEL_MIN_SIDE = 128
#: White pixels around each panel, and the band above the first row holding the titles.
PANEL_GAP = 4
TITLE_BAND = 14
COLUMNS = 3
#: zlib level of the PNG: 1 writes it several times faster than Pillow's default 6, and
#: flat panels of enlarged pixels compress well at any level.
PNG_COMPRESSION = 1


def _grey(values: Tensor, low: float, high: float) -> Tensor:
    """``[H, W]`` as ``[H, W, 3]`` in [0, 1]: ``low`` black, ``high`` white (matplotlib's ``gray``)."""
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    return scaled.clamp(0, 1)[..., None].expand(*values.shape, 3)


def input_colors(sample: Tensor) -> Tensor:
    """A ``[C, H, W]`` input as ``[H, W, 3]`` in [0, 1]: RGB, or grey for other channel counts.

    Inputs are often normalised (negative values), so each is rescaled to its own range.
    """
    if sample.shape[0] == 3:
        low, high = float(sample.min()), float(sample.max())
        image = (sample - low) / (high - low) if high > low else torch.zeros_like(sample)
        return image.permute(1, 2, 0)
    grey = sample.mean(dim=0)
    return _grey(grey, float(grey.min()), float(grey.max()))


def relevance_colors(heat: Tensor) -> Tensor:
    """A signed ``[H, W]`` relevance as ``[H, W, 3]`` in matplotlib's ``bwr``, symmetric
    around 0 (white) and scaled to its largest magnitude: blue against, red for the class."""
    bound = float(heat.abs().max()) or 1.0
    t = ((heat / bound + 1) / 2).clamp(0, 1)  # 0 blue, 0.5 white, 1 red
    below, above = (2 * t).clamp(max=1), (2 * (1 - t)).clamp(max=1)
    return torch.stack([below, torch.minimum(below, above), above], dim=-1)


def _panel(colors: Tensor, scale: int, side: int) -> np.ndarray:
    """``[H, W, 3]`` colours as uint8 pixels, enlarged ``scale`` times and centred on a
    white ``side`` x ``side`` square."""
    pixels = (colors * 255).round().to(torch.uint8).numpy()
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    square = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - pixels.shape[0]) // 2, (side - pixels.shape[1]) // 2
    square[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
    return square


def heatmap_grid(
    x: Tensor, mask: Tensor | None, relevance: Tensor, path: str | os.PathLike, max_samples: int = 8
) -> None:
    """Write a PNG: one row per sample (at most ``max_samples``), columns input, mask, relevance.

    Relevance is summed over channels and drawn signed (``relevance_colors``: white = 0,
    each row scaled to its own largest magnitude), so evidence for (red) and against
    (blue) the class stay distinguishable. Without a mask the mask column is blank. Every
    panel is a square of the same side, so the picture's aspect is columns : rows; each
    image pixel is a block of whole screen pixels, so relevance is not smeared onto its
    neighbours. Written to a temporary file that replaces ``path``, so a reader never sees
    half a PNG.
    """
    from PIL import Image, ImageDraw, ImageFont

    if x.ndim != 4 or relevance.ndim != 4 or x.shape[0] != relevance.shape[0]:
        raise ValueError(
            f"x and relevance must be [N, C, H, W] with the same N, got {tuple(x.shape)}, {tuple(relevance.shape)}"
        )
    n = min(int(x.shape[0]), max_samples)
    if n < 1:
        raise ValueError("heatmap_grid needs at least one sample")
    images = x[:n].detach().float().cpu()
    heat = relevance[:n].detach().float().cpu().sum(dim=1)
    height, width = heat.shape[1:]
    masks = None
    if mask is not None:
        masks = mask[:n].detach().cpu()
        masks = (masks[:, 0] if masks.ndim == 4 else masks).expand(n, height, width).ne(0).float()

    scale = math.ceil(PANEL_MIN_SIDE / max(height, width))
    side = max(height, width) * scale
    cell = side + 2 * PANEL_GAP
    # Side margins that keep the aspect exactly columns : rows despite the title band.
    margin = round(COLUMNS * TITLE_BAND / (2 * n))
    canvas = np.full((TITLE_BAND + n * cell, 2 * margin + COLUMNS * cell, 3), 255, dtype=np.uint8)
    blank = torch.ones(height, width, 3)
    for row in range(n):
        panels = (input_colors(images[row]),
                  blank if masks is None else _grey(masks[row], 0.0, 1.0),
                  relevance_colors(heat[row]))
        top = TITLE_BAND + row * cell + PANEL_GAP
        for column, colors in enumerate(panels):
            left = margin + column * cell + PANEL_GAP
            canvas[top:top + side, left:left + side] = _panel(colors, scale, side)

    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for column, title in enumerate(("input", "mask" if masks is not None else "no mask", "relevance")):
        centre = margin + column * cell + cell / 2
        draw.text((centre - draw.textlength(title, font=font) / 2, 1), title, fill=(0, 0, 0), font=font)
    with atomic_file(path) as stream:
        picture.save(stream, format="PNG", compress_level=PNG_COMPRESSION)
