"""The device-resident loader against plain tensor slicing, on colored_digits' train split.

``iterate``: batches only (the loader's own cost: one permutation and a gather per field,
where slicing is a free view). ``epoch``: a full small_cnn training epoch fed by each;
the loader should cost within 10% of slicing there, where it matters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiasbench.data.dataset import Loader
from debiasbench.models.build import build_model

BATCH = 64


def slice_batches(split):
    for start in range(0, len(split), BATCH):
        yield split.x[start:start + BATCH], split.y[start:start + BATCH]


def loader_batches(loader):
    for batch in loader:
        yield batch.x, batch.y


def consume(batches) -> int:
    return sum(x.shape[0] for x, _ in batches)


@pytest.mark.benchmark(group="loader-iterate")
def test_iterate_device_loader_against_plain_slicing(compare, colored_digits):
    split = colored_digits.splits["train"]
    loader = Loader(split, BATCH, torch.Generator().manual_seed(0))
    result = compare(lambda: consume(slice_batches(split)), {"device_loader": lambda: consume(loader_batches(loader))},
                     baseline_name="baseline_plain_slicing", clock="cpu")
    assert set(result.results.values()) == {len(split)}


def train_epoch(batches, model, optimizer) -> None:
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def model_and_optimizer():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


@pytest.mark.benchmark(group="loader-epoch")
def test_epoch_device_loader_against_plain_slicing(compare, colored_digits):
    """Each member trains its own model (same seed), so both epochs do the same work."""
    split = colored_digits.splits["train"]
    loader = Loader(split, BATCH, torch.Generator().manual_seed(0))
    sliced, loaded = model_and_optimizer(), model_and_optimizer()
    compare(lambda: train_epoch(slice_batches(split), *sliced),
            {"device_loader": lambda: train_epoch(loader_batches(loader), *loaded)},
            baseline_name="baseline_plain_slicing", clock="cpu")
