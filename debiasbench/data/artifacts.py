"""Artifact injectors: put a controlled shortcut into images and say exactly where.

Each injector maps a batch ``x`` [N, C, H, W] in [0, 1] to ``(x_with_artifact, mask)``;
``mask`` [N, 1, H, W] marks exactly the pixels whose value changed (in any channel),
which is what artifact relevance and RRR's input-gradient penalty need. Injection is
vectorised over the batch (no Python loop over samples) and drawn from the caller's
generator only, so a dataset built with the same seed is the same dataset.

Injection is two steps: ``draw(n, height, width, generator)`` draws every random choice
of ``n`` images (position, which stamp) as a small integer tensor [n, k], and
``apply(x, draws)`` paints them, deterministically, on the device ``x`` lives on. A
dataset draws once when it is built and paints per batch, so a sample carries the same
pixels in every epoch, run and data placement without any image being stored twice.
``injector(x, generator)`` is ``apply(x, draw(...))`` and draws in the same order.

The kinds are the controlled artifacts of the RR-ClArC experiments:

- ``patch``: a solid coloured square at a random position per image.
- ``lsb``: an invisible fixed bit pattern in the least-significant bit of 8-bit pixels.
- ``brightness`` (the paper's "white colour"): the whole image moved towards white.
- ``timestamp``: a date / time text stamp rendered with PIL's default bitmap font.
- ``tint``: the whole image blended with a colour.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

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

#: Every colour name ``make_injector`` accepts: ``COLORS`` plus white (the timestamp default).
ALL_COLORS: dict[str, tuple[float, float, float]] = {**COLORS, "white": (1.0, 1.0, 1.0)}


class Injector(Protocol):
    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor: ...

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]: ...

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...


class _Injects:
    """``__call__`` = ``apply(x, draw(...))``; kinds without random choices draw [n, 0]."""

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        return torch.zeros(n, 0, dtype=torch.long)

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, height, width = x.shape
        return self.apply(x, self.draw(n, height, width, generator))


def _changed(out: Tensor, x: Tensor) -> Tensor:
    """[N, 1, H, W]: the pixels where any channel of ``out`` differs from ``x``."""
    return (out != x).any(dim=1, keepdim=True)


def _color(color: tuple[float, ...], x: Tensor) -> Tensor:
    channels = x.shape[1]
    if len(color) < channels:
        raise ValueError(f"colour {color} has fewer than the image's {channels} channels")
    return _color_tensor(tuple(color[:channels]), x.dtype, x.device)


@functools.lru_cache(maxsize=64)
def _color_tensor(color: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """[1, C, 1, 1] of ``color``, made once per device (no host copy per painted batch)."""
    return torch.tensor(color, dtype=dtype, device=device).view(1, len(color), 1, 1)


def _draw_corner(n: int, height: int, width: int, size: int, generator: torch.Generator) -> Tensor:
    """[n, 2] (top, left) of a ``size`` square at a random position per image."""
    top = torch.randint(0, height - size + 1, (n, 1, 1), generator=generator)
    left = torch.randint(0, width - size + 1, (n, 1, 1), generator=generator)
    return torch.cat([top.view(n, 1), left.view(n, 1)], dim=1)


def _square_region(corners: Tensor, height: int, width: int, size: int,
                   device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The square at ``corners`` [N, 2]: (region [N,1,H,W], top, left [N,1,1]) on ``device``."""
    n = corners.shape[0]
    top = corners[:, 0].to(device).view(n, 1, 1)
    left = corners[:, 1].to(device).view(n, 1, 1)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    region = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return region.unsqueeze(1), top, left


@dataclass(frozen=True)
class Patch(_Injects):
    """A solid square of ``color`` and side ``size`` pixels at a random position per image."""

    size: int = 5
    color: tuple[float, float, float] = COLORS["red"]

    def _check(self, height: int, width: int) -> None:
        if self.size > min(height, width):
            raise ValueError(f"patch size {self.size} exceeds image size {height}x{width}")

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        self._check(height, width)
        return _draw_corner(n, height, width, self.size, generator)

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        _, _, height, width = x.shape
        self._check(height, width)
        region, _, _ = _square_region(draws, height, width, self.size, x.device)
        out = torch.where(region, _color(self.color, x), x)
        return out, _changed(out, x)


@functools.lru_cache(maxsize=32)
def _lsb_pattern(seed: int, channels: int, height: int, width: int, device: torch.device) -> Tensor:
    """The LSB bits of ``seed`` on ``device``, made once per shape and device (artifacts are
    painted per batch; this keeps the draw and the copy out of every batch). Shared: do not
    modify."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (channels, height, width), generator=generator).to(device)


@functools.lru_cache(maxsize=32)
def _on_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (a cached, never modified constant) on ``device``, copied once."""
    return tensor.to(device)


def quantize(x: Tensor) -> Tensor:
    """``x`` on the 8-bit grid: round(x * 255) / 255 (idempotent, same dtype)."""
    return torch.round(x.clamp(0.0, 1.0) * 255) / 255


@dataclass(frozen=True)
class Lsb(_Injects):
    """A fixed pseudo-random bit pattern in the least-significant bit of 8-bit pixel values.

    The image is quantised to 8 bits (``round(x * 255)``), the LSB of every channel of
    every pixel in the region is set to the pattern's bit, and the result is divided by
    255 again. The pattern [C, h, w] comes from ``seed`` alone (not from the caller's
    generator), so it is the same for every image and every call: a learnable yet
    invisible artifact (each value moves by at most 1/255). The region is the whole
    image (``size=None``) or a ``size`` square at a random position per image, the
    pattern anchored at the square's corner.

    Inputs that are not on the 8-bit grid change everywhere by the quantisation and the
    mask says so; callers that want the mask to be exactly the pattern's changes pass
    images already on the grid (``quantize(x)``), as ``synthetic_artifacts`` does.
    """

    size: int | None = None
    seed: int = 0

    def pattern(self, channels: int, height: int, width: int) -> Tensor:
        """The bits [C, h, w] (int64, 0 / 1) written into a region of that shape."""
        return _lsb_pattern(self.seed, channels, height, width, torch.device("cpu")).clone()

    def _check(self, height: int, width: int) -> None:
        if self.size is not None and not 1 <= self.size <= min(height, width):
            raise ValueError(f"lsb region size {self.size} must be in [1, {min(height, width)}] "
                             f"for images of {height}x{width}")

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        if self.size is None:
            return torch.zeros(n, 0, dtype=torch.long)
        self._check(height, width)
        return _draw_corner(n, height, width, self.size, generator)

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        _, channels, height, width = x.shape
        q = torch.round(x.clamp(0.0, 1.0) * 255)
        even = q - torch.remainder(q, 2)
        if self.size is None:
            bits = _lsb_pattern(self.seed, channels, height, width, x.device).unsqueeze(0).to(x.dtype)
            written = even + bits
        else:
            self._check(height, width)
            region, top, left = _square_region(draws, height, width, self.size, x.device)
            pattern = _lsb_pattern(self.seed, channels, self.size, self.size, x.device)
            rows = (torch.arange(height, device=x.device).view(1, height, 1) - top).clamp(0, self.size - 1)
            cols = (torch.arange(width, device=x.device).view(1, 1, width) - left).clamp(0, self.size - 1)
            bits = pattern[:, rows, cols].transpose(0, 1)  # [N, C, H, W]
            written = torch.where(region, even + bits.to(x.dtype), q)
        out = written / 255
        return out, _changed(out, x)


@dataclass(frozen=True)
class Brightness(_Injects):
    """The whole image moved towards white: ``x + strength * (1 - x)`` (the paper's "white colour")."""

    strength: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"brightness strength must be in [0, 1], got {self.strength}")

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        out = (x + self.strength * (1 - x)).clamp(0.0, 1.0)
        return out, _changed(out, x)


@dataclass(frozen=True)
class Tint(_Injects):
    """The whole image blended with a colour: ``x * (1 - strength) + strength * color``."""

    strength: float = 0.25
    color: tuple[float, float, float] = COLORS["red"]

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"tint strength must be in [0, 1], got {self.strength}")

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        out = (x * (1 - self.strength) + self.strength * _color(self.color, x)).clamp(0.0, 1.0)
        return out, _changed(out, x)


#: The date-times a timestamp is drawn from (one per image, uniformly).
STAMPS = (
    "2019-03-14 10:22", "2018-11-02 07:45", "2020-06-30 18:09", "2017-01-27 23:51",
    "2021-09-08 05:36", "2016-12-19 14:03", "2022-04-25 09:58", "2015-07-11 21:17",
)
#: Stamp formats, longest first: the part of each ``STAMPS`` string they show.
STAMP_FORMATS: dict[str, slice] = {"datetime": slice(0, 16), "date": slice(0, 10), "time": slice(11, 16)}
STAMP_POSITIONS = ("random", "top_left", "top_right", "bottom_left", "bottom_right")


@functools.lru_cache(maxsize=32)
def render_stamps(texts: tuple[str, ...], scale: int = 1) -> Tensor:
    """Glyph masks [K, h, w] (bool) of ``texts`` in PIL's default bitmap font.

    Each distinct string is rendered once (cached); all share one box, the union of
    their inked pixels' bounding boxes, enlarged ``scale`` times (nearest neighbour).
    The returned tensor is shared by the cache: do not modify it.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") \
        else ImageFont.load_default()
    boxes = [font.getbbox(text) for text in texts]
    width, height = int(max(b[2] for b in boxes)), int(max(b[3] for b in boxes))
    masks = []
    for text in texts:  # a handful of distinct strings, not samples
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((0, 0), text, fill=255, font=font)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        masks.append(pixels.view(height, width) > 127)
    glyphs = torch.stack(masks)
    ink_rows = glyphs.any(0).any(1).nonzero().flatten()
    ink_cols = glyphs.any(0).any(0).nonzero().flatten()
    glyphs = glyphs[:, ink_rows[0]:ink_rows[-1] + 1, ink_cols[0]:ink_cols[-1] + 1]
    return glyphs.repeat_interleave(scale, 1).repeat_interleave(scale, 2).contiguous()


@dataclass(frozen=True)
class Timestamp(_Injects):
    """A date / time text stamp in ``color``, one of ``STAMPS`` per image, drawn at random.

    Rendered once per distinct string with PIL's default bitmap font (glyphs about 6
    pixels wide and 7 high per character, times ``scale``), cropped to the inked box.
    ``format`` ``datetime`` ("2019-03-14 10:22", 7x96 pixels, height x width), ``date``
    ("2019-03-14", 7x60) or ``time`` ("10:22", 7x30); ``auto`` (the default) takes the
    longest that fits the image: ``time`` at 32x32, ``datetime`` from 96 pixels wide.
    ``position`` is ``random`` (anywhere the stamp fits, per image) or a corner (one
    pixel in from the edges where there is room). Images smaller than the stamp raise
    ``ValueError`` naming the minimum size (see ``min_size``); at ``scale`` 1 the
    smallest stamp needs 7x30 pixels, so 16x16 images cannot carry a timestamp.
    """

    color: tuple[float, float, float] = ALL_COLORS["white"]
    position: str = "random"
    format: str = "auto"
    scale: int = 1

    def __post_init__(self) -> None:
        if self.position not in STAMP_POSITIONS:
            raise ValueError(f"timestamp position {self.position!r}; known: {', '.join(STAMP_POSITIONS)}")
        if self.format != "auto" and self.format not in STAMP_FORMATS:
            raise ValueError(f"timestamp format {self.format!r}; known: auto, {', '.join(STAMP_FORMATS)}")
        if self.scale < 1:
            raise ValueError(f"timestamp scale must be >= 1, got {self.scale}")

    def glyphs(self, format: str) -> Tensor:
        return render_stamps(tuple(stamp[STAMP_FORMATS[format]] for stamp in STAMPS), self.scale)

    def min_size(self) -> tuple[int, int]:
        """(height, width) of the smallest image this stamp fits."""
        format = "time" if self.format == "auto" else self.format
        height, width = self.glyphs(format).shape[1:]
        return height, width

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` naming the minimum image size if the stamp does not fit."""
        min_height, min_width = self.min_size()
        if height < min_height or width < min_width:
            raise ValueError(f"timestamp (format {self.format!r}, scale {self.scale}) needs images of at "
                             f"least {min_height}x{min_width} pixels (height x width), got {height}x{width}")

    def _fitting_glyphs(self, height: int, width: int) -> Tensor:
        self.check_size(height, width)
        if self.format != "auto":
            return self.glyphs(self.format)
        for format in STAMP_FORMATS:  # longest first; "time" fits by check_size
            glyphs = self.glyphs(format)
            if glyphs.shape[1] <= height and glyphs.shape[2] <= width:
                return glyphs
        raise AssertionError("unreachable")

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
        """[n, 3]: which stamp, top, left."""
        glyphs = self._fitting_glyphs(height, width)
        count, stamp_height, stamp_width = glyphs.shape
        which = torch.randint(0, count, (n,), generator=generator)
        slack_y, slack_x = height - stamp_height, width - stamp_width
        if self.position == "random":
            top = torch.randint(0, slack_y + 1, (n,), generator=generator)
            left = torch.randint(0, slack_x + 1, (n,), generator=generator)
        else:
            vertical, horizontal = self.position.split("_")
            margin_y, margin_x = min(1, slack_y), min(1, slack_x)
            top = torch.full((n,), margin_y if vertical == "top" else slack_y - margin_y)
            left = torch.full((n,), margin_x if horizontal == "left" else slack_x - margin_x)
        return torch.stack([which, top, left], dim=1)

    def apply(self, x: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
        n, _, height, width = x.shape
        device = x.device
        glyphs = _on_device(self._fitting_glyphs(height, width), device)
        _, stamp_height, stamp_width = glyphs.shape
        which, top, left = draws.to(device).unbind(1)
        rows = top.view(n, 1, 1) + torch.arange(stamp_height, device=device).view(1, stamp_height, 1)
        cols = left.view(n, 1, 1) + torch.arange(stamp_width, device=device).view(1, 1, stamp_width)
        region = torch.zeros(n, height, width, dtype=torch.bool, device=device)
        region[torch.arange(n, device=device).view(n, 1, 1), rows, cols] = glyphs[which]
        out = torch.where(region.unsqueeze(1), _color(self.color, x), x)
        return out, _changed(out, x)


#: Every artifact kind and the options ``make_injector`` passes on to it.
KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "patch": (Patch, ("size", "color")),
    "lsb": (Lsb, ("size", "seed")),
    "brightness": (Brightness, ("strength",)),
    "timestamp": (Timestamp, ("color", "position", "format", "scale")),
    "tint": (Tint, ("strength", "color")),
}


def make_injector(kind: str, **options: Any) -> Injector:
    """The injector named ``kind`` with its options; options that are ``None`` take the default.

    Colours are names from ``ALL_COLORS``. An unknown kind, an option the kind does not
    take or an unknown colour name raises ``ValueError`` saying what is allowed.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {', '.join(KINDS)}")
    cls, accepted = KINDS[kind]
    options = {name: value for name, value in options.items() if value is not None}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"artifact kind {kind!r} takes no option {unknown[0]!r}; "
                         f"its options: {', '.join(accepted)}")
    if "color" in options:
        name = options["color"]
        if name not in ALL_COLORS:
            raise ValueError(f"unknown colour {name!r}; known: {', '.join(ALL_COLORS)}")
        options["color"] = ALL_COLORS[name]
    return cls(**options)
