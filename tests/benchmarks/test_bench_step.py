"""One vanilla training step through the Method interface against a bare PyTorch step
(same model, batch and optimiser): the harness's overhead per step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debiasbench.contract.config import resolve_config
from debiasbench.data.dataset import Loader
from debiasbench.contract.method import RunContext
from debiasbench.models.build import build_model
from debiasbench.core.registry import METHODS

BATCH = 64


@pytest.fixture
def setup(colored_digits):
    torch.manual_seed(0)
    model = build_model("small_cnn", 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = Loader(colored_digits.splits["train"], BATCH, torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    config = resolve_config({"device": "cpu"})
    ctx = RunContext(config=config, dataset=colored_digits, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = METHODS.get("vanilla")(config.hparams, ctx)
    return model, optimizer, batch, method


@pytest.mark.benchmark(group="step")
def test_step_vanilla_method_against_bare_pytorch(compare, setup):
    """Both members train the same model with the same optimiser, taking turns."""
    model, optimizer, batch, method = setup

    def bare_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch.x), batch.y).backward()
        optimizer.step()

    def method_step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = method.loss(model, batch)
        loss.backward()
        optimizer.step()

    compare(bare_step, {"vanilla_method": method_step}, baseline_name="baseline_bare_pytorch", clock="cpu")
