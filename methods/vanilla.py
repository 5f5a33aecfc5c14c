"""Vanilla training (ERM): plain cross-entropy.

The baseline every method is compared against, and the checkpoint post-hoc corrections
(the ClArC family) start from.
"""

from __future__ import annotations

from torch import Tensor

from debiasbench.contract.method import Batch, Method
from debiasbench.models.latent import LatentModel


class Vanilla(Method):
    name = "vanilla"
    description = "Empirical risk minimisation with cross-entropy (the baseline)."

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch.x)
        loss = self.cross_entropy(logits, batch.y)
        return loss, {"ce": loss.detach()}
