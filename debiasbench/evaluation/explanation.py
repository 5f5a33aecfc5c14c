"""The explanation phase of a run: how much of a trained model's explanation falls on the
artifact, whether its output moves along the artifact's CAV, and how well that CAV
matches the artifact's true latent direction.

One call, ``artifact_metrics``, on a bounded sample of test images (``explain_samples``,
at most ``RELEVANCE_SAMPLES`` by default, the same seeded sample for every method of a
comparison). Which CAV it fits is the method's choice (``Method.artifact_cav``: the ClArC
family evaluates with the CAV kind and sample rule it trains with; every other method
gets ``ArtifactCav()``), so the runner names no method and no method hyper-parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from debiasbench.data.dataset import BenchmarkDataset, Split
from debiasbench.models.latent import LatentModel


@dataclass(frozen=True)
class ArtifactCav:
    """The artifact CAV the explanation phase fits on the evaluated model's training latents:
    its ``kind`` (``debiasbench.evaluation.cav.CAV_KINDS``) and the training ``samples`` it is
    fitted on (``debiasbench.evaluation.cav.CAV_SAMPLES``)."""

    kind: str = "pattern"
    samples: str = "predicted"


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
    ``relevance_samples``; the standard error of its mean is ``artifact_relevance_se``), as
    the authors' artifact relevance does (the artifact samples of
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
    shares: list[Tensor] = []
    first, method = None, ""
    for batch in explained.batches(explain_batch_for(explained.sample_shape)):
        relevance, method = input_relevance(model, batch.x, batch.y)
        mask = batch.mask
        assert mask is not None  # biased.has_mask
        shares.append(artifact_relevance(relevance, mask, relevance_mask))
        if first is None:
            first = (batch.x[:8], mask[:8], relevance[:8])
    share = torch.cat(shares).float()
    metrics = {"artifact_relevance": float(share.mean()), "relevance_samples": float(len(chosen))}
    if len(share) > 1:  # the standard error of the mean share over the explained images
        metrics["artifact_relevance_se"] = float(share.std() / math.sqrt(len(share)))
    if heatmap_path is not None and first is not None:
        names = getattr(dataset, "classes", None)  # image-folder datasets name their classes
        label = f"{names[attacked]} ({attacked})" if names and attacked < len(names) else str(attacked)
        heatmap_grid(*first, heatmap_path, class_label=label, view="test_biased")
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
