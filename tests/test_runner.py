"""One run end to end: reproducible, honest about the bias, recorded faithfully."""

from __future__ import annotations

import pickle

import mlflow
import pytest
import torch

from debiasbench.run import checkpoints
from debiasbench.contract.config import resolve_config
from debiasbench.core.errors import RunFailed
from debiasbench.contract.method import Method
from debiasbench.core.registry import METHODS
from debiasbench.run.runner import run
from debiasbench.track.store import FAILURE_TAG, RUN_KEY_TAG

from debiasbench.testing import tiny_config, without_timing

tiny = tiny_config


def test_same_seed_gives_identical_metrics_twice_on_cpu(tracker):
    first = run(tiny(seed=3), tracker, progress=False)
    second = run(tiny(seed=3), tracker, progress=False)
    assert without_timing(first.metrics) == without_timing(second.metrics)
    other = run(tiny(seed=4), tracker, progress=False)
    assert without_timing(other.metrics) != without_timing(first.metrics)


def test_vanilla_learns_the_colour_shortcut_on_colored_digits(tracker):
    config = resolve_config({"dataset": "colored_digits", "dataset_params": {"bias_ratio": 0.99},
                             "epochs": 3, "device": "cpu", "experiment": "tests"})
    metrics = run(config, tracker, progress=False).metrics
    assert metrics["test_biased_acc"] > 0.9
    assert metrics["test_biased_acc"] - metrics["test_conflicting_acc"] > 0.5
    assert metrics["test_worst_group_acc"] <= metrics["test_unbiased_acc"] <= metrics["test_biased_acc"]


def test_search_runs_returns_the_run_with_the_contract_metric_names(tracker, tracking_uri, monkeypatch):
    config = tiny(val_curves=True)  # every epoch validated, for the curve checked below
    result = run(config, tracker, progress=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # undone after the test, unlike set_tracking_uri
    runs = mlflow.search_runs(experiment_names=["tests"])
    row = runs[runs.run_id == result.run_id].iloc[0]
    for name in ("test_acc", "test_clean_acc", "test_biased_acc", "test_worst_group_acc",
                 "test_conflicting_acc", "test_unbiased_acc", "val_acc", "val_clean_acc",
                 "val_biased_acc", "val_worst_group_acc", "train_seconds", "samples_per_second"):
        assert row[f"metrics.{name}"] == pytest.approx(result.metrics[name])
    assert row["status"] == "FINISHED"
    assert row[f"tags.{RUN_KEY_TAG}"] == config.run_key()
    assert row["params.method"] == "vanilla" and row["params.seed"] == "0"
    assert row["params.dataset_params.p"] == "0.5"
    history = tracker.client.get_metric_history(result.run_id, "epoch/val_acc")
    assert [m.step for m in history] == [1, 2]
    # the validation split's group sizes are logged once, as facts, not as per-epoch curves
    assert row["metrics.val_smallest_group"] >= 1 and "metrics.epoch/val_acc" in row
    assert "metrics.epoch/val_smallest_group" not in row
    artifacts = [a.path for a in tracker.client.list_artifacts(result.run_id)]
    assert "config.yaml" in artifacts


class ExplodingLoss(Method):
    name = "test_exploding"
    description = "Loss becomes NaN (tests divergence handling)."

    def loss(self, model, batch):
        logits = model(batch.x)
        return logits.sum() * float("nan"), {}


def test_nan_loss_stops_the_run_and_records_it_failed_with_the_reason(tracker, register):
    register(METHODS, ExplodingLoss)
    with pytest.raises(RunFailed, match="non-finite loss in epoch 1"):
        run(tiny(method="test_exploding"), tracker, progress=False)
    (stored,) = tracker.client.search_runs([tracker.experiment_id])
    assert stored.info.status == "FAILED"
    assert "non-finite loss" in stored.data.tags[FAILURE_TAG]
    assert "test_acc" not in stored.data.metrics


def test_best_selection_evaluates_the_checkpoint_with_the_best_validation_metric(tracker):
    best = run(tiny(selection="best", epochs=3, lr=0.003), tracker, progress=False)
    history = tracker.client.get_metric_history(best.run_id, "epoch/val_acc")
    assert best.metrics["val_acc"] == pytest.approx(max(m.value for m in history))


def test_checkpoints_are_atomic_and_refuse_pickled_code(tmp_path):
    path = tmp_path / "last.pt"
    checkpoints.save_atomic({"w": torch.ones(2)}, path)
    with pytest.raises((AttributeError, pickle.PicklingError)):  # "Can't pickle local object"
        checkpoints.save_atomic({"w": lambda: None}, path)  # cannot be saved: old file survives
    assert torch.equal(checkpoints.load(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    torch.save({"f": Method}, tmp_path / "code.pt")
    with pytest.raises(pickle.UnpicklingError):
        checkpoints.load(tmp_path / "code.pt")
