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
from pathlib import Path
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from debiasbench.data import BenchmarkDataset, Split
from debiasbench.models import eval_mode

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
    metrics: dict[str, Tensor] = {}
    with eval_mode(model):
        for name, split in dataset.evaluation_views().items():
            if prefixes is not None and not name.startswith(prefixes):
                continue
            preds = predict(model, split.x, batch_size, autocast)
            metrics.update(split_metrics(name, preds, split, dataset.num_classes, dataset.num_bias,
                                         full=name in NATURAL_SPLITS))
    if not metrics:
        return {}
    values = torch.stack(list(metrics.values())).float().cpu().tolist()
    return {k: v for k, v in zip(metrics, values) if not math.isnan(v)}


#: Samples explained per LRP batch (one backward each; bounded for GPU memory).
EXPLAIN_BATCH = 64


def artifact_metrics(model: nn.Module, dataset: BenchmarkDataset, batch_size: int = 512,
                     heatmap_path: Path | None = None, cav_kind: str = "pattern",
                     ) -> tuple[dict[str, float], dict[str, str]]:
    """``artifact_relevance``, ``tcav_score`` and ``cav_alignment`` of ``model``, and the
    explanation method used (a run param), for datasets with artifact masks.

    All three look at the biased test view's samples of the attacked class, i.e. images
    the artifact points to their own class: ``artifact_relevance`` is the mean share of
    absolute input relevance inside the (1-pixel dilated) artifact mask; ``tcav_score`` the
    share of them whose attacked-class logit rises along the artifact CAV (fitted on the
    evaluated model's training latents, of ``cav_kind``); ``cav_alignment`` the cosine of that
    CAV with the true latent direction of the artifact, the mean difference of max-pooled
    latents of the same test images with and without the artifact.
    """
    from debiasbench.cav import cav_alignment, fit_artifact_cav, latent_activations, tcav_score
    from debiasbench.explain import artifact_relevance, heatmap_grid, input_relevance

    attacked = getattr(dataset, "attacked_class", None)
    biased, clean = dataset.views.get("test_biased"), dataset.views.get("test_clean")
    if ("artifact_masks" not in dataset.provides or attacked is None or biased is None
            or clean is None or biased.mask is None):
        return {}, {}
    chosen = (biased.y == attacked).nonzero().squeeze(1)
    if chosen.numel() == 0:
        return {}, {}
    x, mask, y = biased.x[chosen], biased.mask[chosen], biased.y[chosen]
    shares, first_relevance, method = [], None, ""
    for start in range(0, len(chosen), EXPLAIN_BATCH):
        part = slice(start, start + EXPLAIN_BATCH)
        relevance, method = input_relevance(model, x[part], y[part])
        shares.append(artifact_relevance(relevance, mask[part], dilation=1))
        first_relevance = relevance if first_relevance is None else first_relevance
    metrics = {"artifact_relevance": float(torch.cat(shares).mean())}
    if heatmap_path is not None:
        heatmap_grid(x[:8], mask[:8], first_relevance[:8], heatmap_path)
    try:
        cav = fit_artifact_cav(model, dataset.splits["train"], attacked, cav_kind, batch_size)
    except ValueError:  # no artifact (or no clean) training sample in the attacked class
        return metrics, {"explanation": method}
    metrics["tcav_score"] = tcav_score(model, x, cav, attacked, batch_size)
    with_artifact = latent_activations(model, x, batch_size, pool=True)
    without = latent_activations(model, clean.x[chosen], batch_size, pool=True)
    difference = (with_artifact - without).mean(0)
    if float(difference.norm()) > 0:
        metrics["cav_alignment"] = cav_alignment(cav, difference)
    return metrics, {"explanation": method}
