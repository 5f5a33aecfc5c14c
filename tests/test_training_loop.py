"""The one epoch loop: the run's, auxiliary models' and the mining peers'."""

from __future__ import annotations

import pytest
import torch

from debiasbench.core.errors import RunFailed
from debiasbench.data.dataset import Loader, Split
from debiasbench.testing import tiny_config
from debiasbench.train.loop import Epoch, lay_out, run_loader, run_steps, train_epochs
from debiasbench.train.step import TrainingStep


def _split(n: int = 10) -> Split:
    y = torch.arange(n) % 2
    return Split(x=torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0)), y=y,
                 bias=torch.full_like(y, -1), artifact=torch.zeros(n, dtype=torch.bool),
                 conflicting=torch.zeros(n, dtype=torch.bool))


def _linear_and_step() -> tuple[torch.nn.Module, TrainingStep]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    return model, TrainingStep(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1))


def test_every_epoch_from_start_trains_each_batch_once_and_reports_log_means():
    model, step = _linear_and_step()
    loader = Loader(_split(10), 4, torch.Generator().manual_seed(0))
    epochs: list[Epoch] = []

    def batch_loss(batch):
        loss = torch.nn.functional.cross_entropy(model(batch.x), batch.y)
        return loss, {"one": 1.0, "size": torch.tensor(float(len(batch)))}

    model.eval()
    train_epochs(loader, step, batch_loss, 3, start=1, models=[model], after_epoch=epochs.append)
    assert [e.index for e in epochs] == [1, 2] and model.training
    assert [(e.steps, e.samples) for e in epochs] == [(3, 10), (3, 10)]
    assert epochs[0].logs == pytest.approx({"one": 1.0, "size": 10 / 3})
    assert step.steps == 6 and step.phase == "in epoch 3"


def test_each_step_takes_its_own_loss_of_the_same_batch_in_order():
    (a, step_a), (b, step_b) = _linear_and_step(), _linear_and_step()
    seen: list[int] = []

    def batch_loss(batch):
        seen.append(len(batch))
        return (a(batch.x).sum(), 0.0 * b(batch.x).sum()), {}

    before_b = [p.detach().clone() for p in b.parameters()]
    train_epochs(Loader(_split(6), 6, torch.Generator()), [step_a, step_b], batch_loss, 1)
    assert seen == [6] and step_a.steps == step_b.steps == 1
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), before_b))  # b's loss had no gradient


def test_a_non_finite_loss_fails_at_the_end_of_its_epoch_naming_it():
    model, step = _linear_and_step()
    after: list[Epoch] = []
    with pytest.raises(RunFailed, match="non-finite loss in epoch 1"):
        train_epochs(Loader(_split(4), 2, torch.Generator()), step,
                     lambda batch: (model(batch.x).sum() * float("nan"), {}), 2, after_epoch=after.append)
    assert after == []


def test_the_run_steps_are_its_epochs_times_its_loader_batches_and_the_layout_is_kept_on_the_cpu():
    from debiasbench.run.runner import build_dataset

    config = tiny_config(batch_size=7, epochs=3)
    dataset = build_dataset(config)
    loader = run_loader(config, dataset, torch.Generator())
    assert run_steps(config, loader) == 3 * len(loader) == 3 * -(-len(dataset.splits["train"]) // 7)
    model = torch.nn.Conv2d(1, 1, 1)
    assert lay_out(model, config, torch.device("cpu")) is model
