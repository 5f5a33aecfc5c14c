"""CAVs: directions, conventions, errors, latent extraction and TCAV scores."""

from __future__ import annotations

import math
from typing import cast

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from debiasbench.evaluation.cav import (
    CAV_KINDS,
    cav_alignment,
    fit_artifact_cav,
    fit_cav,
    latent_activations,
    pool_activations,
    tcav_score,
)
from debiasbench.data.dataset import BenchmarkDataset
from debiasbench.core.hparams import resolve
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel
from debiasbench.core.registry import DATASETS
from debiasbench.testing import TINY_SYNTHETIC


#: Kinds whose direction ignores a shift of every activation (the authors' scikit-learn
#: kinds fit without intercept and do not).
ORIGIN_FREE_KINDS = ("pattern", *(k for k in CAV_KINDS if k.endswith("_standardised")))


def _cos(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a.double().reshape(1, -1), b.double().reshape(1, -1)))


def _planted(n: int = 600, d: int = 16, shift: float = 3.0, share: float = 0.3, seed: int = 0):
    """Isotropic Gaussian noise, plus ``shift`` along a random unit direction for label 1."""
    g = torch.Generator().manual_seed(seed)
    direction = F.normalize(torch.randn(d, generator=g), dim=0)
    labels = (torch.rand(n, generator=g) < share).long()
    acts = torch.randn(n, d, generator=g) + shift * labels[:, None] * direction
    return acts + 0.5, labels, direction  # an offset: CAVs must not depend on the mean


@pytest.fixture(scope="module")
def tiny_data() -> BenchmarkDataset:
    cls = DATASETS.get("synthetic_artifacts")
    return cls(**resolve(cls.params, TINY_SYNTHETIC, ""))


@pytest.fixture(scope="module")
def small_cnn() -> LatentModel:
    torch.manual_seed(0)
    return build_model("small_cnn", 4)


# --------------------------------------------------------------------------- fit_cav


def test_cav_kinds_lists_pattern_first_then_the_authors_solvers_then_their_standardised_variants():
    assert CAV_KINDS == ("pattern", "svm", "ridge", "lasso", "logistic", "svm_standardised",
                         "ridge_standardised", "lasso_standardised", "logistic_standardised")


def test_pattern_cav_is_the_normalised_difference_of_class_means_for_unbalanced_classes():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(300, 24, generator=g) * torch.linspace(0.1, 3.0, 24) + 2.0
    labels = torch.zeros(300, dtype=torch.long)
    labels[:37] = 1  # 37 vs 263
    acts[:37] += torch.randn(24, generator=g)
    expected = acts[labels == 1].mean(0) - acts[labels == 0].mean(0)
    cav = fit_cav(acts, labels)
    assert _cos(cav, expected) > 0.9999


@pytest.mark.parametrize("kind", CAV_KINDS)
def test_every_kind_returns_a_unit_float32_vector_that_recovers_a_planted_direction(kind: str):
    acts, labels, direction = _planted()
    acts = acts - 0.5  # centred: the authors' kinds fit without intercept (test_authors_cav.py)
    cav = fit_cav(acts, labels, kind=kind)
    assert cav.shape == (acts.shape[1],) and cav.dtype == torch.float32 and cav.device == acts.device
    assert abs(float(cav.norm()) - 1.0) < 1e-5
    cosine = _cos(cav, direction)
    if kind == "lasso_standardised":  # sparse by design: it need only point the right way
        assert cosine > 0
    else:
        assert cosine > 0.9


@pytest.mark.parametrize("kind", ORIGIN_FREE_KINDS)
def test_pattern_and_standardised_kinds_do_not_depend_on_the_origin_of_the_activations(kind: str):
    acts, labels, _ = _planted(n=300, seed=7)
    assert _cos(fit_cav(acts, labels, kind), fit_cav(acts + 5.0, labels, kind)) > 0.999


@pytest.mark.parametrize("kind", CAV_KINDS)
def test_every_kind_points_towards_the_artifact_samples_and_flips_with_the_labels(kind: str):
    acts, labels, _ = _planted(seed=3)
    cav = fit_cav(acts, labels, kind=kind)
    flipped = fit_cav(acts, 1 - labels, kind=kind)
    mean_difference = acts[labels == 1].mean(0) - acts[labels == 0].mean(0)
    assert float(cav @ mean_difference) > 0
    assert float(flipped @ mean_difference) < 0


def test_bool_and_float_labels_give_the_same_cav_as_integer_labels():
    acts, labels, _ = _planted(seed=4)
    cav = fit_cav(acts, labels)
    assert torch.allclose(fit_cav(acts, labels.bool()), cav)
    assert torch.allclose(fit_cav(acts, labels.float()), cav)


def test_conv_activations_are_max_pooled_over_space_not_mean_pooled():
    # Artifact samples: channel 0 has one bright pixel (max 4, mean 1), channel 1 is
    # uniformly 2 (max 2, mean 2). Max pooling gives direction (4, 2), mean pooling (1, 2).
    g = torch.Generator().manual_seed(0)
    n = 200
    labels = (torch.arange(n) % 2 == 0).long()
    acts = 0.01 * torch.rand(n, 2, 2, 2, generator=g)
    acts[labels == 1, 0, 0, 1] += 4.0
    acts[labels == 1, 1] += 2.0
    cav = fit_cav(acts, labels)
    max_direction = torch.tensor([4.0, 2.0])
    mean_direction = torch.tensor([1.0, 2.0])
    assert _cos(cav, max_direction) > 0.999
    assert _cos(cav, mean_direction) < 0.9
    assert torch.allclose(cav, fit_cav(pool_activations(acts), labels))


def test_pool_activations_takes_the_spatial_max_and_keeps_vectors_unchanged():
    acts = torch.randn(5, 3, 4, 6)
    assert torch.equal(pool_activations(acts), acts.amax(dim=(2, 3)))
    flat = torch.randn(5, 7)
    assert pool_activations(flat) is flat
    with pytest.raises(ValueError, match=r"\[N, D\] or \[N, C, H, W\]"):
        pool_activations(torch.randn(5, 3, 4))


def test_unknown_kind_raises_value_error_naming_the_allowed_kinds():
    acts, labels, _ = _planted(n=50)
    allowed = "pattern, svm, ridge, lasso, logistic, svm_standardised"
    with pytest.raises(ValueError, match=f"unknown CAV kind 'pca'.*{allowed}"):
        fit_cav(acts, labels, kind="pca")


@pytest.mark.parametrize("labels", [
    torch.tensor([0, 1, 2, 1, 0, 1]),
    torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0, 1.0]),
    torch.tensor([-1, 1, 1, 0, 0, 1]),
])
def test_non_binary_labels_raise_value_error(labels: Tensor):
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fit_cav(torch.randn(6, 3), labels)


@pytest.mark.parametrize("value", [0, 1])
def test_a_single_class_raises_value_error(value: int):
    with pytest.raises(ValueError, match="both labels 0 and 1"):
        fit_cav(torch.randn(6, 3), torch.full((6,), value))


def test_labels_of_the_wrong_length_raise_value_error():
    with pytest.raises(ValueError, match="labels must have shape"):
        fit_cav(torch.randn(6, 3), torch.tensor([0, 1, 0]))


@pytest.mark.parametrize("kind", ["lasso", "lasso_standardised"])
def test_lasso_that_removes_every_weight_raises_value_error_saying_so(kind: str):
    # Labels independent of tiny-effect features: every standardised correlation < alpha.
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(400, 5, generator=g)
    labels = torch.zeros(400, dtype=torch.long)
    labels[::2] = 1
    acts = acts - acts[labels == 1].mean(0) * (labels == 1)[:, None] \
        - acts[labels == 0].mean(0) * (labels == 0)[:, None]  # equal class means
    with pytest.raises(ValueError, match="zero vector.*lasso removed every weight"):
        fit_cav(acts, labels, kind=kind)


def test_constant_features_get_zero_weight_in_the_pattern_and_standardised_kinds():
    acts, labels, _ = _planted(n=200, d=6, seed=5)
    acts = torch.cat([acts, torch.full((200, 1), 3.0)], dim=1)
    for kind in ORIGIN_FREE_KINDS:
        cav = fit_cav(acts, labels, kind=kind)
        assert torch.isfinite(cav).all() and abs(float(cav[-1])) < 1e-6, kind


# --------------------------------------------------------------------------- latent activations


def test_latent_activations_match_one_eval_pass_and_restore_the_training_flag(small_cnn: LatentModel):
    x = torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    small_cnn.train()
    acts = latent_activations(small_cnn, x, batch_size=4)
    assert small_cnn.training
    small_cnn.eval()
    with torch.no_grad():
        expected = small_cnn.latent(x)
    small_cnn.train()
    assert acts.shape == (10, 128, 4, 4) and not acts.requires_grad
    assert torch.allclose(acts, expected, atol=1e-5)
    pooled = latent_activations(small_cnn, x, batch_size=3, pool=True)
    assert torch.allclose(pooled, expected.amax(dim=(2, 3)), atol=1e-5)


def test_latent_activations_restore_eval_mode_too(small_cnn: LatentModel):
    small_cnn.eval()
    latent_activations(small_cnn, torch.randn(2, 3, 16, 16))
    assert not small_cnn.training


# --------------------------------------------------------------------------- fit_artifact_cav


@pytest.mark.parametrize("kind", ["pattern", "logistic"])
def test_artifact_cav_on_synthetic_artifacts_is_a_unit_vector_of_the_latent_channels(
        tiny_data: BenchmarkDataset, small_cnn: LatentModel, kind: str):
    small_cnn.train()
    cav = fit_artifact_cav(small_cnn, tiny_data.splits["train"], tiny_data.attacked_class, kind=kind,
                           batch_size=64, samples="all")
    assert cav.shape == (128,) and cav.dtype == torch.float32
    assert abs(float(cav.norm()) - 1.0) < 1e-5
    assert small_cnn.training


def test_artifact_cav_with_every_sample_uses_only_the_attacked_class_and_points_to_the_artifact(
        tiny_data: BenchmarkDataset, small_cnn: LatentModel):
    train = tiny_data.splits["train"]
    cls = tiny_data.attacked_class
    cav = fit_artifact_cav(small_cnn, train, cls, samples="all")
    selected = train.y == cls
    acts = latent_activations(small_cnn, train.x[selected], pool=True)
    artifact = train.artifact[selected].bool()
    expected = acts[artifact].mean(0) - acts[~artifact].mean(0)
    assert _cos(cav, expected) > 0.9999


def test_artifact_cav_over_all_classes_when_no_class_is_given(tiny_data: BenchmarkDataset,
                                                              small_cnn: LatentModel):
    cav = fit_artifact_cav(small_cnn, tiny_data.splits["train"], None, samples="all")
    assert cav.shape == (128,) and abs(float(cav.norm()) - 1.0) < 1e-5


def test_artifact_cav_raises_value_error_when_the_class_has_no_artifact_or_no_clean_sample(
        tiny_data: BenchmarkDataset, small_cnn: LatentModel):
    train = tiny_data.splits["train"]
    assert tiny_data.attacked_class is not None
    other = (tiny_data.attacked_class + 1) % tiny_data.num_classes
    with pytest.raises(ValueError, match=f"class {other}: it has 0 samples with the artifact"):
        fit_artifact_cav(small_cnn, train, other)
    biased = tiny_data.views["test_biased"]
    with pytest.raises(ValueError, match="0 without"):
        fit_artifact_cav(small_cnn, biased, tiny_data.attacked_class)


def test_artifact_cav_rejects_an_unknown_kind_before_running_the_model(tiny_data: BenchmarkDataset,
                                                                       small_cnn: LatentModel):
    with pytest.raises(ValueError, match="allowed kinds"):
        fit_artifact_cav(small_cnn, tiny_data.splits["train"], tiny_data.attacked_class, kind="nope")


# --------------------------------------------------------------------------- alignment


def test_cav_alignment_is_the_cosine_of_the_flattened_vectors():
    a = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert cav_alignment(a, a.reshape(2, 2) * 5) == pytest.approx(1.0)
    assert cav_alignment(a, -a) == pytest.approx(-1.0)
    assert cav_alignment(a, torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(0.0)
    assert cav_alignment(a, torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(2**-0.5)
    with pytest.raises(ValueError, match="must match"):
        cav_alignment(a, torch.ones(3))


def test_cav_alignment_of_a_fitted_cav_with_the_planted_direction_is_high():
    acts, labels, direction = _planted(seed=6)
    assert cav_alignment(fit_cav(acts, labels), direction) > 0.95


# --------------------------------------------------------------------------- TCAV


def test_tcav_score_is_one_along_the_mean_pooled_gradient_and_zero_against_it(small_cnn: LatentModel):
    # small_cnn's head is average pooling + linear, so the spatially averaged gradient of
    # logit k w.r.t. the latent is fc.weight[k] / (H * W) for every sample.
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    weight = cast(nn.Linear, small_cnn.net.fc).weight.detach()
    assert tcav_score(small_cnn, x, weight[1], target=1, batch_size=5) == 1.0
    assert tcav_score(small_cnn, x, -weight[1], target=1) == 0.0


def test_tcav_score_with_per_sample_targets_counts_each_sample_against_its_own_logit(small_cnn: LatentModel):
    x = torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(20) % 4
    weight = cast(nn.Linear, small_cnn.net.fc).weight.detach()
    cav = weight[0]
    expected = float(((weight[targets] @ cav) > 0).float().mean())
    assert tcav_score(small_cnn, x, cav, targets, batch_size=7) == pytest.approx(expected)


def test_tcav_score_is_a_share_in_zero_one_for_a_random_cav(small_cnn: LatentModel):
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    score = tcav_score(small_cnn, x, torch.randn(128), target=2)
    assert 0.0 <= score <= 1.0
    assert score * 16 == int(score * 16)


def test_tcav_score_is_nan_when_the_logit_does_not_move_along_the_cav(small_cnn: LatentModel):
    # Every sample's sensitivity is exactly zero: neither a vote for nor against the artifact.
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    assert math.isnan(tcav_score(small_cnn, x, torch.zeros(128), target=1))


def test_tcav_score_works_for_frozen_models_under_no_grad_and_restores_the_training_flag():
    torch.manual_seed(0)
    model = build_model("small_cnn", 3)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        score = tcav_score(model, x, cast(nn.Linear, model.net.fc).weight[0], target=0)
    assert score == 1.0
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_tcav_score_rejects_a_cav_of_the_wrong_size_and_mismatched_targets(small_cnn: LatentModel):
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(ValueError, match="128 channels"):
        tcav_score(small_cnn, x, torch.randn(64), target=0)
    with pytest.raises(ValueError, match="one class per sample"):
        tcav_score(small_cnn, x, torch.randn(128), target=torch.tensor([0, 1]))
