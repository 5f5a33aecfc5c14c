"""One Gradient Alignment training step against one vanilla step on the same batch of 64
coloured digits with small_cnn (target <= 1.1x): GA adds a per-sample loss, a gather of
the BC flags, two scatter-adds and a few element-wise ops, all on the device."""

from __future__ import annotations

import pytest
import torch

from debiasbench.config import resolve_config
from debiasbench.data import DeviceLoader
from debiasbench.method import RunContext
from debiasbench.models import build_model
from debiasbench.registry import METHODS

BATCH = 64


def make_step(colored_digits, method_name: str, hparams: dict):
    torch.manual_seed(0)
    model = build_model("small_cnn", 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DeviceLoader(colored_digits.splits["train"], BATCH, torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    config = resolve_config({"device": "cpu", "method": method_name, "hparams": hparams})
    ctx = RunContext(config=config, dataset=colored_digits, model=model, device=torch.device("cpu"),
                     generator=torch.Generator().manual_seed(0))
    method = METHODS.get(method_name)(config.hparams, ctx)
    method.prepare(ctx)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = method.loss(model, batch)
        loss.backward()
        optimizer.step()

    return step


@pytest.mark.benchmark(group="ga-step")
def test_step_baseline_vanilla(benchmark, colored_digits):
    benchmark(make_step(colored_digits, "vanilla", {}))


@pytest.mark.benchmark(group="ga-step")
def test_step_gradient_alignment(benchmark, colored_digits):
    benchmark(make_step(colored_digits, "gradient_alignment", {"bias_source": "labels"}))
