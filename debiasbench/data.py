"""The dataset contract, and a loader that serves batches from tensors on the device.

Small benchmark datasets fit in device memory whole, so the loader never copies from
the host per batch: an epoch is a permutation (or a method's sampled indices) drawn on
the device, and each batch is one gather per field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol

import torch
from torch import Tensor

from debiasbench.hparams import HParam
from debiasbench.method import Batch

#: What a dataset may provide; methods name a subset of these in ``requires``.
PROVIDES = frozenset({"bias_labels", "artifact_labels", "artifact_masks"})


@dataclass
class Split:
    """A split or view as aligned tensors.

    ``bias`` is the bias attribute id per sample (-1 unknown); ``conflicting`` marks
    samples on which the shortcut would predict a wrong label (colour of another digit;
    an artifact on a class it does not point to, or none on the class it does).
    """

    x: Tensor
    y: Tensor
    bias: Tensor
    artifact: Tensor
    conflicting: Tensor
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"Split.{f.name} has {value.shape[0]} rows, x has {n}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "Split":
        return replace(self, **{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def groups(self, num_bias: int) -> Tensor:
        """Group id = class * num_bias + bias attribute; -1 where the bias is unknown."""
        return torch.where(self.bias >= 0, self.y * num_bias + self.bias, torch.full_like(self.y, -1))

    def batch(self, index: Tensor) -> Batch:
        """The samples at ``index`` (a long tensor on the split's device)."""
        return Batch(
            x=self.x.index_select(0, index),
            y=self.y.index_select(0, index),
            bias=self.bias.index_select(0, index),
            artifact=self.artifact.index_select(0, index),
            mask=None if self.mask is None else self.mask.index_select(0, index),
            index=index,
        )


def _to(value: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if value is None else value.to(device, non_blocking=True)


class BenchmarkDataset:
    """Base class of every dataset plugin.

    A subclass declares ``name``, ``description``, ``params`` (its ``dataset_params``),
    ``provides`` (a subset of ``PROVIDES``) and builds in ``__init__``:
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
    provides: ClassVar[frozenset[str]] = frozenset()
    train_defaults: ClassVar[dict[str, Any]] = {}

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

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Training-time augmentation of one batch on the device (default: none).

        Applied by the training loader only, after the gather, drawing from ``generator``;
        whatever moves pixels must move ``mask`` the same way.
        """
        return batch

    def evaluation_views(self) -> dict[str, Split]:
        """Every split or view evaluated, keyed by its metric prefix (val, test, test_clean...)."""
        return {"val": self.splits["val"], "test": self.splits["test"], **self.views}

    def to(self, device: torch.device | str) -> "BenchmarkDataset":
        self.splits = {k: v.to(device) for k, v in self.splits.items()}
        self.views = {k: v.to(device) for k, v in self.views.items()}
        return self


class Sampler(Protocol):
    """Draws the training indices of one epoch on the device (e.g. importance sampling)."""

    def indices(self, epoch: int, generator: torch.Generator) -> Tensor: ...

    def __len__(self) -> int:
        """Number of indices drawn per epoch."""
        ...


class DeviceLoader:
    """Iterates mini-batches of a device-resident split.

    Without a sampler every epoch is a fresh permutation drawn with ``generator`` (on the
    split's device, so shuffling never touches the host). ``augment`` (a dataset's
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
        device = self.split.x.device
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
        for start in range(0, stop, self.batch_size):
            batch = self.split.batch(order[start:start + self.batch_size])
            yield batch if self.augment is None else self.augment(batch, self.generator)
