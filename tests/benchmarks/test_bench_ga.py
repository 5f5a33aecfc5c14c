"""One Gradient Alignment training step against one vanilla step on the same batch of 64
coloured digits with small_cnn (target <= 1.1x): GA adds a per-sample loss, a gather of
the BC flags, two scatter-adds and a few element-wise ops, all on the device."""

from __future__ import annotations

import pytest


@pytest.mark.benchmark(group="ga-step")
def test_gradient_alignment_step_against_vanilla(compare, method_step):
    ga = method_step("gradient_alignment", {"bias_source": "labels"})
    compare(method_step("vanilla"), {"gradient_alignment": ga}, baseline_name="baseline_vanilla", clock="cpu")
