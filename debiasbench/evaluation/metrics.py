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
from pathlib import Path
from typing import Callable, ContextManager, Mapping

import torch
from torch import Tensor, nn

from debiasbench.data.dataset import BenchmarkDataset, Split, eval_batch_for, input_batches  # noqa: F401  (eval_batch_for: public here too)
from debiasbench.models.networks import LatentModel, eval_mode

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


#: The per-epoch validation evaluates the views whose name starts with this: ``val`` and
#: its clean / biased views.
VALIDATION_PREFIX = "val"


def evaluate(model: nn.Module, dataset: BenchmarkDataset, batch_size: int | None = None,
             prefixes: tuple[str, ...] | None = None,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext,
             facts: bool = True, validation: Mapping[str, float] | None = None) -> dict[str, float]:
    """Metrics on every evaluation view whose name starts with one of ``prefixes``; the
    splits' group sizes too unless ``facts`` is false.

    ``validation``: what the per-epoch validation (``prefixes=(VALIDATION_PREFIX,)``,
    ``facts=False``) returned for this very model, i.e. the selected epoch's, whose
    weights the final model has. Those views are then not predicted again: the same
    weights on the same images give the same predictions, and a tiny run spent as long
    re-predicting them as on an epoch of validation. Their group sizes are still added.

    Metrics that are undefined on a view (no bias labels, no conflicting sample) are
    left out rather than reported as NaN.
    """
    metrics: dict[str, Tensor] = {}
    with eval_mode(model):
        for name, split in dataset.evaluation_views().items():
            if prefixes is not None and not name.startswith(prefixes):
                continue
            full = name in NATURAL_SPLITS
            if validation is not None and name.startswith(VALIDATION_PREFIX):
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
    reused = {k: v for k, v in validation.items()
              if k.startswith(VALIDATION_PREFIX) and (prefixes is None or k.startswith(prefixes))}
    return {**reused, **computed}


#: Samples explained per LRP batch at 64x64 pixels and below (one backward each); larger
#: images take proportionally fewer, since LRP's hooks keep several copies of every
#: activation (64 at 224 px would need more memory than a training step).
EXPLAIN_BATCH = 64


def explain_batch_for(sample_shape: tuple[int, ...]) -> int:
    """``EXPLAIN_BATCH`` images of up to 64x64 pixels, proportionally fewer above (5 at 224 px)."""
    return max(1, min(EXPLAIN_BATCH, EXPLAIN_BATCH * 64 * 64 // max(math.prod(sample_shape[1:]), 1)))

#: At most this many biased test samples of the attacked class are explained (a seeded
#: sample, logged as ``relevance_samples``): LRP costs a backward per batch, and the
#: share's standard error at 512 samples is already small against method differences.
RELEVANCE_SAMPLES = 512


def relevance_sample(candidates: Tensor, size: int = RELEVANCE_SAMPLES, seed: int = 0) -> Tensor:
    """Sorted positions of at most ``size`` of the ``candidates`` [N] bool, a sample seeded
    by ``seed`` alone, so every method of a comparison is explained on the same images."""
    chosen = candidates.nonzero().squeeze(1)
    if len(chosen) <= size:
        return chosen
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(chosen), generator=generator)[:size].to(chosen.device)
    return chosen[keep].sort().values


#: Which biased test samples ``tcav_score`` is measured on: ``all_classes`` (default, the
#: authors') or ``attacked_class`` (this benchmark's earlier population: the explained ones).
TCAV_POPULATIONS: tuple[str, ...] = ("all_classes", "attacked_class")


def tcav_sample(biased: Split, attacked_class: int, population: str = "all_classes",
                size: int = RELEVANCE_SAMPLES) -> Tensor:
    """Sorted positions in the biased test view of the samples TCAV is measured on.

    ``all_classes`` follows frederikpahde/rrclarc@222d917 experiments/evaluation/measure_tcav.py:124-142:
    the test set rebuilt with the artifact inserted into every sample of every class
    (``p_artifact=1.0``, ``attacked_classes=all_classes``), and every sample carrying the
    artifact scored, whatever its class; here that is the biased view (the artifact on
    every test image). ``attacked_class``: only those of the attacked class. At most
    ``size`` of them, a sample seeded like ``relevance_sample`` (the same for every method).
    """
    if population == "all_classes":
        candidates = torch.ones_like(biased.y, dtype=torch.bool)
    elif population == "attacked_class":
        candidates = biased.y == attacked_class
    else:
        raise ValueError(f"unknown TCAV population {population!r}; allowed: {', '.join(TCAV_POPULATIONS)}")
    return relevance_sample(candidates, size)


def artifact_metrics(model: LatentModel, dataset: BenchmarkDataset, batch_size: int | None = None,
                     heatmap_path: Path | None = None, cav_kind: str = "pattern",
                     sample_size: int = RELEVANCE_SAMPLES, *, relevance_mask: str = "blur",
                     cav_samples: str = "predicted",
                     tcav_population: str = "all_classes") -> tuple[dict[str, float], dict[str, str]]:
    """``artifact_relevance``, ``tcav_score`` and ``cav_alignment`` of ``model``, and the
    explanation method used (a run param), for datasets with artifact masks.

    ``artifact_relevance`` and ``cav_alignment`` look at the biased test view's samples of
    the attacked class, i.e. images the artifact points to their own class (at most
    ``sample_size`` of them, a seeded sample; their number is the metric
    ``relevance_samples``), as the authors' artifact relevance does (the artifact samples of
    the attacked classes, explained for their label; frederikpahde/rrclarc@222d917
    experiments/evaluation/artifact_relevance.py:68-72,112-135).
    ``artifact_relevance`` is the mean share of relevance inside the artifact region
    (``debiasbench.evaluation.relevance.artifact_relevance``: the magnitude of the channel-summed
    relevance, the mask grown by ``relevance_mask``, default the authors' blur).
    ``tcav_score`` is measured on the samples ``tcav_sample`` draws for ``tcav_population``
    (default: the biased test samples of every class, as the authors do; their number is
    ``tcav_samples``): the share whose attacked-class logit rises along the artifact CAV,
    fitted on the evaluated model's training latents (of ``cav_kind``, on the samples of
    the ``cav_samples`` rule, or every sample of the class where the predicted ones lack a
    group, as ClArC's ``prepare`` does; the run param ``eval_cav_samples`` says which), left
    out where no sample's logit moves along it.
    ``cav_alignment`` is the cosine of that CAV with the true latent direction of the
    artifact, the mean difference of max-pooled latents of the explained test images with
    and without the artifact.
    """
    from debiasbench.evaluation.cav import (NoPredictedGroup, cav_alignment, fit_artifact_cav, latent_activations,
                                 tcav_score)
    from debiasbench.evaluation.relevance import artifact_relevance, heatmap_grid, input_relevance

    attacked = getattr(dataset, "attacked_class", None)
    biased, clean = dataset.views.get("test_biased"), dataset.views.get("test_clean")
    if ("artifact_masks" not in dataset.provides or attacked is None or biased is None
            or clean is None or not biased.has_mask):
        return {}, {}
    chosen = relevance_sample(biased.y == attacked, sample_size)
    if chosen.numel() == 0:
        return {}, {}
    explained = biased.subset(chosen)
    shares, first, method = [], None, ""
    for batch in explained.batches(explain_batch_for(explained.sample_shape)):
        relevance, method = input_relevance(model, batch.x, batch.y)
        mask = batch.mask
        assert mask is not None  # biased.has_mask
        shares.append(artifact_relevance(relevance, mask, relevance_mask))
        if first is None:
            first = (batch.x[:8], mask[:8], relevance[:8])
    metrics = {"artifact_relevance": float(torch.cat(shares).mean()), "relevance_samples": float(len(chosen))}
    if heatmap_path is not None and first is not None:
        heatmap_grid(*first, heatmap_path)
    params = {"explanation": method, "eval_cav_samples": cav_samples}
    try:
        try:
            cav = fit_artifact_cav(model, dataset.splits["train"], attacked, cav_kind, batch_size, cav_samples)
        except NoPredictedGroup:  # as ClArC's prepare: every sample of the class instead
            params["eval_cav_samples"] = "all"
            cav = fit_artifact_cav(model, dataset.splits["train"], attacked, cav_kind, batch_size, "all")
    except ValueError:  # no artifact (or no clean) training sample in the attacked class
        return metrics, {"explanation": method}
    scored = tcav_sample(biased, attacked, tcav_population, sample_size)
    tcav = tcav_score(model, biased.subset(scored), cav, attacked, batch_size)
    if not math.isnan(tcav):
        metrics["tcav_score"] = tcav
    metrics["tcav_samples"] = float(len(scored))
    with_artifact = latent_activations(model, explained, batch_size, pool=True)
    without = latent_activations(model, clean.subset(chosen), batch_size, pool=True)
    difference = (with_artifact - without).mean(0)
    if float(difference.norm()) > 0:
        metrics["cav_alignment"] = cav_alignment(cav, difference)
    return metrics, params
