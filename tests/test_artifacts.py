"""Artifact injectors change exactly the pixels they report, reproducibly, for every kind."""

from __future__ import annotations

import pytest
import torch

from debiasbench.data.artifacts import ALL_COLORS, KINDS, Lsb, Timestamp, make_injector, quantize
from debiasbench.core.errors import ConfigError
from debiasbench.core.hparams import resolve
from debiasbench.core.registry import DATASETS

POSITIONED = ("patch", "timestamp")  # kinds drawn at a random position per image by default


def images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random images on the 8-bit grid, values strictly inside (0, 1) mostly."""
    return quantize(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)))


def inject(kind: str, x: torch.Tensor, generator_seed: int = 0, **options):
    return make_injector(kind, **options)(x, torch.Generator().manual_seed(generator_seed))


def synthetic(**params):
    cls = DATASETS.get("synthetic_artifacts")
    return cls(**resolve(cls.params, params, "dataset_params."))


SMALL = {"n_train": 40, "n_val": 20, "n_test": 20, "image_size": 32}


@pytest.mark.parametrize("kind", list(KINDS))
def test_mask_is_exactly_the_changed_pixels(kind):
    x = images()
    out, mask = inject(kind, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert mask.shape == (8, 1, 32, 32) and mask.dtype == torch.bool
    assert torch.equal(mask, (out != x).any(dim=1, keepdim=True))
    assert mask.flatten(1).any(1).all()  # every image carries the artifact


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_generator_seed_gives_the_same_output_and_values_stay_in_unit_range(kind):
    x = images()
    out_a, mask_a = inject(kind, x, generator_seed=3)
    out_b, mask_b = inject(kind, x, generator_seed=3)
    assert torch.equal(out_a, out_b) and torch.equal(mask_a, mask_b)
    assert out_a.min() >= 0 and out_a.max() <= 1
    extremes = torch.stack([torch.zeros(3, 32, 32), torch.ones(3, 32, 32)])
    out, _ = inject(kind, extremes)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kind,options", [("patch", {}), ("timestamp", {}), ("lsb", {"size": 6})])
def test_positioned_artifacts_land_at_different_places_on_different_images(kind, options):
    x = torch.zeros(16, 3, 32, 32)
    if kind == "lsb":
        x = torch.full_like(x, 128 / 255)  # on the grid and even: only the pattern's 1-bits change
    _, mask = inject(kind, x, **options)
    rows = mask.squeeze(1).any(2).float().argmax(1)  # first marked row per image
    cols = mask.squeeze(1).any(1).float().argmax(1)  # first marked column per image
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 4


def test_different_generator_seeds_give_different_positions():
    x = images()
    for kind in POSITIONED:
        assert not torch.equal(inject(kind, x, generator_seed=0)[1], inject(kind, x, generator_seed=1)[1])


def test_lsb_is_invisible_yet_the_same_pattern_on_every_image():
    x = images(n=6)
    out, mask = inject("lsb", x)
    assert (out - x).abs().max() <= 1 / 255 + 1e-7
    q = torch.round(out * 255).long()
    assert torch.equal(q.float() / 255, out)  # still on the 8-bit grid
    bits = q % 2
    assert (bits == bits[:1]).all()  # identical LSB pattern across images
    assert torch.equal(bits[0], Lsb().pattern(3, 32, 32))
    assert 0.3 < bits.float().mean() < 0.7  # pseudo-random, not constant
    assert torch.equal(q // 2, torch.round(x * 255).long() // 2)  # higher bits untouched
    assert 0.5 < mask.float().mean() < 1.0  # ~1 - 1/8 of pixels need at least one bit flipped


def test_lsb_pattern_comes_from_its_seed_not_from_the_generator():
    x = images(n=2)
    a, _ = inject("lsb", x, generator_seed=0)
    b, _ = inject("lsb", x, generator_seed=1)
    c, _ = inject("lsb", x, seed=5)  # the injector's pattern seed
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_lsb_region_writes_the_fixed_pattern_inside_a_square_only():
    x = images(n=8)
    out, mask = inject("lsb", x, size=6)
    bits = torch.round(out * 255).long() % 2
    pattern = Lsb(size=6).pattern(3, 6, 6)
    region_size = mask.flatten(1).sum(1)
    assert (region_size <= 36).all() and (region_size > 0).all()
    outside = torch.ones(8, 32, 32, dtype=torch.bool)
    for i in range(8):  # checking only: some 6x6 placement covering the changes holds the pattern
        rows, cols = mask[i, 0].any(1).nonzero().flatten(), mask[i, 0].any(0).nonzero().flatten()
        placements = [(t, c) for t in range(max(0, rows.max().item() - 5), min(rows.min().item(), 26) + 1)
                      for c in range(max(0, cols.max().item() - 5), min(cols.min().item(), 26) + 1)
                      if torch.equal(bits[i, :, t:t + 6, c:c + 6], pattern)]
        assert placements
        t, c = placements[0]
        outside[i, t:t + 6, c:c + 6] = False
    assert not mask.squeeze(1)[outside].any()


def test_lsb_on_off_grid_inputs_reports_the_quantisation_changes_too():
    x = torch.full((1, 3, 8, 8), 0.3)  # 76.5 / 255: not on the 8-bit grid
    out, mask = inject("lsb", x)
    assert mask.all()
    assert (out - x).abs().max() <= 1.5 / 255 + 1e-7


def test_brightness_raises_the_mean_towards_white():
    x = images()
    out, mask = inject("brightness", x)
    assert out.mean() > x.mean() + 0.1
    assert (out >= x).all()
    assert torch.allclose(out, x + 0.3 * (1 - x))
    white = torch.ones(1, 3, 4, 4)
    assert not inject("brightness", white)[1].any()  # white pixels cannot change
    assert torch.allclose(inject("brightness", x, strength=0.5)[0], x + 0.5 * (1 - x))


def test_tint_blends_towards_the_colour():
    x = images()
    out, _ = inject("tint", x, color="blue", strength=0.4)
    assert torch.allclose(out, x * 0.6 + 0.4 * torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1))
    assert out[:, 2].mean() > x[:, 2].mean() and out[:, 0].mean() < x[:, 0].mean()
    default, _ = inject("tint", x)
    assert torch.allclose(default, x * 0.75 + 0.25 * torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))


@pytest.mark.parametrize("color", ["white", "yellow"])
def test_timestamp_renders_small_glyphs_in_the_stamp_colour(color):
    x = torch.zeros(8, 3, 32, 32)
    out, mask = inject("timestamp", x, color=color)
    per_image = mask.flatten(1).sum(1)
    assert (per_image > 20).all()  # readable glyphs, not a dot
    assert (per_image < 0.15 * 32 * 32).all()  # a small stamp, not a fill
    stamp = torch.tensor(ALL_COLORS[color]).view(3, 1)
    inked = out.permute(1, 0, 2, 3)[:, mask.squeeze(1)]  # [3, inked pixels]
    assert torch.equal(inked, stamp.expand_as(inked))
    assert not out.permute(1, 0, 2, 3)[:, ~mask.squeeze(1)].any()  # nothing else drawn


def test_timestamp_picks_among_several_stamps_and_fits_longer_formats_in_wider_images():
    stamps = Timestamp().glyphs("time")
    assert len({tuple(g.flatten().tolist()) for g in stamps}) == len(stamps) > 1
    x = torch.zeros(64, 3, 32, 32)
    _, mask = inject("timestamp", x, position="top_left")
    shapes = {tuple(m.flatten().tolist()) for m in mask}
    assert len(shapes) > 1  # same corner, different texts
    wide, wide_mask = inject("timestamp", torch.zeros(2, 3, 16, 100))
    assert wide_mask.any(1).any(1).sum(1).min() > 60  # the full date-time, ~96 pixels wide


@pytest.mark.parametrize("position", ["top_left", "top_right", "bottom_left", "bottom_right"])
def test_timestamp_corner_option_places_the_stamp_in_that_corner(position):
    _, mask = inject("timestamp", torch.zeros(4, 3, 40, 40), position=position)
    m = mask.squeeze(1)
    upper, left = m[:, :20].sum(), m[:, :, :20].sum()
    total = m.sum()
    assert (upper == total) if position.startswith("top") else (upper == 0)
    assert (left > total / 2) if position.endswith("left") else (left < total / 2)


def test_timestamp_on_too_small_images_names_the_minimum_size():
    with pytest.raises(ValueError, match="at least 7x30"):
        inject("timestamp", torch.zeros(2, 3, 16, 16))
    assert Timestamp().min_size() == (7, 30)
    assert Timestamp(scale=2).min_size() == (14, 60)


def test_make_injector_rejects_unknown_kinds_options_and_colours():
    with pytest.raises(ValueError, match="known: patch, lsb, brightness, timestamp, tint"):
        make_injector("ruler")
    with pytest.raises(ValueError, match="takes no option 'color'"):
        make_injector("brightness", color="red")
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        make_injector("tint", color="purple")
    assert make_injector("tint", color=None, strength=None) == make_injector("tint")


def test_patch_is_unchanged_a_solid_red_square_of_five():
    x = images()
    out, mask = inject("patch", x)
    assert mask.flatten(1).sum(1).eq(25).all()
    assert torch.equal(out.permute(1, 0, 2, 3)[:, mask.squeeze(1)],
                       torch.tensor([1.0, 0.0, 0.0]).view(3, 1).expand(3, 8 * 25))


@pytest.mark.parametrize("kind", list(KINDS))
def test_synthetic_dataset_views_differ_exactly_on_the_masks(kind):
    data = synthetic(artifact=kind, **SMALL)
    clean, biased = data.views["test_clean"], data.views["test_biased"]
    assert clean.x.shape == (20, 3, 32, 32)
    assert torch.equal((biased.x != clean.x).any(dim=1, keepdim=True), biased.mask)
    assert biased.mask.flatten(1).any(1).all() and not clean.mask.any()
    for split in ("val", "test"):
        natural, plain = data.splits[split], data.views[f"{split}_clean"]
        assert torch.equal((natural.x != plain.x).any(dim=1, keepdim=True), natural.mask)
        assert torch.equal(natural.mask.flatten(1).any(1), natural.artifact)
    direction = data.artifact_direction
    assert torch.isclose(direction.norm(), torch.tensor(1.0))
    assert torch.allclose(direction, (biased.x - clean.x).mean(0) / (biased.x - clean.x).mean(0).norm())
    again = synthetic(artifact=kind, **SMALL)
    assert torch.equal(again.splits["train"].x, data.splits["train"].x)


def test_synthetic_lsb_images_are_on_the_8bit_grid_in_every_view():
    data = synthetic(artifact="lsb", **SMALL)
    for split in [*data.splits.values(), *data.views.values()]:
        assert torch.equal(quantize(split.x), split.x)
    clean, biased = data.views["test_clean"], data.views["test_biased"]
    assert (biased.x - clean.x).abs().max() <= 1 / 255 + 1e-7


def test_synthetic_dataset_passes_strength_and_colour_to_the_kinds_that_take_them():
    tint = synthetic(artifact="tint", artifact_color="green", artifact_strength=0.5, **SMALL)
    clean, biased = tint.views["test_clean"].x, tint.views["test_biased"].x
    assert torch.allclose(biased, clean * 0.5 + 0.5 * torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))
    bright = synthetic(artifact="brightness", artifact_strength=0.1, **SMALL)
    clean, biased = bright.views["test_clean"].x, bright.views["test_biased"].x
    assert torch.allclose(biased, clean + 0.1 * (1 - clean))


def test_synthetic_dataset_rejects_params_the_kind_cannot_use():
    with pytest.raises(ConfigError, match="dataset_params.image_size: .*at least 7x30"):
        synthetic(artifact="timestamp", **{**SMALL, "image_size": 16})
    with pytest.raises(ConfigError, match="dataset_params.artifact_strength"):
        synthetic(artifact="patch", artifact_strength=0.5, **SMALL)
    with pytest.raises(ConfigError, match="dataset_params.artifact_color"):
        synthetic(artifact="lsb", artifact_color="red", **SMALL)
    with pytest.raises(ConfigError, match="dataset_params.artifact_strength"):
        synthetic(artifact="brightness", artifact_strength=0.0, **SMALL)
