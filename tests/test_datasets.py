"""The built-in datasets hold the bias they claim, exactly and reproducibly."""

from __future__ import annotations

import pytest
import torch

from debiasbench.core.hparams import resolve
from debiasbench.core.registry import DATASETS

from debiasbench.testing import TINY_SYNTHETIC


def make(name: str, **params):
    cls = DATASETS.get(name)
    return cls(**resolve(cls.params, params, "dataset_params."))


@pytest.mark.parametrize("ratio", [0.95, 0.98, 0.99, 0.995])
def test_colored_digits_train_colour_agrees_with_digit_at_bias_ratio(ratio):
    train = make("colored_digits", bias_ratio=ratio).splits["train"]
    measured = (train.bias == train.y).float().mean().item()
    assert abs(measured - ratio) < 0.01
    assert torch.equal(train.conflicting, train.bias != train.y)


def test_colored_digits_colour_is_the_stroke_colour_of_the_bias_attribute():
    from debiasbench.datasets.colored_digits import PALETTE

    train = make("colored_digits").splits["train"]
    strokes = train.x.amax(dim=(2, 3))  # brightest pixel per channel = colour * ink
    cosine = torch.nn.functional.cosine_similarity(strokes, PALETTE[train.bias], dim=1)
    assert cosine.min() > 0.99


def test_colored_digits_test_views_random_aligned_and_colourless():
    data = make("colored_digits")
    test = data.splits["test"]
    assert (test.bias == test.y).float().mean() < 0.25  # uniform colour: ~10% aligned
    biased = data.views["test_biased"]
    assert torch.equal(biased.bias, biased.y) and torch.equal(biased.y, test.y)
    clean = data.views["test_clean"]
    assert torch.allclose(clean.x[:, 0], clean.x[:, 1]) and torch.allclose(clean.x[:, 1], clean.x[:, 2])
    assert not clean.conflicting.any()


def test_colored_digits_splits_are_disjoint_and_cover_all_digits():
    data = make("colored_digits")
    sizes = [len(data.splits[s]) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797
    for split in data.splits.values():
        assert set(split.y.tolist()) == set(range(10))


@pytest.mark.parametrize("name,params", [("colored_digits", {}), ("synthetic_artifacts", TINY_SYNTHETIC)])
def test_dataset_is_identical_for_the_same_seed_and_differs_for_another(name, params):
    a, b = make(name, **params), make(name, **params)
    c = make(name, **params, seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].x, b.splits[split].x)
        assert torch.equal(a.splits[split].bias, b.splits[split].bias)
    assert not torch.equal(a.splits["train"].bias, c.splits["train"].bias)


def test_synthetic_masks_cover_exactly_the_inserted_artifact():
    data = make("synthetic_artifacts", **TINY_SYNTHETIC)
    clean, biased = data.views["test_clean"], data.views["test_biased"]
    changed = (biased.x != clean.x).any(dim=1, keepdim=True)
    assert torch.equal(changed, biased.mask)
    assert biased.mask.flatten(1).sum(1).eq(3 * 3).all()  # a full 3x3 patch on every image
    assert not clean.mask.any()
    natural = data.splits["test"]
    natural_changed = (natural.x != clean.x).any(dim=1, keepdim=True)
    assert torch.equal(natural_changed, natural.mask)
    assert torch.equal(natural.mask.flatten(1).any(1), natural.artifact)


def test_synthetic_artifact_only_in_attacked_class_with_probability_p():
    data = make("synthetic_artifacts", n_train=4000, image_size=16, attacked_class=1, p=0.3)
    train = data.splits["train"]
    assert not train.artifact[train.y != 1].any()
    share = train.artifact[train.y == 1].float().mean().item()
    assert abs(share - 0.3) < 0.05  # ~1000 attacked samples: 3.5 standard errors
    assert torch.equal(train.conflicting, train.artifact != (train.y == 1))


def test_synthetic_artifact_direction_points_at_the_patch_colour():
    data = make("synthetic_artifacts", **TINY_SYNTHETIC)
    direction = data.artifact_direction
    assert direction.shape == (3, 16, 16)
    assert torch.isclose(direction.norm(), torch.tensor(1.0))
    # A red patch raises red and lowers green/blue on grey images.
    assert direction[0].sum() > 0 and direction[1].sum() < 0 and direction[2].sum() < 0


def test_synthetic_classes_are_learnable_shapes_not_noise():
    data = make("synthetic_artifacts", **TINY_SYNTHETIC)
    clean = data.views["test_clean"]
    means = torch.stack([clean.x[clean.y == k].mean(0) for k in range(data.num_classes)])
    assert (means[0] - means[1]).abs().max() > 0.05


@pytest.mark.parametrize("val_ratio", [0.5, 0.1])
def test_colored_digits_val_bias_ratio_changes_validation_only(val_ratio):
    default = make("colored_digits")
    data = make("colored_digits", val_bias_ratio=val_ratio)
    val = data.splits["val"]
    assert (val.bias == val.y).sum().item() == round(val_ratio * len(val))
    assert torch.equal(data.splits["train"].x, default.splits["train"].x)
    assert torch.equal(data.splits["train"].bias, default.splits["train"].bias)
    assert torch.equal(data.splits["test"].x, default.splits["test"].x)
    assert torch.equal(data.splits["test"].bias, default.splits["test"].bias)
