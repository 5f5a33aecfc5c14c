"""On a GPU: vanilla resnet18 at 224 px, batch 64, bf16, channels_last, fed by the harness's
loader, against a bare forward / backward loop on random tensors already on the GPU.

``baseline``: the bare loop (the model's own speed, nothing to load). ``harness``: the
same step over 512 cached uint8 images, resident on the device or streamed from the
file through pinned buffers. Target: the harness at least 90% of the bare loop's samples
per second (time ratio at most 1.11x) in both placements. Skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from debiasbench.data.dataset import Loader, Split
from debiasbench.data.image_cache import read_store
from debiasbench.models.build import build_model
from debiasbench.data.pixels import CachedPixels

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

N, SIZE, BATCH = 512, 224, 64


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_bench") / "images.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 255, (N, 3, SIZE, SIZE), dtype=np.uint8))
    return path


def make_step():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(x, y) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def harness_epoch(cache_file, placement: str):
    """An epoch of training steps over the cache through the harness's loader, synchronised."""
    store = read_store(cache_file)
    store.place(torch.device("cuda"), placement)
    labels = torch.arange(N) % 10
    split = Split(pixels=CachedPixels(store, torch.arange(N)), y=labels, bias=labels,
                  artifact=labels.bool(), conflicting=labels.bool()).to("cuda")
    split.channels_last = True
    loader = Loader(split, BATCH, torch.Generator(device="cuda").manual_seed(0), drop_last=True)
    step = make_step()

    def epoch() -> None:
        for batch in loader:
            step(batch.x, batch.y)
        torch.cuda.synchronize()

    return epoch


@pytest.mark.benchmark(group="gpu-resnet18-224")
def test_gpu_epoch_harness_loader_against_a_bare_loop(compare, cache_file):
    """Each member trains its own resnet18 (same seed); every epoch ends synchronised."""
    step = make_step()
    x = torch.rand(BATCH, 3, SIZE, SIZE, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), device="cuda")

    def bare_epoch() -> None:
        for _ in range(N // BATCH):
            step(x, y)
        torch.cuda.synchronize()

    compare(bare_epoch, {f"harness_loader_{placement}": harness_epoch(cache_file, placement)
                         for placement in ("device", "stream")},
            baseline_name="baseline_bare_loop_on_random_tensors")
