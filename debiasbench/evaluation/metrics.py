"""Metrics of a trained model on every split and view.

Names are a contract (the leaderboard and tests rely on them): ``<view>_acc`` for every
view; for the natural ``val`` / ``test`` splits also ``_worst_group_acc`` (lowest accuracy
over the non-empty class x bias cells), ``_unbiased_acc`` (their mean) and
``_conflicting_acc`` (accuracy on samples where the shortcut predicts a wrong label), and
two facts of the split that say whether those group metrics can rank models:
``_smallest_group`` (samples in its smallest non-empty class x bias cell) and
``_empty_groups`` (cells without a sample). Model selection reads them
(``selection.bias_annotated_score``): a worst group of two samples is noise.
All reductions stay on the device; the host reads the values once per evaluation.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Mapping

import torch
from torch import Tensor, nn

from debiasbench.data.dataset import BenchmarkDataset, Split, input_batches
from debiasbench.models.latent import eval_mode

NATURAL_SPLITS = ("val", "test")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor | Split, batch_size: int | None,
            autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Tensor:
    """Predicted labels for ``x`` (a split, or a tensor of inputs) in evaluation batches."""
    preds = []
    for inputs in input_batches(x, batch_size):
        with autocast():
            preds.append(model(inputs).argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


def group_counts(split: Split, num_classes: int, num_bias: int) -> Tensor:
    """Samples in each class x bias cell of ``split`` [num_classes * num_bias] (those with a
    known bias label)."""
    known = split.bias >= 0
    return torch.bincount(split.groups(num_bias)[known], minlength=num_classes * num_bias)


def group_facts(prefix: str, split: Split, num_classes: int, num_bias: int) -> dict[str, Tensor]:
    """The split's smallest non-empty cell and its number of empty cells: facts of the data
    that say whether its group metrics can rank models, the same for every model."""
    counts = group_counts(split, num_classes, num_bias)
    nonempty = counts > 0
    return {f"{prefix}_smallest_group": torch.where(nonempty, counts, counts.max()).min().float(),
            f"{prefix}_empty_groups": (~nonempty).sum().float()}


def split_metrics(prefix: str, preds: Tensor, split: Split, num_classes: int, num_bias: int,
                  full: bool, facts: bool = True) -> dict[str, Tensor]:
    """Accuracy of ``preds`` on ``split``; with ``full`` also group and conflicting accuracy,
    and with ``facts`` the split's group sizes (the same for every model: the per-epoch
    validation leaves them out)."""
    correct = (preds == split.y).float()
    metrics = {f"{prefix}_acc": correct.mean()}
    if not full:
        return metrics
    conflicting = split.conflicting.float()
    metrics[f"{prefix}_conflicting_acc"] = (correct * conflicting).sum() / conflicting.sum()
    known = split.bias >= 0
    size = num_classes * num_bias
    counts = group_counts(split, num_classes, num_bias)
    hits = torch.bincount(split.groups(num_bias)[known], weights=correct[known], minlength=size)
    accuracy = hits / counts.clamp(min=1)
    nonempty = counts > 0
    nan = torch.tensor(float("nan"), device=preds.device)
    metrics[f"{prefix}_worst_group_acc"] = torch.where(nonempty, accuracy, torch.inf).min().where(nonempty.any(), nan)
    metrics[f"{prefix}_unbiased_acc"] = (accuracy * nonempty).sum() / nonempty.sum()
    if facts:
        metrics.update(group_facts(prefix, split, num_classes, num_bias))
    return metrics


#: Name of the natural validation split; its views are ``val_clean`` and ``val_biased``.
VALIDATION_PREFIX = "val"


def validation_views(selection_metric: str) -> tuple[str, ...]:
    """The views a run validates each epoch: the natural validation split (its accuracy,
    group and conflicting accuracy are the curves and the usual selection metrics), and
    the clean or biased view where ``selection_metric`` is measured on that view."""
    for view in ("val_clean", "val_biased"):
        if selection_metric.startswith(view + "_"):
            return (VALIDATION_PREFIX, view)
    return (VALIDATION_PREFIX,)


def _view_of(metric: str, views: Mapping[str, Split]) -> str:
    """The view a metric was measured on: the longest view name it starts with
    (``val_clean_acc`` -> ``val_clean``, ``val_worst_group_acc`` -> ``val``)."""
    return max((name for name in views if metric.startswith(name + "_")), key=len, default="")


def evaluate(model: nn.Module, dataset: BenchmarkDataset, batch_size: int | None = None,
             prefixes: tuple[str, ...] | None = None,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             facts: bool = True, validation: Mapping[str, float] | None = None,
             views: tuple[str, ...] | None = None) -> dict[str, float]:
    """Metrics on every evaluation view whose name starts with one of ``prefixes`` (and is
    one of ``views``, where given); the splits' group sizes too unless ``facts`` is false.

    ``validation``: what the per-epoch validation (``views=validation_views(...)``,
    ``facts=False``) returned for this very model, i.e. the selected epoch's, whose
    weights the final model has. The views it measured are then not predicted again: the
    same weights on the same images give the same predictions, and a tiny run spent as
    long re-predicting them as on an epoch of validation. Their group sizes are still added.

    Metrics that are undefined on a view (no bias labels, no conflicting sample) are
    left out rather than reported as NaN.
    """
    metrics: dict[str, Tensor] = {}
    reused_views: set[str] = set()
    with eval_mode(model):
        for name, split in dataset.evaluation_views().items():
            if (prefixes is not None and not name.startswith(prefixes)) or (views is not None and name not in views):
                continue
            full = name in NATURAL_SPLITS
            if validation is not None and f"{name}_acc" in validation:
                reused_views.add(name)
                if full and facts:
                    metrics.update(group_facts(name, split, dataset.num_classes, dataset.num_bias))
                continue
            preds = predict(model, split, batch_size, autocast)
            metrics.update(split_metrics(name, preds, split, dataset.num_classes, dataset.num_bias,
                                         full=full, facts=facts))
    values = torch.stack(list(metrics.values())).float().cpu().tolist() if metrics else []
    computed = {k: v for k, v in zip(metrics, values) if not math.isnan(v)}
    if validation is None:
        return computed
    names = dataset.evaluation_views()
    reused = {k: v for k, v in validation.items() if _view_of(k, names) in reused_views}
    return {**reused, **computed}
