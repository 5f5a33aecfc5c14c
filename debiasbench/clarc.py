"""What the ClArC family shares: a CAV of the artifact at the latent layer, the mean
projections of clean and artifact samples on it, and which layers a correction trains.

Facts from the RR-ClArC authors' code that shape this module: the CAV is fitted on
max-pooled latent activations of the attacked class's training samples (artifact = 1,
clean = 0); a sample's "length" along the CAV is the dot product of its max-pooled
activation with the CAV; A-/P-ClArC shift every spatial position of the activation by
the same multiple of the CAV so that this length becomes a target length.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from debiasbench.cav import CAV_KINDS, fit_cav, latent_activations, pool_activations
from debiasbench.hparams import Choice, HParam
from debiasbench.method import Method, RunContext
from debiasbench.models import LatentModel

FINETUNE_SCOPES = ("after_latent", "linear", "all")


def project_length(latent: Tensor, cav: Tensor) -> Tensor:
    """Per-sample length along ``cav``: <max-pooled activation, cav>  -> [N]."""
    return pool_activations(latent) @ cav.to(latent.dtype)


def shift_to_length(latent: Tensor, cav: Tensor, target: Tensor | float, only_down: bool = False) -> Tensor:
    """Move every sample along ``cav`` so that its length becomes ``target``.

    The same shift is added at every spatial position (the max-pooled length then moves
    by exactly the shift, since ``cav`` has unit length). With ``only_down`` samples
    already below ``target`` are left alone (only excess artifact evidence is removed).
    """
    cav = cav.to(latent.dtype)
    shift = target - project_length(latent, cav)
    if only_down:
        shift = shift.clamp(max=0)
    shape = (-1, cav.numel()) + (1,) * (latent.dim() - 2)
    return latent + shift.view(-1, *([1] * (latent.dim() - 1))) * cav.view(shape)


class ClArCMethod(Method):
    """Base of post-hoc corrections that model the artifact as a CAV.

    Starts from the vanilla checkpoint of the same dataset / model / seed (``requires``
    ``pretrained_checkpoint``) and by default fine-tunes only the layers after the latent
    layer (``finetune``: ``after_latent``; ``linear`` trains only linear layers, which is
    what the authors' code does by freezing every conv and BatchNorm layer; ``all``).
    Fine-tuning defaults: 10 epochs as in the authors' setup; they use SGD (momentum 0.9,
    lr 1e-4) for VGG / ResNet and Adam for EfficientNet. On the small built-in datasets
    Adam at lr 1e-3 corrects without costing clean accuracy (README, "Results"), so it is
    the default here; set ``optimizer``/``lr`` to reproduce theirs.
    """

    requires = frozenset({"artifact_labels", "pretrained_checkpoint"})
    hparams = {
        "cav_kind": HParam("pattern", Choice(CAV_KINDS), choices=CAV_KINDS,
                           help="how the artifact CAV is fitted"),
        "finetune": HParam("after_latent", choices=FINETUNE_SCOPES, help="which layers are trained"),
    }
    train_defaults = {"epochs": 10, "lr": 1e-3, "optimizer": "adam", "schedule": "constant"}

    cav: Tensor
    clean_length: Tensor
    artifact_length: Tensor

    def prepare(self, ctx: RunContext) -> None:
        """Fit the CAV on the attacked class's training samples and their mean lengths."""
        train = ctx.dataset.splits["train"]
        attacked = ctx.dataset.attacked_class
        chosen = train.y == attacked if attacked is not None else torch.ones_like(train.y, dtype=torch.bool)
        labels = train.artifact[chosen]
        acts = latent_activations(ctx.model, train.subset(chosen.nonzero().squeeze(1)),
                                  ctx.config.eval_batch_size, pool=True)
        self.cav = fit_cav(acts, labels.long(), kind=self.hp["cav_kind"]).to(ctx.device)
        lengths = acts.to(self.cav.dtype) @ self.cav
        self.clean_length = lengths[~labels].mean()
        self.artifact_length = lengths[labels].mean()
        ctx.log_metrics({"cav_clean_length": float(self.clean_length),
                         "cav_artifact_length": float(self.artifact_length)})

    def trainable_parameters(self, model: LatentModel) -> Iterable[nn.Parameter]:
        scope = self.hp["finetune"]
        if scope == "all":
            return model.parameters()
        if scope == "linear":
            return [p for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters()]
        example = torch.zeros(2, *self.ctx.dataset.sample_shape, device=self.ctx.device)  # shapes only
        return model.parameters_after_latent(example)
