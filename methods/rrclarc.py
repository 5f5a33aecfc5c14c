"""RR-ClArC: Right-Reason ClArC (Dreyer, Pahde et al., AAAI 2024).

Fine-tunes the vanilla model with ``CE + lambda * mean_i <g_i, v>^2``, where ``v`` is the
artifact's CAV and ``g_i`` the gradient of a target output with respect to sample i's
latent activation, averaged over space and taken with ``create_graph=True`` so the
penalty itself is differentiated. A model whose output does not change along ``v`` cannot
use the artifact. ``lambda`` spans decades (the authors sweep it), so it is searched
log-uniformly. The squared dot product ("l2") is the paper's penalty; the authors' code
also offers l1 / cosine aggregations, not exposed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from debiasbench.clarc import ClArCMethod
from debiasbench.hparams import Choice, HParam, LogUniform
from debiasbench.method import Batch
from debiasbench.models import LatentModel

TARGETS = ("random_logits", "all_logits", "max_logit", "target_logit", "logprobs")


def _differentiable(latent: Tensor) -> Tensor:
    """The latent as a graph node even when every layer before it is frozen."""
    return latent if latent.requires_grad else latent.detach().requires_grad_(True)


class RRClArC(ClArCMethod):
    name = "rrclarc"
    description = "Penalise the latent gradient along the artifact CAV (RR-ClArC)."
    hparams = {
        **ClArCMethod.hparams,
        "lambda": HParam(1e4, LogUniform(1.0, 1e8), low=0.0, help="weight of the gradient penalty"),
        "target": HParam("random_logits", Choice(TARGETS), choices=TARGETS,
                         help="output whose latent gradient is penalised"),
    }

    def target_output(self, logits: Tensor, y: Tensor) -> Tensor:
        """The scalar per sample whose gradient must not point along the CAV."""
        target = self.hp["target"]
        if target == "random_logits":  # every class, with a random sign per sample and class
            signs = torch.randint(0, 2, logits.shape, generator=self.ctx.generator,
                                  device=logits.device).to(logits.dtype) * 2 - 1
            return (logits * signs).sum(1)
        if target == "all_logits":
            return logits.sum(1)
        if target == "max_logit":
            return logits.max(1).values
        if target == "target_logit":
            return logits.gather(1, y[:, None]).squeeze(1)
        return F.log_softmax(logits, 1).mean(1)  # logprobs

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, latent = model.forward_with_latent(batch.x, edit=_differentiable)
        ce = F.cross_entropy(logits, batch.y)
        output = self.target_output(logits, batch.y).sum()
        (grad,) = torch.autograd.grad(output, latent, create_graph=True)
        pooled = grad.flatten(2).mean(2) if grad.dim() > 2 else grad
        penalty = (pooled @ self.cav.to(pooled.dtype)).pow(2).mean()
        return ce + self.hp["lambda"] * penalty, {"ce": ce.detach(), "penalty": penalty.detach()}
