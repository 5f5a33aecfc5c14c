"""The image cache lives in the user's cache folder, keyed by the dataset folder's resolved
path: a dataset folder is never written to, so other tools (torchvision's ImageFolder)
read it as before."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from debiasbench.cli import app
from debiasbench.data.image_cache import dataset_cache_dir

FAST = ["--set", "dataset_params.image_size=16", "--set", "epochs=1", "--set", "device=cpu",
        "--set", "log_model=false", "--set", "batch_size=8", "--no-progress"]


def image_folder(root, per_class: int = 6):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_run_writes_nothing_into_the_dataset_folder_even_read_only(tmp_path, tracking_uri, monkeypatch):
    cache = tmp_path / "user-cache"
    monkeypatch.setenv("DEBIASBENCH_CACHE", str(cache))
    root = image_folder(tmp_path / "pets")
    before = tree(root)
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = CliRunner().invoke(app, ["run", "-d", "image_folder", "--set", f"dataset_params.root={root}",
                                          "--tracking-uri", tracking_uri, *FAST])
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(stat.S_IRWXU)
    assert result.exit_code == 0, result.output
    assert tree(root) == before
    assert list(dataset_cache_dir(root).glob("images-*.npy"))
    assert dataset_cache_dir(root).parent.parent == cache


def test_torchvision_reads_the_dataset_folder_after_a_run(tmp_path, tracking_uri):
    torchvision = pytest.importorskip("torchvision")
    root = image_folder(tmp_path / "pets")
    result = CliRunner().invoke(app, ["run", "-d", "image_folder", "--set", f"dataset_params.root={root}",
                                      "--tracking-uri", tracking_uri, *FAST])
    assert result.exit_code == 0, result.output
    folder = torchvision.datasets.ImageFolder(str(root))
    assert folder.classes == ["cat", "dog"] and len(folder) == 12


def test_the_default_is_the_user_cache_folder_one_per_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DEBIASBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first, second = dataset_cache_dir(tmp_path / "a" / "data"), dataset_cache_dir(tmp_path / "b" / "data")
    assert first.parent == tmp_path / "xdg" / "debiasbench" / "images"
    assert first != second and first.name.startswith("data-")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dataset_cache_dir(tmp_path / "a" / "data").parent == Path.home() / ".cache" / "debiasbench" / "images"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a" / "data")
    assert dataset_cache_dir(link) == dataset_cache_dir(tmp_path / "a" / "data")  # the resolved path
