"""Metrics of a trained model on every split and view.

Names are a contract (the leaderboard and tests rely on them): ``<view>_acc`` for every
view; for the natural ``val`` / ``test`` splits also ``_worst_group_acc`` (lowest accuracy
over the non-empty class x bias cells), ``_unbiased_acc`` (their mean) and
``_conflicting_acc`` (accuracy on samples where the shortcut predicts a wrong label).
All reductions stay on the device; the host reads the values once per evaluation.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from debiasbench.data import BenchmarkDataset, Split

NATURAL_SPLITS = ("val", "test")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int,
            autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Tensor:
    """Predicted labels for ``x`` in evaluation batches."""
    preds = []
    for start in range(0, x.shape[0], batch_size):
        with autocast():
            preds.append(model(x[start:start + batch_size]).argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def split_metrics(prefix: str, preds: Tensor, split: Split, num_classes: int, num_bias: int,
                  full: bool) -> dict[str, Tensor]:
    """Accuracy of ``preds`` on ``split``; with ``full`` also group and conflicting accuracy."""
    correct = (preds == split.y).float()
    metrics = {f"{prefix}_acc": correct.mean()}
    if not full:
        return metrics
    conflicting = split.conflicting.float()
    metrics[f"{prefix}_conflicting_acc"] = (correct * conflicting).sum() / conflicting.sum()
    known = split.bias >= 0
    groups = split.groups(num_bias)[known]
    size = num_classes * num_bias
    counts = torch.bincount(groups, minlength=size)
    hits = torch.bincount(groups, weights=correct[known], minlength=size)
    accuracy = hits / counts.clamp(min=1)
    nonempty = counts > 0
    nan = torch.tensor(float("nan"), device=preds.device)
    metrics[f"{prefix}_worst_group_acc"] = torch.where(nonempty, accuracy, torch.inf).min().where(nonempty.any(), nan)
    metrics[f"{prefix}_unbiased_acc"] = (accuracy * nonempty).sum() / nonempty.sum()
    return metrics


def evaluate(model: nn.Module, dataset: BenchmarkDataset, batch_size: int = 512,
             prefixes: tuple[str, ...] | None = None,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """Metrics on every evaluation view whose name starts with one of ``prefixes``.

    Metrics that are undefined on a view (no bias labels, no conflicting sample) are
    left out rather than reported as NaN.
    """
    was_training = model.training
    model.eval()
    metrics: dict[str, Tensor] = {}
    for name, split in dataset.evaluation_views().items():
        if prefixes is not None and not name.startswith(prefixes):
            continue
        preds = predict(model, split.x, batch_size, autocast)
        metrics.update(split_metrics(name, preds, split, dataset.num_classes, dataset.num_bias,
                                     full=name in NATURAL_SPLITS))
    model.train(was_training)
    if not metrics:
        return {}
    values = torch.stack(list(metrics.values())).float().cpu().tolist()
    return {k: v for k, v in zip(metrics, values) if not math.isnan(v)}
