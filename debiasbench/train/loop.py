"""The epoch loop, written once: the run's model, auxiliary models (PGD's biased model,
JTT's identifier) and peer-picking's two peers all train through ``train_epochs``.

Every epoch puts the models in training mode, names the epoch on each step (for the
non-finite message), iterates the loader and, per batch, runs the caller's ``batch_loss``
inside the first step's autocast and updates each step with its loss; at the end of the
epoch it checks every step's losses for finiteness and hands the caller an ``Epoch``:
the mean of each value the batches logged, the steps and samples taken and the seconds
spent (the device synchronised). What differs between the loops is the caller's: its
batch losses, and what it does after an epoch (the runner validates and checkpoints,
peer-picking scores the training split).

It also says what the run's training looks like to code that must match it without
owning it (LfF's biased twin steps once per batch of the run's loader): ``run_loader``,
``run_steps`` and ``lay_out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypeVar

import torch
from torch import Tensor, nn

from debiasbench.data.dataset import Batch, BenchmarkDataset, Loader, Sampler
from debiasbench.train.progress import ProgressReporter, Ticker, current, phase_of
from debiasbench.train.step import TrainingStep

if TYPE_CHECKING:
    from debiasbench.contract.config import RunConfig

__all__ = ["BatchLoss", "Epoch", "EpochLogs", "keep_frozen_norms_in_eval", "lay_out", "run_loader", "run_steps",
           "train_epochs"]

M = TypeVar("M", bound=nn.Module)

#: One batch's losses, one per step (a single tensor where there is one step), and the
#: values to log for it (tensors or Python numbers), from ``batch_loss(batch)``.
BatchLoss = Callable[[Batch], "tuple[Tensor | Sequence[Tensor], Mapping[str, Tensor | float]]"]


@dataclass
class Epoch:
    """What one epoch of ``train_epochs`` did: ``index`` counts from 0, ``logs`` holds the
    mean of each logged value over the epoch's ``steps``."""

    index: int
    logs: dict[str, float]
    steps: int
    samples: int
    seconds: float


class EpochLogs:
    """Sums of the values batches log, as means per step at the end of an epoch. Tensors
    are summed on the device (no host sync per step), Python numbers on the host."""

    def __init__(self) -> None:
        self.totals: dict[str, Tensor] = {}
        self.numbers: dict[str, float] = {}
        self.steps = 0

    def add(self, values: Mapping[str, Tensor | float]) -> None:
        self.steps += 1
        for key, value in values.items():
            if isinstance(value, Tensor):
                value = value.detach().float()
                self.totals[key] = self.totals[key] + value if key in self.totals else value
            else:
                self.numbers[key] = self.numbers.get(key, 0.0) + float(value)

    def means(self) -> dict[str, float]:
        values = torch.stack(list(self.totals.values())).cpu().tolist() if self.totals else []
        sums = {**dict(zip(self.totals, values)), **self.numbers}
        return {k: v / max(self.steps, 1) for k, v in sums.items()}


def train_epochs(loader: Loader, steps: TrainingStep | Sequence[TrainingStep], batch_loss: BatchLoss,
                 epochs: int, *, start: int = 0, models: Sequence[nn.Module] = (),
                 train_mode: Callable[[nn.Module], object] = nn.Module.train,
                 after_epoch: Callable[[Epoch], None] | None = None, progress: ProgressReporter | None = None,
                 phase: str | None = None) -> None:
    """Train epochs ``start`` to ``epochs - 1`` over ``loader``.

    Per batch, ``batch_loss(batch)`` runs in the first step's autocast and returns one loss
    per step (in the order of ``steps``) and the values to log; each step is updated with
    its loss, in order. Every epoch first applies ``train_mode`` to each of ``models``
    (``nn.Module.train``; the runner keeps frozen normalisation layers in eval). After the
    epoch every step's flag is read (``RunFailed`` on a non-finite loss) and
    ``after_epoch`` receives the ``Epoch``.

    Progress (``debiasbench.train.progress``) goes to ``progress``, else to the current
    reporter, as ``phase`` (default: named after the first step's loss, ``train`` for the
    run's own): each epoch's start and last step, and every ``INTERVAL`` seconds between.
    """
    steps = [steps] if isinstance(steps, TrainingStep) else list(steps)
    device = steps[0].device
    ticker = Ticker(progress if progress is not None else current(),
                    phase or phase_of([step.what for step in steps]), epochs, len(loader))
    for index in range(start, epochs):
        began = time.perf_counter()
        for model in models:
            train_mode(model)
        for step in steps:
            step.phase = f"in epoch {index + 1}"
        logs, samples = EpochLogs(), 0
        ticker.begin(index)
        for batch in loader:
            with steps[0].autocast():
                losses, values = batch_loss(batch)
            for step, loss in zip(steps, [losses] if isinstance(losses, Tensor) else losses, strict=True):
                step.update(loss)
            logs.add(values)
            samples += len(batch)
            ticker.tick()
        for step in steps:
            step.check_finite()
        means = logs.means()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if after_epoch is not None:
            after_epoch(Epoch(index, means, logs.steps, samples, time.perf_counter() - began))


def keep_frozen_norms_in_eval(model: nn.Module) -> nn.Module:
    """``model.train()``, but frozen normalisation layers keep their running statistics, as
    frozen layers should (corrections that fine-tune only the head must not drift the
    backbone's BatchNorm)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and not any(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
    return model


def run_loader(config: RunConfig, dataset: BenchmarkDataset, generator: torch.Generator,
               sampler: Sampler | None = None) -> Loader:
    """The run's training loader: the train split in batches of ``batch_size``, ordered by
    ``sampler`` (None: a shuffle) drawing from ``generator``, with the dataset's
    augmentation where ``config.augment``. Building it draws nothing."""
    return Loader(dataset.splits["train"], config.batch_size, generator, sampler=sampler,
                  augment=dataset.augment if config.augment else None)


def run_steps(config: RunConfig, loader: Loader) -> int:
    """The optimiser steps the run's training takes over ``loader`` (the run's schedule
    spans them): its epochs times the loader's batches."""
    return config.epochs * len(loader)


def lay_out(model: M, config: RunConfig, device: torch.device) -> M:
    """``model`` in the run's memory format: channels_last on CUDA where
    ``config.channels_last``, as it is; a model a method trains beside the run's (LfF's
    twin) is laid out the same way."""
    if device.type == "cuda" and config.channels_last:
        return model.to(memory_format=torch.channels_last)
    return model
