"""The dataset contract, and the loader that serves batches of a split.

A ``Split`` holds its labels as small tensors and its pixels as a ``Pixels`` source
(``debiasbench.data.pixels``): in-memory tensors, or rows of a uint8 image cache that is
either resident on the device or streamed from the file. No split or view holds a float
copy of its images; every consumer (training, evaluation, CAVs, scoring, mining,
explanations) reads batches by index through ``Loader`` / ``Split.batches``. An epoch is
a permutation (or a method's sampled indices) drawn on the device; streamed batches are
read ahead in background threads into pinned buffers and copied without blocking.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol

import torch
from torch import Tensor

from debiasbench.core.hparams import HParam
from debiasbench.data.pixels import Pixels, TensorPixels, Unmasked

#: The one vocabulary of what a dataset may provide (``BenchmarkDataset.provides``) and a
#: method may require (``Method.requires``). Whether a method starts from a trained vanilla
#: model is not something a dataset provides: that is ``Method.starts_from_vanilla``.
CAPABILITIES = frozenset({"bias_labels", "artifact_labels", "artifact_masks"})
#: Streamed batches read ahead of the one being trained on, and the threads reading them.
PREFETCH_BATCHES, PREFETCH_THREADS = 4, 2
_META = ("y", "bias", "artifact", "conflicting")


@dataclass
class Batch:
    """One mini-batch, already on the training device.

    ``bias`` is the bias attribute id (-1 where unknown), ``artifact`` whether the sample
    carries the artifact, ``mask`` the artifact's pixels (or None when the dataset has no
    masks) and ``index`` each sample's position in its split, so methods can keep
    per-sample state (scores, moving averages) without a lookup table.
    """

    x: Tensor
    y: Tensor
    bias: Tensor
    artifact: Tensor
    mask: Tensor | None
    index: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


class Split:
    """A split or view: per-sample labels as aligned tensors, pixels from a ``Pixels`` source.

    ``bias`` is the bias attribute id per sample (-1 unknown); ``conflicting`` marks
    samples on which the shortcut would predict a wrong label (colour of another digit;
    an artifact on a class it does not point to, or none on the class it does).

    ``Split(x=..., y=..., ..., mask=...)`` wraps in-memory tensors (generated data,
    plugins); ``Split(pixels=..., y=..., ...)`` any other source. ``x`` and ``mask``
    materialise every sample's pixels: meant for tests and small data; code that must
    scale reads ``batches`` or ``batch``.
    """

    def __init__(self, x: Tensor | None = None, y: Tensor | None = None, bias: Tensor | None = None,
                 artifact: Tensor | None = None, conflicting: Tensor | None = None,
                 mask: Tensor | None = None, *, pixels: Pixels | None = None):
        if pixels is None:
            if x is None:
                raise ValueError("Split needs x (a tensor of images) or pixels (a Pixels source)")
            pixels = TensorPixels(x, mask)
        elif x is not None or mask is not None:
            raise ValueError("Split takes either x / mask or pixels, not both")
        if y is None or bias is None or artifact is None or conflicting is None:
            raise ValueError("Split needs y, bias, artifact and conflicting")
        self.pixels, self.y, self.bias, self.artifact, self.conflicting = pixels, y, bias, artifact, conflicting
        #: Batches in channels_last memory format (set by the runner on CUDA).
        self.channels_last = False
        n = len(pixels)
        for name in _META:
            value = getattr(self, name)
            if value.shape[0] != n:
                raise ValueError(f"Split.{name} has {value.shape[0]} rows, x has {n}")

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One image's shape [C, H, W]."""
        return self.pixels.sample_shape

    @property
    def has_mask(self) -> bool:
        return self.pixels.has_mask

    @property
    def device(self) -> torch.device:
        return self.y.device

    def to(self, device: torch.device | str) -> Split:
        moved = Split(pixels=self.pixels.to(device),
                      **{name: getattr(self, name).to(device, non_blocking=True) for name in _META})
        moved.channels_last = self.channels_last
        return moved

    def replace(self, *, masks: bool = True, **labels: Tensor) -> Split:
        """The same pixels with some per-sample labels (``y``, ``bias``, ``artifact``,
        ``conflicting``) replaced; ``masks=False`` drops the artifact masks."""
        unknown = set(labels) - set(_META)
        if unknown:
            raise TypeError(f"Split.replace: unknown field(s) {sorted(unknown)}; known: {', '.join(_META)}")
        pixels = self.pixels if masks or not self.has_mask else Unmasked(self.pixels)
        out = Split(pixels=pixels, **{name: labels.get(name, getattr(self, name)) for name in _META})
        out.channels_last = self.channels_last
        return out

    def subset(self, index: Tensor) -> Split:
        """The samples at ``index`` as a split of their own; pixels are not copied for
        cached sources (the view keeps row numbers into the same store)."""
        index = index.to(self.y.device)
        view = Split(pixels=self.pixels.subset(index), **{name: getattr(self, name)[index] for name in _META})
        view.channels_last = self.channels_last
        return view

    def groups(self, num_bias: int) -> Tensor:
        """Group id = class * num_bias + bias attribute; -1 where the bias is unknown."""
        return torch.where(self.bias >= 0, self.y * num_bias + self.bias, torch.full_like(self.y, -1))

    def batch(self, index: Tensor, fetched: Any = None) -> Batch:
        """The samples at ``index`` (a long tensor on the split's device) as a ``Batch``;
        ``fetched`` is the pixels' first stage when a loader read it ahead."""
        index = index.to(self.y.device)
        if fetched is None:
            fetched = self.pixels.fetch(index)
        x, mask = self.pixels.finish(fetched, index, self.y.device)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x=x, y=self.y.index_select(0, index), bias=self.bias.index_select(0, index),
                     artifact=self.artifact.index_select(0, index), mask=mask, index=index)

    def batches(self, batch_size: int | None, index: Tensor | None = None) -> Iterator[Batch]:
        """Batches of the samples at ``index`` (default: all) in order, read ahead
        (``batch_size`` None: ``eval_batch_for`` the image size)."""
        batch_size = eval_batch_for(batch_size, self.sample_shape)
        order = torch.arange(len(self), device=self.y.device) if index is None else index.to(self.y.device)
        return iter_batches(self, order, batch_size)

    @property
    def x(self) -> Tensor:
        """Every sample's pixels as one float tensor (tests and small data only)."""
        if isinstance(self.pixels, TensorPixels) and self.pixels.x.is_floating_point():
            return self.pixels.x
        return torch.cat([b.x for b in self.batches(256)]) if len(self) else torch.empty(0, *self.sample_shape)

    @property
    def mask(self) -> Tensor | None:
        """Every sample's artifact mask as one tensor, or None (tests and small data only)."""
        if not self.has_mask:
            return None
        if isinstance(self.pixels, TensorPixels):
            return self.pixels.mask
        return torch.cat([b.mask for b in self.batches(256) if b.mask is not None])


#: Default evaluation batch: this many samples of 32x32 pixels, fewer for larger images,
#: so that the first layer's activations stay bounded (512 images at 224 px in a 64-channel
#: layer are 6.6 GB of float32). See ``eval_batch_for``.
EVAL_PIXEL_BUDGET = 512 * 32 * 32
#: The same on the CPU, where large batches run slower per image (their activations leave
#: the caches): with one thread, 64 images of 32x32 pixels predicted 2.2-3.1x faster per image
#: than 512 and within 10% of the best size (small_cnn on a 2-core CPU; the table, and what
#: two threads did on a loaded machine, in docs/performance.md, "Evaluation batch on the CPU",
#: measured by tools/measure_eval_batch.py).
CPU_EVAL_PIXEL_BUDGET = 64 * 32 * 32


def eval_batch_for(requested: int | None, sample_shape: tuple[int, ...],
                   device: torch.device | str | None = None) -> int:
    """The evaluation batch size: ``requested`` if given, else 512 images of 32x32 pixels
    (64 on the CPU ``device``) and proportionally fewer for larger images (64 at 90x90,
    10 at 224x224 on a GPU; at least 1, on the CPU at least 4). The CPU's budget is
    checked against the per-image times by batch size in docs/performance.md ("Evaluation
    batch on the CPU"; ``tools/measure_eval_batch.py`` measures them again)."""
    if requested is not None:
        return requested
    pixels = max(math.prod(sample_shape[1:]), 1)
    if device is not None and torch.device(device).type == "cpu":
        return max(4, min(64, CPU_EVAL_PIXEL_BUDGET // pixels))
    return max(1, min(512, EVAL_PIXEL_BUDGET // pixels))


def input_batches(source: Tensor | Split, batch_size: int | None) -> Iterator[Tensor]:
    """Input tensors of ``source`` (a split, or a tensor of inputs) in order, in batches
    (``None``: ``eval_batch_for`` the image size)."""
    for x, _ in xy_batches(source, None, batch_size, labels=False):
        yield x


def xy_batches(source: Tensor | Split, y: Tensor | None, batch_size: int | None,
               labels: bool = True) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(inputs, labels) of ``source`` in order: a split's own labels, or ``y`` beside a
    tensor (without ``labels``, inputs only, paired with None)."""
    if isinstance(source, Split):
        for batch in source.batches(batch_size):
            yield batch.x, batch.y
        return
    if labels and (y is None or len(y) != len(source)):
        raise ValueError(f"x has {len(source)} samples, y has {None if y is None else len(y)}")
    batch_size = eval_batch_for(batch_size, tuple(source.shape[1:]))
    for start in range(0, source.shape[0], batch_size):
        yield source[start:start + batch_size], None if y is None else y[start:start + batch_size]


def iter_batches(split: Split, order: Tensor, batch_size: int, stop: int | None = None,
                 augment: Callable[[Batch], Batch] | None = None) -> Iterator[Batch]:
    """``split``'s batches at ``order[start:start + batch_size]`` up to ``stop``.

    Streamed pixels are read ``PREFETCH_BATCHES`` ahead by ``PREFETCH_THREADS`` threads
    (file reads and copies release the GIL), so the device does not wait for the disk;
    resident pixels are gathered on the device as they are needed.
    """
    stop = len(order) if stop is None else stop
    starts = range(0, stop, batch_size)
    if not split.pixels.streamed:
        for start in starts:
            batch = split.batch(order[start:start + batch_size])
            yield batch if augment is None else augment(batch)
        return
    order_host = order.cpu()  # one transfer per epoch, not per batch
    pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="debiasbench-prefetch")
    pending: deque[tuple[int, Future]] = deque()
    upcoming = iter(starts)
    try:
        def submit() -> None:
            start = next(upcoming, None)
            if start is not None:
                pending.append((start, pool.submit(split.pixels.fetch, order_host[start:start + batch_size])))

        for _ in range(PREFETCH_BATCHES):
            submit()
        while pending:
            start, future = pending.popleft()
            submit()
            batch = split.batch(order[start:start + batch_size], fetched=future.result())
            yield batch if augment is None else augment(batch)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class BenchmarkDataset:
    """Base class of every dataset plugin.

    A subclass declares ``name``, ``description``, ``params`` (its ``dataset_params``),
    ``provides`` (a subset of ``CAPABILITIES``) and builds in ``__init__``:
    ``splits`` with ``train``, ``val``, ``test`` and ``views`` holding the controlled test
    views ``test_clean`` (no artifact anywhere) and ``test_biased`` (artifact everywhere /
    bias aligned with the label), plus ``val_clean`` / ``val_biased`` likewise.
    ``num_bias`` is the number of bias attribute values (groups = classes x num_bias).
    ``artifact_direction`` is the input-space direction of the artifact [C, H, W] (unit
    length) where the dataset knows it, else None.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[dict[str, HParam]] = {}
    #: Per class; an instance may narrow or widen it for its params (``provides_for``).
    provides: frozenset[str] = frozenset()
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: Version of the data the class builds from its params: raised when the same params
    #: give other data (e.g. new random streams). A run records it (the run key
    #: ``dataset_version``, part of the run key where it is not 1), so runs on the old and
    #: the new data never share a run key or a leaderboard row.
    version: ClassVar[int] = 1

    num_classes: int
    num_bias: int
    splits: dict[str, Split]
    views: dict[str, Split]
    artifact_direction: Tensor | None = None
    #: The class the artifact points to (CAVs and artifact relevance use its samples).
    attacked_class: int | None = None

    def __init__(self, **params: Any):
        self.p = params

    @classmethod
    def provides_for(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """What an instance built with ``params`` provides (checked against a method's
        ``requires`` before the dataset is built); by default the class's ``provides``.
        Datasets whose params add labels (an injected artifact) say so here."""
        return cls.provides

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Refuse (``ConfigError``) a combination of resolved ``params`` that each declared
        bound lets through but that cannot be built: a data set larger than this machine's
        memory, a class index past the number of classes. Called when a config is resolved,
        so a sweep fails before its first job; by default nothing to check."""

    @classmethod
    def check_files(cls, params: Mapping[str, Any]) -> None:
        """Refuse (``UserError``, one line naming the file) where the files the dataset would
        be built from under the resolved ``params`` are missing or not laid out as expected:
        a cheap look (folders, tables, file names; no image decoded) that a sweep makes once
        per distinct dataset config before it writes anything, so a bad ``root`` refuses the
        whole sweep at once instead of failing its jobs one by one. Building the dataset checks
        the same again. By default nothing to check (data generated or fetched in memory)."""

    @classmethod
    def shortcut_in_one_class(cls, params: Mapping[str, Any]) -> bool:
        """True where the shortcut marks one class only (an artifact inserted into an attacked
        class), so that every bias-conflicting sample lies in that class. Methods that
        balance conflicting against aligned samples across classes (gradient alignment)
        assume the opposite: a shortcut every class has, as a colour per digit. Known from
        ``params`` alone, so a sweep can leave such pairs out before building anything."""
        return False

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Training-time augmentation of one batch on the device (default: none).

        Applied by the training loader only, after the gather, drawing from ``generator``;
        whatever moves pixels must move ``mask`` the same way.
        """
        return batch

    def evaluation_views(self) -> dict[str, Split]:
        """Every split or view evaluated, keyed by its metric prefix (val, test, test_clean...)."""
        return {"val": self.splits["val"], "test": self.splits["test"], **self.views}

    def to(self, device: torch.device | str) -> BenchmarkDataset:
        self.splits = {k: v.to(device) for k, v in self.splits.items()}
        self.views = {k: v.to(device) for k, v in self.views.items()}
        return self

    def place(self, device: torch.device | str, placement: str = "auto") -> str:
        """Move the dataset to ``device``, its images resident there or streamed
        (``debiasbench.data.pixels.PLACEMENTS``); returns the placement used. In-memory
        datasets are small and always resident."""
        self.to(device)
        return "device"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One image's shape [C, H, W] (that of the training split)."""
        return self.splits["train"].sample_shape


class Sampler(Protocol):
    """Draws the training indices of one epoch on the device (e.g. importance sampling)."""

    def indices(self, epoch: int, generator: torch.Generator) -> Tensor: ...

    def __len__(self) -> int:
        """Number of indices drawn per epoch."""
        ...


class Loader:
    """Iterates mini-batches of a split, resident or streamed.

    Without a sampler every epoch is a fresh permutation drawn with ``generator`` (on the
    generator's device, so shuffling never touches the host). ``augment`` (a dataset's
    ``augment``) transforms each batch on the device.
    """

    def __init__(self, split: Split, batch_size: int, generator: torch.Generator,
                 sampler: Sampler | None = None, shuffle: bool = True, drop_last: bool = False,
                 augment: Callable[[Batch, torch.Generator], Batch] | None = None):
        self.split = split
        self.augment = augment
        self.batch_size = batch_size
        self.generator = generator
        self.sampler = sampler
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def epoch_indices(self) -> Tensor:
        device = self.split.device
        if self.sampler is not None:
            return self.sampler.indices(self.epoch, self.generator).to(device)
        if self.shuffle:
            return torch.randperm(len(self.split), generator=self.generator, device=self.generator.device).to(device)
        return torch.arange(len(self.split), device=device)

    def __len__(self) -> int:
        n = len(self.split) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_indices()
        self.epoch += 1
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        augment = self.augment
        generator = self.generator
        return iter_batches(self.split, order, self.batch_size, stop,
                            None if augment is None else (lambda batch: augment(batch, generator)))

