"""One JTT step and one LfF step against one vanilla step on the same batch of 64 coloured
digits with small_cnn. JTT's step is vanilla's (its cost is the identification model in
``prepare`` and the longer upsampled epoch); LfF's step also runs the biased model's
forward, backward and optimiser step, so about 2x is its floor."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from debiasbench.models.build import build_model


@pytest.fixture(scope="module", autouse=True)
def warm_allocator(colored_digits):
    """JTT's and LfF's ``prepare`` run large batches before their steps are timed, which
    leaves the CPU allocator warm; without the same for vanilla, whichever step is timed
    first pays for growing the allocator, and vanilla's baseline would read slower than
    the very same step does after the others."""
    model = build_model("small_cnn", 10)
    split = colored_digits.splits["train"]
    for _ in range(2):
        F.cross_entropy(model(split.x[:512]), split.y[:512]).backward()


@pytest.mark.benchmark(group="jtt-lff-step")
def test_jtt_and_lff_steps_against_vanilla(compare, method_step):
    compare(method_step("vanilla"), {"jtt_upsampled": method_step("jtt", {"id_epochs": 1}),
                                     "jtt_loss_weighted": method_step("jtt", {"id_epochs": 1, "mode": "loss"}),
                                     "lff": method_step("lff")},
            baseline_name="baseline_vanilla", clock="cpu")
