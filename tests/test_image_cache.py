"""The image cache decodes each file once, writes atomically and never serves a stale array."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from debiasbench.data import image_cache
from debiasbench.data.image_cache import ImageReadError, cache_key, load_images


def write(folder, n=6, size=(30, 20)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    paths = write(tmp_path / "images")
    first = np.array(load_images(paths, 16, tmp_path / "cache"))
    assert first.shape == (6, 3, 16, 16) and first.dtype == np.uint8

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image on a cache hit")

    monkeypatch.setattr(Image, "open", refuse)
    second = load_images(paths, 16, tmp_path / "cache")
    assert isinstance(second, np.memmap)
    assert np.array_equal(second, first)


def test_a_failure_while_writing_leaves_no_cache_file(tmp_path, monkeypatch):
    paths = write(tmp_path / "images")
    real_decode = image_cache.decode
    calls = []

    def dies_on_the_fourth(path, size):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a killed run
        return real_decode(path, size)

    monkeypatch.setattr(image_cache, "decode", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        load_images(paths, 16, tmp_path / "cache", workers=1)
    assert not (tmp_path / "cache").exists()  # no temporary, and not the folder the write made
    monkeypatch.setattr(image_cache, "decode", real_decode)
    assert load_images(paths, 16, tmp_path / "cache").shape[0] == 6
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".crc", ".npy"]


def test_key_changes_with_image_size_files_and_their_contents(tmp_path):
    paths = write(tmp_path / "images")
    key = cache_key(paths, 16)
    assert cache_key(paths, 16) == key
    assert cache_key(paths, 32) != key
    assert cache_key(paths[:-1], 16) != key
    assert cache_key(list(reversed(paths)), 16) != key
    Image.new("RGB", (31, 20), (1, 2, 3)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    assert cache_key(paths, 16) != key


def test_changed_file_is_decoded_again(tmp_path):
    paths = write(tmp_path / "images", n=2)
    before = np.array(load_images(paths, 8, tmp_path / "cache"))
    Image.new("RGB", (8, 8), (255, 0, 0)).save(paths[0])
    os.utime(paths[0], ns=(10**9, 10**9))
    after = load_images(paths, 8, tmp_path / "cache")
    assert not np.array_equal(before[0], after[0])
    assert (after[0][0] > 240).all() and (after[0][1:] < 15).all()  # red, up to JPEG loss
    assert np.array_equal(before[1], after[1])


def test_resize_shorter_side_then_centre_crop(tmp_path):
    # 40x20: left quarter red, middle half green, right quarter blue; the centre crop of the
    # 20x10 resize is the green middle only.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10, 0] = 255
    pixels[:, 10:30, 1] = 255
    pixels[:, 30:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_images([tmp_path / "wide.png"], 10, tmp_path / "cache")[0]
    assert image.shape == (3, 10, 10)
    inner = image[:, :, 1:-1]  # the outer columns blend with the neighbours when resized
    assert (inner[1] == 255).all() and (inner[0] == 0).all() and (inner[2] == 0).all()


def test_corrupt_or_missing_image_names_the_file(tmp_path):
    paths = write(tmp_path / "images", n=3)
    paths[1].write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"cannot read image '.*1\.png'"):
        load_images(paths, 8, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # no temporary, and not the folder the write made
    with pytest.raises(ImageReadError, match="missing.jpg"):
        load_images([tmp_path / "missing.jpg"], 8, tmp_path / "cache")
