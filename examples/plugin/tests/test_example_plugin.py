"""The example plugin keeps debiasbench's contracts (``debiasbench.testing``) and does what
its docstrings say. Runs before installing too; the entry-point test needs the install."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch
import torch.nn.functional as F

from debiasbench.testing import ClassWeightsIgnoredWarning, check_dataset, check_method
from debiasbench_example.focal_loss import FocalLoss, focal_loss
from debiasbench_example.nets import stripe_cnn
from debiasbench_example.stripes import PALETTE, ColoredStripes

TINY = {"n_train": 200, "n_val": 60, "n_test": 100, "image_size": 12}


def test_dataset_keeps_the_contract():
    check_dataset(ColoredStripes, **TINY)


def test_method_keeps_the_contract_end_to_end_on_the_dataset():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClassWeightsIgnoredWarning)  # its loss honours the run's class weights
        metrics = check_method(FocalLoss, dataset=ColoredStripes, dataset_params=TINY)
    assert 0.0 <= metrics["test_conflicting_acc"] <= 1.0


def test_method_trains_the_plugin_architecture_end_to_end():
    from debiasbench.core.registry import MODELS

    with MODELS.override(stripe_cnn, name="stripe_cnn"):  # what the entry point does once installed
        metrics = check_method(FocalLoss, dataset=ColoredStripes, dataset_params=TINY, model="stripe_cnn")
    assert 0.0 <= metrics["test_acc"] <= 1.0


def test_architecture_takes_any_image_size_and_exposes_its_latent_layer():
    from debiasbench.models.latent import LatentModel

    net, latent = stripe_cnn(num_classes=3, in_channels=3)
    model = LatentModel(net, latent, num_classes=3)
    for size in (12, 17):
        logits, activation = model.forward_with_latent(torch.rand(2, 3, size, size))
        assert logits.shape == (2, 3) and activation.shape == (2, 32, size, size)


def test_background_agrees_with_the_class_at_bias_ratio_and_test_colour_is_random():
    data = ColoredStripes(**{**{k: spec.default for k, spec in ColoredStripes.params.items()}, **TINY,
                             "bias_ratio": 0.9})
    train = data.splits["train"]
    assert (train.bias == train.y).float().mean().item() == pytest.approx(0.9, abs=0.005)
    assert torch.equal(train.conflicting, train.bias != train.y)
    test = data.splits["test"]
    assert (test.bias == test.y).float().mean() < 0.5
    biased, clean = data.views["test_biased"], data.views["test_clean"]
    assert torch.equal(biased.bias, test.y) and (clean.bias == -1).all()
    # same stripes, other background: where a pixel is background in every view, only colour differs
    darkest = biased.x.amin(dim=(2, 3))  # background colour plus negative noise
    assert torch.allclose(darkest, PALETTE[biased.bias], atol=0.5)


def test_focal_loss_is_cross_entropy_at_gamma_0_and_smaller_on_confident_samples():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0], [0.0, 3.0]])
    target = torch.tensor([0, 0, 0])
    loss, ce = focal_loss(logits, target, 0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target).item())
    per_sample = [focal_loss(logits[i:i + 1], target[i:i + 1], 2.0)[0].item() for i in range(3)]
    ratios = [fl / c for fl, c in zip(per_sample, ce.tolist())]
    assert ratios[0] < ratios[1] < ratios[2] < 1.0  # confident and right: weighted least


def test_at_gamma_0_the_method_is_the_runs_class_weighted_cross_entropy():
    logits, y = torch.randn(6, 3), torch.tensor([0, 0, 0, 0, 1, 2])
    for weights in (None, torch.tensor([1.0, 4.0, 4.0])):  # alpha_t: the run key class_weights
        method = FocalLoss.__new__(FocalLoss)
        method.hp = {"gamma": 0.0}
        method.ctx = type("Ctx", (), {"class_weights": weights})()
        loss, _ = method.loss(lambda x: x, type("Batch", (), {"x": logits, "y": y})())
        assert loss.item() == pytest.approx(method.cross_entropy(logits, y).item())
        assert loss.item() == pytest.approx(F.cross_entropy(logits, y, weight=weights).item())


def test_focal_loss_gradient_is_finite_for_gamma_below_1_at_certainty():
    logits = torch.tensor([[100.0, -100.0]], requires_grad=True)
    focal_loss(logits, torch.tensor([0]), 0.5)[0].backward()
    assert torch.isfinite(logits.grad).all()


def test_installed_entry_points_name_the_classes_and_the_builder():
    try:
        distribution("debiasbench-example-plugin")
    except PackageNotFoundError:
        pytest.skip("not installed: pip install -e examples/plugin")
    from debiasbench.core.registry import DATASETS, METHODS, MODELS

    assert METHODS.get("focal_loss") is FocalLoss
    assert DATASETS.get("colored_stripes") is ColoredStripes
    assert MODELS.get("stripe_cnn") is stripe_cnn
