"""The final evaluation takes the validation views from the selected epoch's validation
instead of predicting them again, and reports exactly what a fresh evaluation would."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from debiasbench.evaluation.metrics import VALIDATION_PREFIX, evaluate
from debiasbench.run.runner import build_dataset, build_run_model
from debiasbench.testing import tiny_config


class CountingSamples(nn.Module):
    """``model`` that counts the samples it is asked to predict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += len(x)
        return self.model(x)


@pytest.fixture(scope="module")
def dataset_and_model():
    config = tiny_config()
    dataset = build_dataset(config)
    return dataset, build_run_model(config, dataset, torch.device("cpu"))


def test_reusing_the_validation_gives_the_metrics_and_group_facts_of_a_fresh_evaluation(dataset_and_model):
    dataset, model = dataset_and_model
    validation = evaluate(model, dataset, prefixes=(VALIDATION_PREFIX,), facts=False)
    fresh = evaluate(model, dataset)
    reused = evaluate(model, dataset, validation=validation)
    assert reused == fresh
    assert "val_smallest_group" in reused and "val_smallest_group" not in validation


def test_reusing_the_validation_predicts_only_the_other_views(dataset_and_model):
    dataset, model = dataset_and_model
    validation = evaluate(model, dataset, prefixes=(VALIDATION_PREFIX,), facts=False)
    counting = CountingSamples(model)
    evaluate(counting, dataset, validation=validation)
    others = [split for name, split in dataset.evaluation_views().items() if not name.startswith(VALIDATION_PREFIX)]
    assert counting.samples == sum(len(split) for split in others)
    counting.samples = 0
    evaluate(counting, dataset)
    assert counting.samples == sum(len(split) for split in dataset.evaluation_views().values())


@pytest.mark.parametrize("selection", ["last", "best"])
def test_a_runs_final_validation_metrics_are_those_of_its_final_weights(tracker, tmp_path, selection):
    from debiasbench.run import checkpoints
    from debiasbench.run.base_model import MODEL_ARTIFACT
    from debiasbench.run.runner import run

    config = tiny_config(selection=selection, epochs=3, lr=0.003)
    result = run(config, tracker, progress=False)
    weights = tracker.download(result.run_id, MODEL_ARTIFACT, tmp_path)
    dataset = build_dataset(config)
    model = build_run_model(config, dataset, torch.device("cpu"))
    model.net.load_state_dict(checkpoints.load(weights))
    fresh = evaluate(model, dataset, eval_batch_for_tiny(dataset))
    reported = {k: v for k, v in result.metrics.items() if k.startswith(VALIDATION_PREFIX)}
    assert reported == pytest.approx({k: v for k, v in fresh.items() if k.startswith(VALIDATION_PREFIX)})


def eval_batch_for_tiny(dataset) -> int:
    from debiasbench.data.dataset import eval_batch_for

    return eval_batch_for(None, dataset.sample_shape)
