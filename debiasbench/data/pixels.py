"""Where a split's pixels come from, gathered one batch at a time.

A split never holds its images as one float tensor: that is N x 3 x S x S x 4 bytes, and
for the real datasets (ISIC's 25k or CelebA's 203k images at 224 px) far more than any
host or GPU has. Instead a split holds a ``Pixels`` source and positions; the loader asks
it for one batch at a time in two stages:

1. ``fetch(index)`` gathers the batch's raw pixels: a gather on the device for resident
   data, or a read from the image cache file into a (pinned) host buffer for streamed
   data. It is thread-safe, so the loader runs it ahead in background threads.
2. ``finish(fetched, index, device)`` moves the raw pixels to the device (non-blocking),
   converts uint8 to float in [0, 1] there and paints an injected artifact (``Injection``)
   from the draws made once when the dataset was built: the same pixels for a sample in
   every epoch, run and placement, and no view ever copies image data.

``TensorPixels`` serves in-memory tensors (the bundled generated datasets and plugins that
build their images themselves); ``CachedPixels`` serves rows of an ``ImageStore`` (the
uint8 image cache of a real dataset), resident on the device or streamed from the file;
``InjectedPixels`` paints an artifact on top of either.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from debiasbench.data.artifacts import Injector

#: Data placements: ``device`` keeps the uint8 images on the training device, ``stream``
#: reads each batch from the cache file, ``auto`` chooses by size (``choose_placement``).
PLACEMENTS = ("auto", "device", "stream")
#: Share of the GPU's free memory that resident images may take under ``auto``.
GPU_RESIDENT_SHARE = 0.25
#: On the CPU, ``auto`` keeps images in process memory only up to this size: beyond it the
#: page cache serves them as well, without the process's memory growing with the dataset.
CPU_RESIDENT_BYTES = 512 * 2**20


class Pixels:
    """The two-stage batch gather every source implements (see the module docstring)."""

    #: True when ``fetch`` reads from a file (the loader then prefetches in threads).
    streamed: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def has_mask(self) -> bool:
        raise NotImplementedError

    def fetch(self, index: Tensor) -> Any:
        raise NotImplementedError

    def finish(self, fetched: Any, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def subset(self, index: Tensor) -> Pixels:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Pixels:
        raise NotImplementedError


class TensorPixels(Pixels):
    """Images (float, or uint8 read as k / 255) and optional masks held as tensors."""

    def __init__(self, x: Tensor, mask: Tensor | None = None):
        self.x, self.mask = x, mask

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def has_mask(self) -> bool:
        return self.mask is not None

    def fetch(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        index = index.to(self.x.device)
        return self.x.index_select(0, index), None if self.mask is None else self.mask.index_select(0, index)

    def finish(self, fetched: tuple[Tensor, Tensor | None], index: Tensor,
               device: torch.device) -> tuple[Tensor, Tensor | None]:
        x, mask = fetched
        return to_float(x.to(device, non_blocking=True)), None if mask is None else mask.to(device)

    def subset(self, index: Tensor) -> TensorPixels:
        index = index.to(self.x.device)
        return TensorPixels(self.x[index], None if self.mask is None else self.mask[index])

    def to(self, device: torch.device | str) -> TensorPixels:
        return TensorPixels(self.x.to(device), None if self.mask is None else self.mask.to(device))


def to_float(x: Tensor) -> Tensor:
    """uint8 pixels as float32 k / 255 (exactly what decoding to float gives); floats as they are."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


@dataclass(frozen=True)
class Injection:
    """An artifact painted per batch: ``draws`` [N, k] are each sample's random choices
    (made once, at build time); ``mode`` says which samples show it: ``natural`` those
    flagged in ``shown`` [N], ``all`` every sample (a biased view), ``none`` no sample (a
    clean view: masks are all False)."""

    inject: Injector
    draws: Tensor
    shown: Tensor
    mode: Literal["natural", "all", "none"] = "natural"

    def subset(self, index: Tensor) -> Injection:
        index = index.to(self.draws.device)
        return replace(self, draws=self.draws[index], shown=self.shown[index])

    def to(self, device: torch.device | str) -> Injection:
        return replace(self, draws=self.draws.to(device), shown=self.shown.to(device))

    def paint(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """(pixels with the artifact where shown, its mask) for the samples at ``index``."""
        if self.mode == "none":
            return x, torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.bool, device=x.device)
        index = index.to(self.draws.device)
        painted, mask = self.inject.apply(x, self.draws.index_select(0, index).to(x.device))
        if self.mode == "all":
            return painted, mask
        shown = self.shown.index_select(0, index).to(x.device).view(-1, 1, 1, 1)
        return torch.where(shown, painted, x), mask & shown


class ImageStore:
    """A uint8 image cache file [N, C, S, S] (``.npy``), read by row, never mapped whole.

    ``place`` decides where batches come from: the file (``stream``: each row is read with
    ``os.preadv`` into the batch's buffer, so the process holds only the batches in flight
    while the OS page cache keeps what fits) or one uint8 tensor on the device
    (``device``: loaded once, in chunks). Reading rows instead of mapping the file keeps a
    process's resident memory independent of the dataset's size.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], offset: int):
        self.path, self.shape, self.offset = Path(path), tuple(shape), offset
        self.row_bytes = int(np.prod(shape[1:]))
        self.resident: Tensor | None = None
        self.pin = False
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "resident": None, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def fileno(self) -> int:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return self._fd

    def read(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of the file into ``out`` [len(rows), C, S, S] uint8 (thread-safe)."""
        fd, size = self.fileno(), self.row_bytes
        flat = out.reshape(len(rows), size)
        for i, row in enumerate(rows.tolist()):
            got = os.preadv(fd, [flat[i]], self.offset + row * size)
            if got != size:
                raise OSError(f"image cache '{self.path}' is shorter than its header says (row {row})")
        return out

    def gather(self, rows: Tensor) -> Tensor:
        """uint8 [B, C, S, S] of ``rows``: a device gather when resident, else a file read
        into a fresh (pinned, for a CUDA device) host buffer."""
        if self.resident is not None:
            return self.resident.index_select(0, rows.to(self.resident.device))
        rows = rows.cpu()
        out = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
        self.read(rows.numpy(), out.numpy())
        return out

    def place(self, device: torch.device, placement: str) -> str:
        """Make batches come from ``device`` memory or the file; returns the placement chosen."""
        chosen = choose_placement(self.nbytes, device) if placement == "auto" else placement
        self.pin = device.type == "cuda"
        if chosen == "stream":
            self.resident = None
            return chosen
        if self.resident is not None and self.resident.device == device:
            return chosen
        resident = torch.empty(self.shape, dtype=torch.uint8, device=device)
        chunk = max(1, (64 * 2**20) // max(self.row_bytes, 1))
        for start in range(0, len(self), chunk):
            rows = np.arange(start, min(start + chunk, len(self)))
            buffer = torch.empty((len(rows), *self.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
            resident[start:start + len(rows)].copy_(torch.from_numpy(self.read(rows, buffer.numpy())))
        self.resident = resident
        return chosen


def choose_placement(nbytes: int, device: torch.device) -> str:
    """``device`` when the uint8 images take at most ``GPU_RESIDENT_SHARE`` of the GPU's free
    memory (CUDA) or ``CPU_RESIDENT_BYTES`` (CPU), else ``stream``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if nbytes <= GPU_RESIDENT_SHARE * free else "stream"
    return "device" if nbytes <= CPU_RESIDENT_BYTES else "stream"


class CachedPixels(Pixels):
    """Rows ``rows`` of an ``ImageStore``."""

    def __init__(self, store: ImageStore, rows: Tensor):
        self.store, self.rows = store, rows.cpu()
        self._device_rows: dict[torch.device, Tensor] = {}

    @property
    def streamed(self) -> bool:  # type: ignore[override]
        return self.store.resident is None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.store.shape[1:]

    @property
    def has_mask(self) -> bool:
        return False

    def fetch(self, index: Tensor) -> Tensor:
        resident = self.store.resident
        if resident is None:
            return self.store.gather(self.rows.index_select(0, index.cpu()))
        rows = self._device_rows.get(resident.device)
        if rows is None:
            rows = self._device_rows.setdefault(resident.device, self.rows.to(resident.device))
        return self.store.gather(rows.index_select(0, index.to(resident.device)))

    def finish(self, fetched: Tensor, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor | None]:
        return to_float(fetched.to(device, non_blocking=True)), None

    def subset(self, index: Tensor) -> CachedPixels:
        return CachedPixels(self.store, self.rows[index.cpu()])

    def to(self, device: torch.device | str) -> CachedPixels:
        return self


class _OnTopOf(Pixels):
    """A source that changes what ``base`` serves in ``finish``: reading, size and shape
    are ``base``'s."""

    base: Pixels

    @property
    def streamed(self) -> bool:  # type: ignore[override]
        return self.base.streamed

    def __len__(self) -> int:
        return len(self.base)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.base.sample_shape

    def fetch(self, index: Tensor) -> Any:
        return self.base.fetch(index)


class InjectedPixels(_OnTopOf):
    """``base``'s pixels with the artifact of ``injection`` painted per batch; masks come
    from the injection (``base`` must have none of its own)."""

    def __init__(self, base: Pixels, injection: Injection):
        if base.has_mask:
            raise ValueError("InjectedPixels: the base pixels already carry masks")
        self.base, self.injection = base, injection

    @property
    def has_mask(self) -> bool:
        return True

    def finish(self, fetched: Any, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor | None]:
        x, _ = self.base.finish(fetched, index, device)
        return self.injection.paint(x, index)

    def subset(self, index: Tensor) -> InjectedPixels:
        return InjectedPixels(self.base.subset(index), self.injection.subset(index))

    def to(self, device: torch.device | str) -> InjectedPixels:
        return InjectedPixels(self.base.to(device), self.injection.to(device))


class Unmasked(_OnTopOf):
    """``base``'s pixels without their masks (what a dataset without artifact masks serves)."""

    def __init__(self, base: Pixels):
        self.base = base

    @property
    def has_mask(self) -> bool:
        return False

    def finish(self, fetched: Any, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor | None]:
        return self.base.finish(fetched, index, device)[0], None

    def subset(self, index: Tensor) -> Unmasked:
        return Unmasked(self.base.subset(index))

    def to(self, device: torch.device | str) -> Unmasked:
        return Unmasked(self.base.to(device))
