"""The one optimiser update every model of a run goes through."""

from __future__ import annotations

import pytest
import torch

from debiasbench.core.errors import RunFailed
from debiasbench.testing import tiny_config
from debiasbench.train.step import NONFINITE_CHECK_EVERY, TrainingStep


def _model_and_step(**config_overrides):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    config = tiny_config(**config_overrides)
    return model, TrainingStep.from_config(config, model.parameters(), total_steps=10, device=torch.device("cpu"))


def test_a_step_follows_the_run_optimiser_and_schedule():
    model, step = _model_and_step(optimizer="sgd", lr=0.1, momentum=0.0, schedule="cosine", grad_clip=0)
    before = model.weight.detach().clone()
    loss = model(torch.ones(1, 3)).sum()
    step.update(loss)
    assert torch.allclose(model.weight, before - 0.1 * torch.ones(2, 3))  # d(sum)/dW = 1 everywhere
    assert step.optimizer.param_groups[0]["lr"] < 0.1  # the cosine schedule stepped
    assert step.steps == 1


def test_gradient_clipping_bounds_the_update():
    model, step = _model_and_step(optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=0.5)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    step.update(100.0 * model(torch.ones(1, 3)).sum())  # unclipped, the update's norm would be 100 * sqrt(8)
    moved = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before
    assert moved.norm() == pytest.approx(0.5, rel=1e-4)


def test_a_non_finite_loss_fails_at_the_next_check_with_where_it_happened():
    model, step = _model_and_step()
    step.phase = "in epoch 2"
    step.update(model(torch.ones(1, 3)).sum() * float("nan"))  # no host read yet
    with pytest.raises(RunFailed, match=r"non-finite loss in epoch 2 \(by step"):
        for _ in range(NONFINITE_CHECK_EVERY):
            step.update(model(torch.ones(1, 3)).sum())
    with pytest.raises(RunFailed, match="non-finite loss in epoch 2$"):
        step.check_finite()


def test_state_round_trips_so_a_resumed_step_continues_the_schedule():
    model, step = _model_and_step(schedule="cosine")
    for _ in range(3):
        step.update(model(torch.ones(1, 3)).sum())
    other_model, other = _model_and_step(schedule="cosine")
    other.load_state_dict(step.state_dict())
    assert other.steps == 3
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(step.optimizer.param_groups[0]["lr"])
