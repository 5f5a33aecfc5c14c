"""Auxiliary models that methods train in ``prepare`` (biased models, peers).

They use the run's architecture, device and data, the same device-resident loader as the
runner, and a generator derived from the run seed, so a method's preparation is as
reproducible and as fast as the main training loop.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from debiasbench.data import DeviceLoader, Sampler, Split, input_batches
from debiasbench.method import Batch, RunContext
from debiasbench.models import LatentModel, build_model, eval_mode


def fresh_model(ctx: RunContext, seed_offset: int = 1) -> LatentModel:
    """A new, randomly initialised model like the run's (architecture, classes, device).

    Initialised from ``seed + seed_offset`` so auxiliary models differ from the main one
    and from each other, and do not disturb the global random state of the run.
    """
    config = ctx.config
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        torch.manual_seed(config.seed * 1000 + seed_offset)
        model = build_model(config.model, ctx.dataset.num_classes, config.latent_layer,
                            config.pretrained, input_shape=ctx.dataset.sample_shape)
    return model.to(ctx.device)


def make_generator(ctx: RunContext, seed_offset: int) -> torch.Generator:
    return torch.Generator(device=ctx.device).manual_seed(ctx.config.seed * 1000 + seed_offset)


def train_model(model: LatentModel, split: Split, loss_fn: Callable[[LatentModel, Batch], Tensor],
                epochs: int, batch_size: int, lr: float, generator: torch.Generator,
                sampler: Sampler | None = None) -> LatentModel:
    """Plain Adam training of ``model`` on ``split`` with ``loss_fn``; returns it in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DeviceLoader(split, batch_size, generator, sampler=sampler)
    model.train()
    for _ in range(epochs):
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: LatentModel, x: Tensor | Split, batch_size: int | None = 512) -> Tensor:
    """Softmax probabilities [N, classes] in eval mode, of a split or a tensor of inputs."""
    with eval_mode(model):
        return torch.cat([model(inputs).float().softmax(1) for inputs in input_batches(x, batch_size)])
