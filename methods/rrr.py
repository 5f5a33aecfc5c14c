"""RRR: Right for the Right Reasons (Ross et al., IJCAI 2017).

``CE + lambda * mean_i ||mask_i * d(sum_k log p_k(x_i)) / dx_i||^2``: input gradients of
the summed log-probabilities are penalised inside the artifact mask, so the model stops
being sensitive to the artifact's pixels. Needs per-sample artifact masks. Used, as in
the RR-ClArC paper, as a post-hoc correction of the vanilla model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from debiasbench.clarc import ClArCMethod
from debiasbench.hparams import HParam, LogUniform
from debiasbench.method import Batch
from debiasbench.models import LatentModel


class RRR(ClArCMethod):
    name = "rrr"
    description = "Penalise input gradients inside the artifact mask (Right for the Right Reasons)."
    requires = frozenset({"artifact_masks", "pretrained_checkpoint"})
    hparams = {
        "finetune": ClArCMethod.hparams["finetune"],
        "lambda": HParam(10.0, LogUniform(1e-2, 1e5), low=0.0, help="weight of the input-gradient penalty"),
    }

    def prepare(self, ctx) -> None:
        """RRR needs no CAV."""

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch.x.detach().requires_grad_(True)
        logits = model(x)
        ce = F.cross_entropy(logits, batch.y)
        (grad,) = torch.autograd.grad(F.log_softmax(logits, 1).sum(), x, create_graph=True)
        penalty = (grad * batch.mask).pow(2).flatten(1).sum(1).mean()
        return ce + self.hp["lambda"] * penalty, {"ce": ce.detach(), "penalty": penalty.detach()}
