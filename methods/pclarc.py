"""P-ClArC: Projective ClArC (Anders et al., 2022).

No training: at test time every latent activation is moved along the artifact CAV to the
mean length of clean samples (of the attacked class, as in the authors' code), removing the
artifact direction from what the rest of the network sees. Where the CAV also carries the
attacked class's own evidence (as on ``synthetic_artifacts``), moving other classes' samples
*up* to that length makes them look like the attacked class; ``shift=down`` only removes
excess artifact evidence (samples above the clean length), a variant beyond the paper.
"""

from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn

from debiasbench.clarc import ClArCMethod, shift_to_length
from debiasbench.hparams import HParam
from debiasbench.method import Batch
from debiasbench.models import LatentModel


class ProjectedModel(LatentModel):
    """The same network with the latent moved to ``target`` along ``cav`` in every forward."""

    def __init__(self, model: LatentModel, cav: Tensor, target: Tensor, only_down: bool = False):
        super().__init__(model.net, model.latent_layer, model.num_classes, model.arch)
        self.cav, self.target, self.only_down = cav, target, only_down

    def project(self, latent: Tensor) -> Tensor:
        return shift_to_length(latent, self.cav, self.target, self.only_down)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward_with_latent(x, edit=self.project)[0]

    def forward_with_latent(self, x: Tensor, edit=None):
        if edit is None:
            return super().forward_with_latent(x, edit=self.project)
        return super().forward_with_latent(x, edit=lambda a: edit(self.project(a)))


class PClArC(ClArCMethod):
    name = "pclarc"
    description = "Project the artifact CAV out of the latent at test time; no training (P-ClArC)."
    hparams = {
        "cav_kind": ClArCMethod.hparams["cav_kind"],
        "shift": HParam("both", choices=("both", "down"),
                        help="both: every sample to the clean length (paper, authors' code); "
                             "down: only samples above it"),
    }
    train_defaults = {"epochs": 0}

    def trainable_parameters(self, model: LatentModel) -> Iterable[nn.Parameter]:
        return []

    def loss(self, model: LatentModel, batch: Batch):
        raise RuntimeError("P-ClArC does not train; it corrects the model in eval_model")

    def eval_model(self, model: LatentModel) -> nn.Module:
        return ProjectedModel(model, self.cav, self.clean_length, only_down=self.hp["shift"] == "down")
