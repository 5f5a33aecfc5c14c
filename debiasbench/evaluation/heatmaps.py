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
#: Height of the colour bar drawn under the panels, and of a caption line.
COLOUR_BAR_HEIGHT = 8
CAPTION_LINE = 13
#: What the relevance colours mean, as the caption states it.
COLOUR_SCALE = ("relevance colours: red for the class, blue against it, white 0; "
                "symmetric, each row scaled to its own largest |relevance|")
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


def heatmap_labels(class_label: str | None = None, view: str | None = None,
                   with_mask: bool = True) -> dict[str, object]:
    """The words of the heatmap picture: the three column titles, naming the view the
    inputs come from and the class explained, and the caption lines under the colour bar
    (the class, the view, ``COLOUR_SCALE``)."""
    explained = f"class {class_label}" if class_label is not None else "its label"
    titles = (f"input ({view})" if view else "input", "artifact mask" if with_mask else "no mask",
              f"relevance for {explained}")
    facts = [f"explained: {explained}"] + ([f"view: {view}"] if view else [])
    return {"titles": titles, "caption": ["; ".join(facts), COLOUR_SCALE]}


def heatmap_grid(
    x: Tensor, mask: Tensor | None, relevance: Tensor, path: str | os.PathLike, max_samples: int = 8,
    class_label: str | None = None, view: str | None = None,
) -> None:
    """Write a PNG: one row per sample (at most ``max_samples``), columns input, mask, relevance.

    Relevance is summed over channels and drawn signed (``relevance_colors``: white = 0,
    each row scaled to its own largest magnitude), so evidence for (red) and against
    (blue) the class stay distinguishable. Without a mask the mask column is blank. The
    column titles name the view the inputs come from (``view``) and the class explained
    (``class_label``, else "its label"); under the panels a colour bar runs from blue
    (-max) through white (0) to red (+max), with a caption stating the class, the view and
    the colour scale (``heatmap_labels``); the same words are the PNG's ``Title`` and
    ``Description`` text. Every panel is a square of the same side, and the margins keep
    the picture's aspect columns : rows; each image pixel is a block of whole screen
    pixels, so relevance is not smeared onto its neighbours. Written to a temporary file
    that replaces ``path``, so a reader never sees half a PNG.
    """
    import textwrap

    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

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
    labels = heatmap_labels(class_label, view, with_mask=masks is not None)
    titles, caption_text = labels["titles"], labels["caption"]
    assert isinstance(titles, tuple) and isinstance(caption_text, list)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # The caption is wrapped to the panels' width: about this many characters a line.
    per_line = max(20, int(COLUMNS * cell / max(1.0, measure.textlength("x" * 40, font=font) / 40)))
    caption = [line for text in caption_text for line in textwrap.wrap(str(text), per_line)]
    # Under the panels: the colour bar, its three value labels, the caption lines.
    bottom = COLOUR_BAR_HEIGHT + CAPTION_LINE * (1 + len(caption)) + PANEL_GAP
    # Side margins that keep the aspect exactly columns : rows despite the bands.
    margin = round(COLUMNS * (TITLE_BAND + bottom) / (2 * n))
    total_width = 2 * margin + COLUMNS * cell
    canvas = np.full((TITLE_BAND + n * cell + bottom, total_width, 3), 255, dtype=np.uint8)
    blank = torch.ones(height, width, 3)
    for row in range(n):
        panels = (input_colors(images[row]),
                  blank if masks is None else _grey(masks[row], 0.0, 1.0),
                  relevance_colors(heat[row]))
        top = TITLE_BAND + row * cell + PANEL_GAP
        for column, colors in enumerate(panels):
            left = margin + column * cell + PANEL_GAP
            canvas[top:top + side, left:left + side] = _panel(colors, scale, side)

    # The colour bar spans the panels: -max (blue) at the left, 0 (white), +max (red).
    bar_top, bar_left, bar_width = TITLE_BAND + n * cell, margin + PANEL_GAP, COLUMNS * cell - 2 * PANEL_GAP
    bar = relevance_colors(torch.linspace(-1.0, 1.0, bar_width)[None])
    canvas[bar_top:bar_top + COLOUR_BAR_HEIGHT, bar_left:bar_left + bar_width] = \
        (bar * 255).round().to(torch.uint8).numpy()

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    black = (0, 0, 0)
    for column, title in enumerate(titles):
        centre = margin + column * cell + cell / 2
        draw.text((centre - draw.textlength(title, font=font) / 2, 1), title, fill=black, font=font)
    ticks = bar_top + COLOUR_BAR_HEIGHT
    for text, at in (("-max (against)", 0.0), ("0", 0.5), ("+max (for the class)", 1.0)):
        start = bar_left + at * bar_width - at * draw.textlength(text, font=font)
        draw.text((start, ticks), text, fill=black, font=font)
    for index, line in enumerate(caption):
        draw.text((bar_left, ticks + CAPTION_LINE * (index + 1)), line, fill=black, font=font)
    info = PngInfo()
    info.add_text("Title", " | ".join(titles))
    info.add_text("Description", " ".join(str(text) for text in caption_text))
    with atomic_file(path) as stream:
        picture.save(stream, format="PNG", compress_level=PNG_COMPRESSION, pnginfo=info)
