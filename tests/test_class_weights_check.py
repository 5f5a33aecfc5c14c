"""Every method's loss is weighted by the run's class weights alike: ``class_weighted_mean``
reduces per-sample terms as ``cross_entropy`` does, and ``check_method`` warns, naming the
method, when a loss ignores the weights; the example plugin's focal loss honours them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from debiasbench.contract.method import Method
from debiasbench.testing import ClassWeightsIgnoredWarning, check_method

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"


class UnweightedCE(Method):
    """Plain cross-entropy that never looks at ``ctx.class_weights``: what the guide warns against."""

    name = "unweighted_ce"
    description = "Cross-entropy ignoring the run's class weights."

    def loss(self, model, batch):
        loss = F.cross_entropy(model(batch.x), batch.y)
        return loss, {"ce": loss.detach()}


class WeightedCE(UnweightedCE):
    name = "weighted_ce"

    def loss(self, model, batch):
        loss = self.cross_entropy(model(batch.x), batch.y)
        return loss, {"ce": loss.detach()}


def method_with(weights: torch.Tensor | None) -> Method:
    method = Method.__new__(Method)
    method.ctx = type("Ctx", (), {"class_weights": weights})()  # the only field the reductions read
    return method


def test_class_weighted_mean_reduces_like_the_class_weighted_cross_entropy():
    logits, y = torch.randn(7, 3), torch.tensor([0, 1, 2, 2, 1, 0, 2])
    per_sample = F.cross_entropy(logits, y, reduction="none")
    for weights in (None, torch.tensor([1.0, 4.0, 0.5])):
        method = method_with(weights)
        assert torch.allclose(method.class_weighted_mean(per_sample, y), method.cross_entropy(logits, y))


def test_check_method_warns_naming_a_method_whose_loss_ignores_class_weights():
    with pytest.warns(ClassWeightsIgnoredWarning, match=r"method 'unweighted_ce': its loss ignores the run's class "
                                                        r"weights.*self\.cross_entropy"):
        check_method(UnweightedCE, end_to_end=False)


def test_check_method_is_quiet_for_losses_that_honour_class_weights(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the example plugin, importable without installing it
    from debiasbench_example.focal_loss import FocalLoss

    with warnings.catch_warnings():
        warnings.simplefilter("error", ClassWeightsIgnoredWarning)
        check_method(WeightedCE, end_to_end=False)
        check_method(FocalLoss, end_to_end=False)
