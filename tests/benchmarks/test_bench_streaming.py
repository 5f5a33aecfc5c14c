"""One training epoch over the uint8 image cache: the harness's loader against PyTorch's.

512 images of 64x64 pixels in an image cache; small_cnn, batch 64, Adam, the same model
and step in every member (on the GPU when there is one, else the CPU). ``baseline``: a
``torch.utils.data.DataLoader`` with 2 worker processes (pinned memory on CUDA) reading
rows of the same cache file, each batch converted to float on the device. ``streamed``:
``debiasbench.data.dataset.Loader`` reading rows from the file in background threads;
``resident``: the same loader with the uint8 images on the device. Target: streamed
at most 1.0x the baseline; the resident / streamed ratio is what keeping the images on
the device buys. On a CPU the epoch is the model's steps, whose time varies between
members of one session by more than the loaders differ; the ``stream-iterate`` group
times the loaders alone.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from debiasbench.data.dataset import Loader, Split
from debiasbench.data.image_cache import read_store, write_cache
from debiasbench.models.build import build_model
from debiasbench.data.pixels import CachedPixels

N, SIZE, BATCH = 512, 64, 64
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory, random_jpegs):
    folder = tmp_path_factory.mktemp("stream")
    target = folder / "cache.npy"
    write_cache(random_jpegs(folder, N, SIZE), SIZE, target, workers=2)
    return target


class CacheRows(torch.utils.data.Dataset):
    """Rows of the cache file as uint8 tensors (the file is mapped in each worker)."""

    def __init__(self, path):
        self.path, self.array = path, None

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        if self.array is None:
            self.array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self.array[i])), i % 10


def make_step():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def harness_split(cache_file, placement: str) -> Split:
    store = read_store(cache_file)
    store.place(DEVICE, placement)
    labels = torch.arange(N) % 10
    split = Split(pixels=CachedPixels(store, torch.arange(N)), y=labels, bias=labels,
                  artifact=labels.bool(), conflicting=labels.bool())
    return split.to(DEVICE)


def torch_batches(cache_file) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """Epochs of a ``DataLoader`` with 2 workers over the cache, as float batches on the device."""
    loader = torch.utils.data.DataLoader(CacheRows(cache_file), batch_size=BATCH, shuffle=True, num_workers=2,
                                         pin_memory=DEVICE.type == "cuda", persistent_workers=True)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in loader:
            yield x.to(DEVICE, non_blocking=True).float().div_(255), y.to(DEVICE, non_blocking=True)

    return batches


def harness_batches(cache_file, placement: str) -> Callable[[], Iterator[tuple[Tensor, Tensor]]]:
    """Epochs of the harness's ``Loader`` over the cache in ``placement``."""
    split = harness_split(cache_file, placement)
    assert split.pixels.streamed == (placement == "stream")
    loader = Loader(split, BATCH, torch.Generator(device=DEVICE).manual_seed(0))

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        for batch in loader:
            yield batch.x, batch.y

    return batches


def epoch_of(batches: Callable[[], Iterator[tuple[Tensor, Tensor]]],
             step: Callable[[Tensor, Tensor], None] | None = None) -> Callable[[], int]:
    """One epoch over ``batches`` (with a training ``step`` per batch, or none), synchronised."""

    def epoch() -> int:
        seen = 0
        for x, y in batches():
            if step is not None:
                step(x, y)
            seen += len(y)
        synchronize()
        return seen

    return epoch


@pytest.mark.benchmark(group="stream-epoch")
def test_epoch_harness_loader_against_a_torch_dataloader(compare, cache_file):
    """Each member trains its own model (same seed). An epoch takes about 2 s on the 2-core
    CPU, so the group runs at most 6 rounds. The groups of this file are timed by the wall
    clock: the DataLoader's workers are other processes."""
    result = compare(epoch_of(torch_batches(cache_file), make_step()),
                     {f"harness_loader_{placement}": epoch_of(harness_batches(cache_file, placement), make_step())
                      for placement in ("stream", "device")},
                     baseline_name="baseline_torch_dataloader_two_workers", rounds=6)
    assert set(result.results.values()) == {N}


@pytest.mark.benchmark(group="stream-iterate")
def test_iterate_harness_loader_against_a_torch_dataloader(compare, cache_file):
    """The loaders alone (batches on the device as float, no model): their own cost."""
    result = compare(epoch_of(torch_batches(cache_file)),
                     {f"harness_loader_{placement}": epoch_of(harness_batches(cache_file, placement))
                      for placement in ("stream", "device")},
                     baseline_name="baseline_torch_dataloader_two_workers")
    assert set(result.results.values()) == {N}
