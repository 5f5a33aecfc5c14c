"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

``FL(p_t) = -(1 - p_t)^gamma * log(p_t)``: cross-entropy scaled down on samples the model
already classifies well. Under a shortcut the well-classified samples are mostly the
bias-aligned ones, so focal loss shifts weight to the hard, often bias-conflicting,
samples without any bias annotation: a cheap baseline next to methods that re-weight by
an explicit bias model (LfF, JTT, PGD). ``gamma = 0`` is the run's cross-entropy.

The paper's class-balancing factor ``alpha_t`` is the run's class weights (run key
``class_weights``, e.g. ``inverse_frequency``, which the real datasets' protocols ask for):
the per-sample terms are reduced with ``Method.class_weighted_mean``, the reduction of
``Method.cross_entropy``, so focal loss is weighted as every other method of a comparison.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from debiasbench.core.hparams import Uniform
from debiasbench.contract.method import Batch, HParam, Method
from debiasbench.models.latent import LatentModel


def focal_terms(logits: Tensor, target: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Per-sample focal loss and per-sample cross-entropy (for logging), unweighted.

    The modulating factor is differentiated through, as in the paper. ``1 - p_t`` is
    clamped away from 0 so that gamma < 1 has a finite gradient at p_t = 1.
    """
    log_pt = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    weight = (1 - log_pt.exp()).clamp_min(1e-12).pow(gamma)
    return -weight * log_pt, -log_pt


def focal_loss(logits: Tensor, target: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Mean focal loss without class weights and the per-sample cross-entropy."""
    terms, ce = focal_terms(logits, target, gamma)
    return terms.mean(), ce


class FocalLoss(Method):
    name = "focal_loss"
    description = "Focal loss: cross-entropy down-weighted on well-classified samples (Lin et al. 2017)."
    hparams = {
        "gamma": HParam(2.0, Uniform(0.5, 5.0), low=0.0, high=10.0,
                        help="focusing parameter; 0 is cross-entropy (paper's default 2)"),
    }

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        terms, ce = focal_terms(model(batch.x), batch.y, self.hp["gamma"])
        # weighted by the run's class weights (alpha_t) as self.cross_entropy weights the CE
        return self.class_weighted_mean(terms, batch.y), {"ce": ce.mean().detach()}
