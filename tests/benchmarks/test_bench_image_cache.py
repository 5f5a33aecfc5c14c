"""Images per second of one epoch's images: the cached path against decoding every epoch.

200 JPEGs of 64x64 pixels, as float32 batches in [0, 1]. ``baseline``: decode and resize
every JPEG again, as a per-epoch file loader does; ``cached``: read the epoch's batches
from the cache written on the first run (streamed, as a run whose images do not fit its
memory budget reads them) and convert them to floats. The summary prints cached /
baseline; its inverse is the speed-up.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debiasbench.data.dataset import Split
from debiasbench.data.image_cache import decode, open_images
from debiasbench.data.pixels import CachedPixels

N, SIZE = 200, 64


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory, random_jpegs):
    return random_jpegs(tmp_path_factory.mktemp("jpegs"), N, SIZE)


@pytest.mark.benchmark(group="image-cache")
def test_epoch_images_cached_against_decoding_every_epoch(compare, jpegs, tmp_path):
    def decode_epoch():
        return torch.from_numpy(np.stack([decode(p, SIZE) for p in jpegs])).float().div_(255)

    open_images(jpegs, SIZE, tmp_path)  # the first run writes the cache

    def cached_epoch():
        store = open_images(jpegs, SIZE, tmp_path)
        labels = torch.zeros(N, dtype=torch.long)
        split = Split(pixels=CachedPixels(store, torch.arange(N)), y=labels, bias=labels,
                      artifact=labels.bool(), conflicting=labels.bool())
        return torch.cat([batch.x for batch in split.batches(64)])

    # by the wall clock (the default): both members read files, and waiting for them counts
    result = compare(decode_epoch, {"cached": cached_epoch}, baseline_name="baseline_decode_every_epoch")
    for name, images in result.results.items():
        assert images.shape == (N, 3, SIZE, SIZE), name
