"""Auxiliary models that methods train in ``prepare`` (biased models, peers).

They use the run's architecture, device and data, the same device-resident loader as the
runner, the same ``TrainingStep`` and named random streams of the run
(``RunContext.stream``), so a method's preparation is as reproducible and as fast as the
main training loop.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from debiasbench.data.dataset import Loader, Sampler, Split, input_batches
from debiasbench.contract.method import Batch, RunContext
from debiasbench.models.build import build_model
from debiasbench.models.latent import LatentModel, eval_mode
from debiasbench.train.loop import train_epochs
from debiasbench.train.step import TrainingStep


def fresh_model(ctx: RunContext, name: str) -> LatentModel:
    """A new, randomly initialised model like the run's (architecture, classes, device).

    Initialised from the run's stream ``name`` (``ctx.init``), so auxiliary models differ
    from the main one and from each other, and building one leaves the run's global random
    state as it was.
    """
    config = ctx.config
    with ctx.init(name):
        model = build_model(config.model, ctx.dataset.num_classes, config.latent_layer,
                            config.pretrained, input_shape=ctx.dataset.sample_shape)
    return model.to(ctx.device)


def train_model(model: LatentModel, split: Split, loss_fn: Callable[[LatentModel, Batch], Tensor],
                epochs: int, batch_size: int, step: TrainingStep, generator: torch.Generator,
                sampler: Sampler | None = None) -> LatentModel:
    """Train ``model`` on ``split`` with ``loss_fn`` through ``step`` (which holds its
    optimiser, schedule and clipping) in the shared epoch loop; returns it in eval mode."""
    loader = Loader(split, batch_size, generator, sampler=sampler)
    train_epochs(loader, step, lambda batch: (loss_fn(model, batch), {}), epochs, models=[model])
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, x: Tensor | Split, batch_size: int | None = 512) -> Tensor:
    """Softmax probabilities [N, classes] in eval mode, of a split or a tensor of inputs."""
    with eval_mode(model):
        return torch.cat([model(inputs).float().softmax(1) for inputs in input_batches(x, batch_size)])
