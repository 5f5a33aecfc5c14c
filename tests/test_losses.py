"""Generalised cross-entropy follows its formula and tends to cross-entropy as q -> 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiasbench.train.losses import generalized_cross_entropy


def test_gce_equals_the_formula():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    p_y = logits.softmax(1)[torch.arange(8), y]
    for q in (0.1, 0.7, 1.0):
        expected = (1 - p_y**q) / q
        assert torch.allclose(generalized_cross_entropy(logits, y, q, "none"), expected, atol=1e-6)


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero():
    torch.manual_seed(1)
    logits, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    ce = F.cross_entropy(logits, y)
    assert torch.isclose(generalized_cross_entropy(logits, y, 1e-6), ce, rtol=1e-4)


def test_gce_gradient_is_cross_entropy_gradient_weighted_by_p_to_the_q():
    torch.manual_seed(2)
    logits = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])
    q = 0.7
    (g_gce,) = torch.autograd.grad(generalized_cross_entropy(logits, y, q, "sum"), logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), logits)
    weight = logits.detach().softmax(1)[torch.arange(4), y] ** q
    assert torch.allclose(g_gce, g_ce * weight[:, None], atol=1e-6)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5])
def test_gce_rejects_q_outside_zero_one(q):
    with pytest.raises(ValueError, match="q must be in"):
        generalized_cross_entropy(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), q)
