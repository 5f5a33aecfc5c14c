"""A-ClArC: Augmentative ClArC (Anders et al., 2022).

During fine-tuning every sample's latent activation is moved along the artifact CAV to
the mean length of artifact samples, so that all training samples "carry" the artifact
and it stops separating classes; the model is unchanged at test time. The shift is the
authors' ``AClarc`` hook (frederikpahde/rrclarc@222d917
``model_training/correction_methods/clarc.py:144-158``): to the artifact samples' mean
length (``clarc.py:94``), active while training; what the CAV and the lengths are fitted
on, and which layers train, is ``ClArCMethod``'s (``debiasbench/clarc.py``).
"""

from __future__ import annotations

from torch import Tensor

from debiasbench.methods.clarc import ClArCMethod, shift_to_length
from debiasbench.contract.method import Batch
from debiasbench.models.latent import LatentModel


class AClArC(ClArCMethod):
    name = "aclarc"
    description = "Fine-tune with every latent shifted to the artifact's mean projection (A-ClArC)."

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, _ = model.forward_with_latent(
            batch.x, edit=lambda a: shift_to_length(a, self.cav, self.artifact_length))
        ce = self.cross_entropy(logits, batch.y)
        return ce, {"ce": ce.detach()}
