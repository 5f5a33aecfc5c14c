"""Controlled artifacts on a real-layout image dataset: exact masks, the share p, clean views."""

from __future__ import annotations

import pytest
import torch

import real_layouts
from debiasbench.data.artifacts import make_injector
from debiasbench.core.errors import ConfigError
from debiasbench.core.hparams import resolve
from debiasbench.data.injection import injected_splits
from debiasbench.core.registry import DATASETS


def make(**params):
    cls = DATASETS.get("image_folder")
    return cls(**resolve(cls.params, params, "dataset_params."))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(real_layouts.image_folder(tmp_path_factory.mktemp("folder"), per_class=12))


@pytest.mark.parametrize("artifact", ["patch", "lsb", "brightness", "tint", "timestamp"])
def test_masks_cover_exactly_the_changed_pixels_and_clean_views_have_no_artifact(root, artifact):
    data = make(root=root, image_size=32, artifact=artifact, p=0.7, attacked_class=1)
    assert data.provides == {"bias_labels", "artifact_labels", "artifact_masks"} and data.num_bias == 2
    for split in ("val", "test"):
        clean, biased, natural = data.views[f"{split}_clean"], data.views[f"{split}_biased"], data.splits[split]
        assert torch.equal((biased.x != clean.x).any(1, keepdim=True), biased.mask)
        assert biased.mask.flatten(1).any(1).all() and biased.artifact.all()
        assert torch.equal((natural.x != clean.x).any(1, keepdim=True), natural.mask)
        assert torch.equal(natural.mask.flatten(1).any(1), natural.artifact)
        assert not clean.artifact.any() and not clean.mask.any() and not clean.bias.any()
        assert torch.equal(clean.x * 255, torch.round(clean.x * 255))  # the cached 8-bit images
        assert not natural.artifact[natural.y != 1].any()
    train = data.splits["train"]
    assert torch.equal(train.bias, train.artifact.long())
    assert torch.equal(train.conflicting, train.artifact != (train.y == 1))


def test_clean_view_is_the_dataset_without_injection(root):
    injected = make(root=root, image_size=16, artifact="patch")
    plain = make(root=root, image_size=16)
    assert torch.equal(injected.views["test_clean"].x, plain.splits["test"].x)
    assert plain.views == {} and plain.provides == frozenset()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_share_of_attacked_samples_is_p(p):
    n = 4000
    y = torch.arange(n) % 2
    x = torch.rand(n, 3, 8, 8)
    natural, _, _ = injected_splits(x, y, 0, p, make_injector("patch", size=2), torch.Generator().manual_seed(0),
                                    views=False)
    share = natural.artifact[y == 0].float().mean().item()
    assert abs(share - p) < 4 * (p * (1 - p) / 2000) ** 0.5  # four standard errors
    assert not natural.artifact[y == 1].any()


def test_training_flips_move_masks_with_images(root):
    data = make(root=root, image_size=16, artifact="patch", p=1.0, hflip=True)
    train = data.splits["train"]
    batch = train.batch(torch.arange(len(train)))
    flipped = data.augment(batch, torch.Generator().manual_seed(0))
    moved = ~torch.isclose(flipped.x, batch.x).all(dim=(1, 2, 3))
    assert 0 < int(moved.sum()) < len(train)
    for i in moved.nonzero().flatten():
        assert torch.equal(flipped.x[i], batch.x[i].flip(2)) and torch.equal(flipped.mask[i], batch.mask[i].flip(2))
    assert make(root=root, image_size=16, hflip=False).augment(batch, torch.Generator()) is batch


@pytest.mark.parametrize("params,message", [
    ({"artifact": "patch", "attacked_class": 3}, "dataset_params.attacked_class: expected an integer in [0, 2]"),
    ({"artifact": "timestamp", "image_size": 16}, "dataset_params.image_size: timestamp"),
    ({"artifact": "brightness", "patch_size": 3}, "dataset_params.patch_size: only artifact patch takes it"),
    ({"artifact": "patch", "patch_size": 40}, "dataset_params.patch_size: expected at most image_size"),
])
def test_bad_artifact_params_are_config_errors(root, params, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make(root=root, **{"image_size": 32, **params})

