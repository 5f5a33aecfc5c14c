"""What GroupDRO and DFR cost.

``groupdro-step``: one GroupDRO training step against one vanilla step on the same batch
of 64 coloured digits with small_cnn: GroupDRO adds a per-sample loss, one bincount, one
index_add and a softmax over the groups, all on the device.

``dfr-refit``: DFR's ``prepare`` with its defaults (penultimate features of the validation
split, C tuned on the paper's 7-value grid, 20 balanced refits, the training split's
feature statistics, the last layer written) against one vanilla training epoch over the
training split at batch 64. The features are read at the evaluation batch a run on the
CPU resolves (``eval_batch_for``: 64 digits of 8x8 pixels), not the unresolved default.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from debiasbench.data.dataset import Loader, eval_batch_for


@pytest.mark.benchmark(group="groupdro-step")
def test_groupdro_step_against_vanilla(compare, method_step):
    compare(method_step("vanilla"), {"groupdro": method_step("groupdro")}, baseline_name="baseline_vanilla",
            clock="cpu")


@pytest.mark.benchmark(group="dfr-refit")
def test_dfr_refit_against_a_vanilla_epoch(compare, colored_digits, method_on_digits):
    vanilla, vanilla_ctx = method_on_digits("vanilla")
    optimizer = torch.optim.Adam(vanilla_ctx.model.parameters(), lr=1e-3)
    loader = Loader(colored_digits.splits["train"], 64, vanilla_ctx.generator)

    def epoch():
        vanilla_ctx.model.train()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = vanilla.loss(vanilla_ctx.model, batch)
            loss.backward()
            optimizer.step()

    dfr, dfr_ctx = method_on_digits("dfr")
    # what the runner sets before prepare (run.runner.run)
    dfr_ctx.config = replace(dfr_ctx.config, eval_batch_size=eval_batch_for(None, colored_digits.sample_shape, "cpu"))
    compare(epoch, {"dfr_prepare": lambda: dfr.prepare(dfr_ctx)}, baseline_name="baseline_vanilla_epoch",
            clock="cpu")
    assert dfr_ctx.model.net.fc.weight.abs().sum() > 0
