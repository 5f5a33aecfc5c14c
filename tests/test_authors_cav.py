"""The RR-ClArC authors' rules, checked against hand computations on small tensors.

Each rule is cited in the code it tests (frederikpahde/rrclarc@222d917): which samples a
CAV is fitted on (ClArC's ``cav_samples``), how the svm / ridge / lasso / logistic CAVs are
fitted, the artifact region and channel rule of ``artifact_relevance``, and the samples
and aggregation of ``tcav_score``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from debiasbench.evaluation.cav import (
    AUTHORS_PENALTY_GRID,
    NoPredictedGroup,
    artifact_cav_samples,
    authors_folds,
    authors_sample_weights,
    fit_artifact_cav,
    fit_cav,
    tcav_score,
)
from debiasbench.methods.clarc import ClArCMethod
from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.core.errors import RunFailed
from debiasbench.evaluation.explanation import artifact_metrics, tcav_sample
from debiasbench.evaluation.relevance import artifact_region, artifact_relevance, blur_scale, gaussian_blur
from debiasbench.core.hparams import resolve
from debiasbench.contract.method import RunContext
from debiasbench.models.latent import LatentModel
from debiasbench.core.registry import DATASETS
from debiasbench.testing import TINY_SYNTHETIC


def _cos(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).double().reshape(-1), torch.as_tensor(b).double().reshape(-1)
    return float(a @ b / (a.norm() * b.norm()))


def _identity_model(head: str = "max") -> LatentModel:
    """Two-channel images; the latent is the image itself (a 1x1 identity convolution).

    ``head="max"``: logits (max0 - max1, max1 - max0) of the channels' spatial maxima, so
    a sample is predicted as class 0 exactly when its channel-0 maximum is the larger.
    ``head="relu"``: ReLU, spatial mean, a fixed linear layer: the latent gradient of a
    logit is that logit's weights at positions where the latent is positive, zero elsewhere.
    """
    conv = nn.Conv2d(2, 2, 1, bias=False)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        fc.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]) if head == "max"
                        else torch.tensor([[2.0, -1.0], [-0.5, 1.0]]))
    pool = nn.AdaptiveMaxPool2d(1) if head == "max" else nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    net = nn.Sequential(OrderedDict(feat=conv, pool=pool, flat=nn.Flatten(), fc=fc))
    return LatentModel(net.eval(), "feat", num_classes=2, arch="identity")


def _split(x: Tensor, y: Tensor, artifact: Tensor) -> Split:
    return Split(x=x, y=y, bias=artifact.long(), artifact=artifact, conflicting=artifact != (y == 0))


# --------------------------------------------------------------------------- item 2: CAV samples


def _predicted_data(artifact_wins: bool = True) -> tuple[Split, Tensor]:
    """30 samples of class 0 (every third with the artifact) and 10 of class 1, 2x3x3.

    The artifact is a +2 at one pixel of channel 0: with ``artifact_wins`` it makes the
    max head predict class 0; otherwise it goes to channel 1 and predicts class 1. Clean
    samples are predicted either way (random pixels), so some of class 0 are not kept.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, 3, 3, generator=g)
    y = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    artifact = torch.zeros(40, dtype=torch.bool)
    artifact[:30:3] = True
    artifact[30::3] = True  # class 1 has artifact samples too: they must not enter
    x[artifact, 0 if artifact_wins else 1, 1, 1] += 2.0
    return _split(x, y, artifact), x.amax(dim=(2, 3))


def _clarc(model: LatentModel, train: Split, samples: str, batch: int = 7,
           logged: dict | None = None, notes: list | None = None) -> ClArCMethod:
    config = resolve_config({"method": "rrclarc", "dataset": "synthetic_artifacts", "device": "cpu",
                             "eval_batch_size": batch})
    # Just what ClArC's prepare reads of a dataset.
    dataset = cast(BenchmarkDataset, SimpleNamespace(splits={"train": train}, attacked_class=0,
                                                     sample_shape=train.sample_shape))
    ctx = RunContext(config=config, dataset=dataset, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0),
                     log_metrics=(logged if logged is not None else {}).update,
                     note=(notes if notes is not None else []).append)
    method = ClArCMethod({"cav_kind": "pattern", "cav_samples": samples, "finetune": "all"}, ctx)
    method.prepare(ctx)
    return method


def test_cav_samples_default_to_the_authors_predicted_rule():
    assert ClArCMethod.hparams["cav_samples"].default == "predicted"


def test_predicted_samples_are_the_attacked_class_samples_the_model_predicts_as_that_class():
    train, pooled = _predicted_data()
    acts, labels = artifact_cav_samples(_identity_model(), train, 0, "predicted", batch_size=7)
    kept = (train.y == 0) & (pooled[:, 0] > pooled[:, 1])  # the max head's class 0, by hand
    assert 0 < int(kept.sum()) < 30  # some clean class-0 samples are predicted as class 1
    torch.testing.assert_close(acts, pooled[kept])
    assert torch.equal(labels, train.artifact[kept])
    every_acts, every_labels = artifact_cav_samples(_identity_model(), train, 0, "all", batch_size=7)
    torch.testing.assert_close(every_acts, pooled[:30])
    assert torch.equal(every_labels, train.artifact[:30])


@pytest.mark.parametrize("samples", ["predicted", "all"])
def test_clarc_fits_the_cav_and_both_mean_lengths_on_the_same_chosen_samples(samples: str):
    # clarc.py:89-94 of the authors: the CAV and the clean / artifact mean lengths come
    # from one set of vectors, the class's training samples predicted as the class.
    train, pooled = _predicted_data()
    chosen = train.y == 0
    if samples == "predicted":
        chosen &= pooled[:, 0] > pooled[:, 1]
    artifact = train.artifact
    pattern = pooled[chosen & artifact].mean(0) - pooled[chosen & ~artifact].mean(0)
    cav = pattern / pattern.norm()
    method = _clarc(_identity_model(), train, samples)
    torch.testing.assert_close(method.cav, cav)
    torch.testing.assert_close(method.clean_length, (pooled[chosen & ~artifact] @ cav).mean())
    torch.testing.assert_close(method.artifact_length, (pooled[chosen & artifact] @ cav).mean())


def test_predicted_clean_samples_are_longer_along_the_cav_than_all_clean_samples_here():
    # The clean samples kept are those whose channel-0 maximum (the artifact's channel) wins.
    train, _ = _predicted_data()
    predicted, every = _clarc(_identity_model(), train, "predicted"), _clarc(_identity_model(), train, "all")
    assert float(predicted.clean_length) > float(every.clean_length) + 0.02


def test_where_no_artifact_sample_is_predicted_as_the_class_clarc_falls_back_to_every_sample_and_says_so():
    train, pooled = _predicted_data(artifact_wins=False)
    with pytest.raises(NoPredictedGroup, match=r"predicts as class 0 .*: it has 0 samples with the artifact"):
        artifact_cav_samples(_identity_model(), train, 0, "predicted")
    logged: dict[str, float] = {}
    notes: list[str] = []
    method = _clarc(_identity_model(), train, "predicted", logged=logged, notes=notes)
    every = _clarc(_identity_model(), train, "all")
    torch.testing.assert_close(method.cav, every.cav)
    torch.testing.assert_close(method.clean_length, every.clean_length)
    assert logged["cav_samples_fallback"] == 1.0 and logged["cav_samples_artifact"] == 10
    assert len(notes) == 1 and "every sample of the class instead" in notes[0]
    logged = {}
    _clarc(_identity_model(), _predicted_data()[0], "predicted", logged=logged)
    assert logged["cav_samples_fallback"] == 0.0


def test_a_class_without_artifact_samples_fails_the_run_under_either_rule():
    train, _ = _predicted_data()
    no_artifact = train.replace(artifact=train.artifact & (train.y != 0))
    for samples in ("predicted", "all"):
        with pytest.raises(RunFailed, match="class 0: it has 0 samples with the artifact"):
            _clarc(_identity_model(), no_artifact, samples)


# --------------------------------------------------------------------------- item 3: svm / ridge / lasso / logistic


def test_the_authors_sample_weights_are_one_over_the_class_size_scaled_to_a_largest_of_one():
    y = np.array([True, False, False, False, True, False])
    np.testing.assert_allclose(authors_sample_weights(y), [1, 0.5, 0.5, 0.5, 1, 0.5])


def test_the_authors_penalty_grid_runs_from_1e_5_to_1e4_in_decades():
    np.testing.assert_allclose(AUTHORS_PENALTY_GRID, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100, 1e3, 1e4])


def _separable_data(n: int = 60, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced labels (a third positive), a shift along a random direction, an offset."""
    g = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[g.permutation(n)[: n // 3]] = True
    direction = g.normal(size=d)
    x = g.normal(size=(n, d)) + 1.5 * y[:, None] * direction + 0.3
    return x, y


def _oriented(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``w`` signed like every CAV here: towards the artifact samples' mean."""
    w = w / np.linalg.norm(w)
    return -w if w @ (x[y].mean(0) - x[~y].mean(0)) < 0 else w


def test_ridge_cav_is_the_hand_computed_weighted_ridge_without_intercept_at_the_cv_best_alpha():
    x, y = _separable_data()
    t = np.where(y, 1.0, -1.0)
    w = np.where(y, 1 / y.sum(), 1 / (~y).sum())
    w = w / w.max()

    def ridge(rows: np.ndarray, alpha: float) -> np.ndarray:
        xw = x[rows] * w[rows, None]
        return np.linalg.solve(x[rows].T @ xw + alpha * np.eye(x.shape[1]), xw.T @ t[rows])

    folds = np.array_split(np.arange(len(y)), 5)  # KFold(5), unshuffled: contiguous
    best, best_score = None, -np.inf
    for alpha in [10.0 ** i for i in range(-5, 5)]:
        scores = []
        for k, test in enumerate(folds):
            train = np.concatenate([f for j, f in enumerate(folds) if j != k])
            residual = t[test] - x[test] @ ridge(train, alpha)
            scores.append(1 - (residual ** 2).sum() / ((t[test] - t[test].mean()) ** 2).sum())  # R^2, unweighted
        if np.mean(scores) > best_score:
            best, best_score = alpha, np.mean(scores)
    assert best is not None
    expected = _oriented(ridge(np.arange(len(y)), best), x, y)
    cav = fit_cav(torch.from_numpy(x), torch.from_numpy(y), "ridge")
    assert _cos(cav, expected) > 1 - 1e-9
    # An intercept or standardised features would give another direction.
    assert _cos(fit_cav(torch.from_numpy(x), torch.from_numpy(y), "ridge_standardised"), expected) < 0.999


@pytest.mark.parametrize("kind", ["svm", "lasso", "logistic"])
def test_svm_lasso_and_logistic_cavs_refit_at_the_penalty_with_the_best_unweighted_cv_score(kind: str):
    """The selection written out by hand around scikit-learn's estimators at fixed
    penalties: weighted fits, folds as GridSearchCV's default, the estimator's score
    computed by hand from its predictions, unweighted (accuracy, or R^2 for lasso)."""
    from sklearn.linear_model import Lasso, LogisticRegression
    from sklearn.svm import LinearSVC

    x, y = _separable_data(seed=1)
    w = authors_sample_weights(y)
    regression = kind == "lasso"
    t = np.where(y, 1, -1) if kind != "svm" else y.astype(int)

    def fitted(rows: np.ndarray, penalty: float) -> np.ndarray:
        if kind == "svm":
            model = LinearSVC(C=penalty, fit_intercept=False, random_state=0)
        elif kind == "lasso":
            model = Lasso(alpha=penalty, fit_intercept=False)
        else:
            model = LogisticRegression(C=penalty, fit_intercept=False)
        return model.fit(x[rows], t[rows], sample_weight=w[rows]).coef_.reshape(-1)

    def score(coef: np.ndarray, rows: np.ndarray) -> float:
        out = x[rows] @ coef  # no intercept: the decision function is x . w
        if regression:
            return 1 - ((t[rows] - out) ** 2).sum() / ((t[rows] - t[rows].mean()) ** 2).sum()
        positive = out > 0
        return float((positive == (t[rows] == 1)).mean())

    folds = authors_folds(y, regression)
    assert len(folds) == 5
    scores = [np.mean([score(fitted(train, p), test) for train, test in folds]) for p in AUTHORS_PENALTY_GRID]
    best = AUTHORS_PENALTY_GRID[int(np.argmax(scores))]  # ties: the first
    expected = _oriented(fitted(np.arange(len(y)), best), x, y)
    cav = fit_cav(torch.from_numpy(x), torch.from_numpy(y), kind)
    assert _cos(cav, expected) > 1 - 1e-6


@pytest.mark.parametrize("kind", ["svm", "ridge", "lasso", "logistic"])
def test_the_authors_kinds_fit_without_intercept_so_a_constant_feature_takes_its_place(kind: str):
    x, y = _separable_data(n=90, seed=2)
    with_constant = np.concatenate([x, np.full((len(y), 1), 3.0)], axis=1)
    cav = fit_cav(torch.from_numpy(with_constant), torch.from_numpy(y), kind)
    standardised = fit_cav(torch.from_numpy(with_constant), torch.from_numpy(y), f"{kind}_standardised")
    assert abs(float(cav[-1])) > 1e-3
    assert abs(float(standardised[-1])) < 1e-6


# --------------------------------------------------------------------------- item 6: artifact relevance


def test_blur_scale_is_the_authors_41_px_sigma_8_at_224_px_and_shrinks_with_the_image():
    assert blur_scale(224) == (41, 8.0)
    assert blur_scale(224, "blur_fixed") == blur_scale(32, "blur_fixed") == (41, 8.0)
    size, sigma = blur_scale(32)
    assert size == 7 and sigma == pytest.approx(8 / 7)  # 41 * 32 / 224 = 5.9 -> half-width 3


def test_the_region_of_one_pixel_is_the_disk_where_the_blurred_gaussian_exceeds_0_3_of_its_peak():
    # Away from the edges a blurred single pixel is k(dy) k(dx) with k the 1-D Gaussian of
    # sigma 8; over its peak k(0)^2 that is exp(-(dy^2 + dx^2) / 128), kept above 0.3.
    mask = torch.zeros(1, 1, 224, 224)
    mask[0, 0, 100, 100] = 1.0
    region = artifact_region(mask)[0, 0]
    dy, dx = np.meshgrid(np.arange(224) - 100, np.arange(224) - 100, indexing="ij")
    expected = np.exp(-(dy ** 2 + dx ** 2) / (2 * 8.0 ** 2)) > 0.3
    assert expected.sum() == 489
    assert np.array_equal(region.numpy() > 0, expected)


def test_masks_are_made_binary_at_0_1_of_their_maximum_before_the_blur():
    soft = torch.zeros(1, 1, 224, 224)
    soft[0, 0, 100, 100] = 1.0
    soft[0, 0, 30, 30] = 0.09  # below 0.1 of the maximum: not part of the artifact
    soft[0, 0, 180, 180] = 0.11
    region = artifact_region(soft)[0, 0]
    assert region[30, 30] == 0 and region[180, 180] == 1 and region[100, 100] == 1


@pytest.mark.parametrize("side", [224, 32])
def test_the_separable_blur_matches_torchvisions_gaussian_blur_the_authors_call(side: int):
    transforms = pytest.importorskip("torchvision.transforms")
    g = torch.Generator().manual_seed(side)
    masks = (torch.rand(3, 1, side, side, generator=g) > 0.98).float()
    reference = transforms.GaussianBlur(kernel_size=41, sigma=8.0)(masks[:, 0])
    torch.testing.assert_close(gaussian_blur(masks, (41, 41), (8.0, 8.0))[:, 0], reference, atol=1e-6, rtol=0)


def test_images_smaller_than_half_the_kernel_are_blurred_as_their_repeated_mirror_images():
    # torchvision refuses reflect padding of 20 px on a 9 px image; numpy's reflect pad
    # continues the reflection, which is the blur of the mirrored, tiled image.
    g = torch.Generator().manual_seed(0)
    image = torch.rand(9, 9, generator=g, dtype=torch.float64)
    x = np.linspace(-20, 20, 41)
    k = np.exp(-0.5 * (x / 8.0) ** 2)
    k /= k.sum()
    padded = np.pad(image.numpy(), 20, mode="reflect")
    expected = np.array([[(padded[i:i + 41, j:j + 41] * np.outer(k, k)).sum() for j in range(9)]
                         for i in range(9)])
    blurred = gaussian_blur(image.view(1, 1, 9, 9), (41, 41), (8.0, 8.0))[0, 0]
    np.testing.assert_allclose(blurred.numpy(), expected, atol=1e-12)


def test_the_share_sums_the_channels_with_their_signs_before_taking_the_magnitude():
    # Pixel a (in the mask): channels +2, -1, 0 -> |sum| 1, sum of |.| 3.
    # Pixel b (outside, far away): channels 1, 1, 1 -> 3 either way.
    relevance = torch.zeros(1, 3, 64, 64)
    relevance[0, :, 10, 10] = torch.tensor([2.0, -1.0, 0.0])
    relevance[0, :, 50, 50] = 1.0
    mask = torch.zeros(1, 1, 64, 64)
    mask[0, 0, 10, 10] = 1
    assert float(artifact_relevance(relevance, mask)) == pytest.approx(1 / (1 + 3))  # the authors'
    assert float(artifact_relevance(relevance, mask, channels="abs")) == pytest.approx(3 / (3 + 3))


def test_the_share_counts_relevance_in_the_blurred_region_that_a_one_pixel_dilation_misses():
    # A 1 px line at 224 px: the authors' region reaches 12 px to either side.
    mask = torch.zeros(1, 1, 224, 224)
    mask[0, 0, :, 112] = 1
    relevance = torch.zeros(1, 1, 224, 224)
    relevance[0, 0, :, 112] = 1.0
    relevance[0, 0, :, 112 + 5] = 1.0  # 5 px off the line
    relevance[0, 0, :, 112 + 30] = 2.0  # far off
    assert float(artifact_relevance(relevance, mask)) == pytest.approx(2 / 4)
    assert float(artifact_relevance(relevance, mask, "dilate", dilation=1)) == pytest.approx(1 / 4)


# --------------------------------------------------------------------------- item 7: TCAV


def test_tcav_score_is_positives_over_nonzero_sensitivities_of_the_attacked_logit_by_hand():
    # Head ReLU -> mean -> W: d logit_t / d latent[c, h, w] = W[t, c] * [latent > 0] / (H W),
    # so the spatially averaged gradient is W[t, c] * (positive share of channel c) / (H W).
    model = _identity_model("relu")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 2, 3, 3, generator=g)
    x[:4] = -1.0  # no positive latent: zero sensitivity, neither vote
    cav = torch.tensor([1.0, 1.3])  # (positive shares are multiples of 1/9: no other exact zero)
    weight = cast(nn.Linear, model.net.fc).weight.detach()
    for target in (0, 1):
        sensitivity = ((x > 0).float().mean(dim=(2, 3)) * weight[target]) @ cav / 9
        positive, negative = int((sensitivity > 0).sum()), int((sensitivity < 0).sum())
        assert positive + negative == 26 and positive > 0 and negative > 0
        assert tcav_score(model, x, cav, target, batch_size=8) == pytest.approx(positive / (positive + negative))


@pytest.fixture(scope="module")
def tiny_data() -> BenchmarkDataset:
    cls = DATASETS.get("synthetic_artifacts")
    return cls(**resolve(cls.params, TINY_SYNTHETIC, ""))


def test_the_tcav_population_is_the_biased_test_view_of_every_class_by_default(tiny_data: BenchmarkDataset):
    biased = tiny_data.views["test_biased"]
    attacked = tiny_data.attacked_class
    assert attacked is not None
    every = tcav_sample(biased, attacked)
    assert torch.equal(every, torch.arange(len(biased)))  # 100 samples, under the 512 bound
    assert len(set(biased.y[every].tolist())) == tiny_data.num_classes
    own = tcav_sample(biased, attacked, "attacked_class")
    assert torch.equal(own, (biased.y == attacked).nonzero().squeeze(1))
    bounded = tcav_sample(biased, attacked, size=10)
    assert len(bounded) == 10 and torch.equal(bounded, tcav_sample(biased, attacked, size=10))


def test_artifact_metrics_score_tcav_on_every_class_with_the_attacked_logit(tiny_data: BenchmarkDataset):
    from debiasbench.models.build import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", tiny_data.num_classes)
    biased = tiny_data.views["test_biased"]
    attacked = tiny_data.attacked_class
    assert attacked is not None
    metrics, _ = artifact_metrics(model, tiny_data, cav_samples="all")
    cav = fit_artifact_cav(model, tiny_data.splits["train"], attacked, samples="all")
    assert metrics["tcav_samples"] == len(biased)
    assert metrics["tcav_score"] == tcav_score(model, biased, cav, attacked)
    own, _ = artifact_metrics(model, tiny_data, cav_samples="all", tcav_population="attacked_class")
    assert own["tcav_samples"] == own["relevance_samples"] == int((biased.y == attacked).sum())
    assert not math.isnan(own["tcav_score"])


def test_the_evaluation_cav_falls_back_to_every_sample_when_none_is_predicted_as_the_class(
        tiny_data: BenchmarkDataset):
    from debiasbench.models.build import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", tiny_data.num_classes)
    with torch.no_grad():
        cast(nn.Linear, model.net.fc).bias[tiny_data.attacked_class] = -1e4  # never predicts the attacked class
    metrics, params = artifact_metrics(model, tiny_data)
    assert params["eval_cav_samples"] == "all"
    every, _ = artifact_metrics(model, tiny_data, cav_samples="all")
    assert metrics["cav_alignment"] == every["cav_alignment"]
