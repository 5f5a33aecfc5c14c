"""What GroupDRO and DFR cost.

``groupdro-step``: one GroupDRO training step against one vanilla step on the same batch
of 64 coloured digits with small_cnn: GroupDRO adds a per-sample loss, one bincount, one
index_add and a softmax over the groups, all on the device.

``dfr-refit``: DFR's ``prepare`` (penultimate features of the validation split, C tuned on
the paper's 7-value grid, 10 balanced refits, the last layer written) against one vanilla
training epoch over the training split at batch 64.
"""

from __future__ import annotations

import pytest
import torch

from debiasbench.data.dataset import Loader


@pytest.mark.benchmark(group="groupdro-step")
def test_step_baseline_vanilla(benchmark, method_step):
    benchmark(method_step("vanilla"))


@pytest.mark.benchmark(group="groupdro-step")
def test_step_groupdro(benchmark, method_step):
    benchmark(method_step("groupdro"))


@pytest.mark.benchmark(group="dfr-refit")
def test_epoch_baseline_vanilla(benchmark, colored_digits, method_on_digits):
    method, ctx = method_on_digits("vanilla")
    optimizer = torch.optim.Adam(ctx.model.parameters(), lr=1e-3)
    loader = Loader(colored_digits.splits["train"], 64, ctx.generator)

    def epoch():
        ctx.model.train()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = method.loss(ctx.model, batch)
            loss.backward()
            optimizer.step()

    benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="dfr-refit")
def test_dfr_prepare_refits_the_last_layer(benchmark, method_on_digits):
    method, ctx = method_on_digits("dfr")
    benchmark.pedantic(lambda: method.prepare(ctx), rounds=5, iterations=1, warmup_rounds=1)
    assert ctx.model.net.fc.weight.abs().sum() > 0
