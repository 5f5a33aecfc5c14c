"""What a run spends besides training is logged per phase, bounded and needed.

The explanation phase explains a bounded sample (``explain_samples``) and reports the
standard error of the artifact relevance over it; an epoch is validated only where
model selection needs it (or ``val_curves`` asks); the runner names no method.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from debiasbench.core.registry import METHODS
from debiasbench.data.dataset import eval_batch_for
from debiasbench.run.runner import PHASE_SECONDS, run
from debiasbench.testing import tiny_config

RUN_FOLDER = Path(__file__).resolve().parents[1] / "debiasbench" / "run"


def test_a_run_logs_the_seconds_of_every_phase(tracker):
    metrics = run(tiny_config(), tracker, progress=False).metrics
    for phase in ("validate", "test", "explain", "tracking"):
        assert metrics[f"{PHASE_SECONDS}{phase}"] >= 0.0
    assert metrics["seconds/test"] > 0.0 and metrics["seconds/explain"] > 0.0
    assert metrics["train_seconds"] > 0.0


def test_the_explanation_explains_at_most_explain_samples_and_reports_its_standard_error(tracker):
    few = run(tiny_config(explain_samples=5, log_model=False), tracker, progress=False).metrics
    assert few["relevance_samples"] == 5.0
    assert 0.0 < few["artifact_relevance_se"] < 1.0
    every = run(tiny_config(log_model=False), tracker, progress=False).metrics
    assert every["relevance_samples"] > 5.0


def _epochs_with(tracker, run_id: str, metric: str) -> list[int]:
    return sorted(m.step for m in tracker.client.get_metric_history(run_id, metric))


def test_with_selection_last_only_the_last_epoch_is_validated(tracker):
    result = run(tiny_config(epochs=3, log_model=False), tracker, progress=False)
    assert _epochs_with(tracker, result.run_id, "epoch/val_acc") == [3]
    assert _epochs_with(tracker, result.run_id, "epoch/train_loss") == [1, 2, 3]
    assert "val_clean_acc" in result.metrics and "val_biased_acc" in result.metrics


def test_val_curves_and_selection_best_validate_every_epoch(tracker):
    curves = run(tiny_config(epochs=3, val_curves=True, log_model=False), tracker, progress=False)
    assert _epochs_with(tracker, curves.run_id, "epoch/val_acc") == [1, 2, 3]
    best = run(tiny_config(epochs=3, selection="best", selection_metric="val_clean_acc", log_model=False),
               tracker, progress=False)
    assert _epochs_with(tracker, best.run_id, "epoch/val_clean_acc") == [1, 2, 3]
    assert _epochs_with(tracker, best.run_id, "epoch/val_biased_acc") == []


def test_val_curves_change_nothing_but_the_curves(tracker):
    from debiasbench.testing import without_timing

    plain = run(tiny_config(log_model=False), tracker, progress=False)
    curves = run(tiny_config(val_curves=True, log_model=False, experiment="curves"), tracker, progress=False)
    assert plain.run_key == curves.run_key
    assert without_timing(plain.metrics) == pytest.approx(without_timing(curves.metrics))


def test_the_runner_names_no_method_and_no_method_hyperparameter():
    names = set(METHODS.names())
    hparams = {h for name in names for h in METHODS.get(name).hparams}
    named: set[str] = set()
    for path in RUN_FOLDER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names | hparams:
                named.add(node.value)
            elif isinstance(node, ast.Attribute) and node.attr in hparams:
                named.add(node.attr)
    assert named == set()


def test_the_evaluation_batch_is_smaller_on_the_cpu():
    assert eval_batch_for(None, (3, 32, 32), torch.device("cpu")) == 64
    assert eval_batch_for(None, (3, 32, 32), "cuda") == 512
    assert eval_batch_for(None, (3, 224, 224), "cpu") == 4
    assert eval_batch_for(32, (3, 32, 32), "cpu") == 32
