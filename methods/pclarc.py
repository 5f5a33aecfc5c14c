"""P-ClArC: Projective ClArC (Anders et al., 2022), as the RR-ClArC authors run it.

At test time every latent activation is moved along the artifact CAV to the mean length of
clean samples (of the attacked class, as in the authors' code), removing the artifact
direction from what the rest of the network sees. Where the CAV also carries the attacked
class's own evidence (as on ``synthetic_artifacts``), moving other classes' samples *up* to
that length makes them look like the attacked class; ``shift=down`` only removes excess
artifact evidence (samples above the clean length), a variant beyond the paper.

Before that, the head is fine-tuned like every other ClArC correction (``finetune`` scope,
10 epochs) on the run's cross-entropy alone and *without* the projection. This is the authors'
protocol (frederikpahde/rrclarc@222d917):

- ``model_training/correction_methods/clarc.py:114-130``: ``PClarc`` removes its
  projection hook before training ("No hook should be active for training"), so the
  fine-tune is the unchanged model's loss, ``LitClassifier``'s ``self.loss``
  (``base_correction_method.py:21-23``), the run's (class-weighted) cross-entropy
  (``model_training/training_utils.py:14-16``, ``start_model_correction.py:141``).
- ``prepare_for_evaluation.py:30-38`` puts the hook back for evaluation only
  (``clarc.py:132-141``: the max-pooled length moved to the clean mean length).
- What trains: the ``Freeze`` callback (``base_correction_method.py:108-129``) freezes every
  Conv2d and BatchNorm2d, so on their VGG-16 / ResNet-18 / EfficientNet-B0 with the latent at
  the last conv only the linear layers after it train, which is what both the default
  ``after_latent`` and ``finetune: linear`` train on those networks.
- How long: ``num_epochs`` 10 for ISIC, Bone Age and ImageNet, 1 for CelebA
  (``config_files/config_generator_correcting_{isic_attacked,bone_attacked,imagenet_attacked,
  celeba}.py``, ``_base_config`` / ``base_config``); a per-dataset setting shared by every
  correction there, not a P-ClArC rule, so set ``epochs: 1`` on CelebA to follow them.
- After training the authors re-fit the CAV on the fine-tuned model
  (``start_model_correction.py:218-234``, ``clarc.py:118-124``); with the layers up to the
  latent frozen the latent, and so the CAV, is unchanged, so fitting it once before training
  (``prepare``) gives the same projection.
- Deviation: the per-epoch validation here is of the projected model (``eval_model``), the
  authors' of the unprojected one (the hook is off while training); both evaluate the last
  epoch's weights (their ``ckpt_path_corrected`` is ``last.ckpt``; ``selection: last`` here).

``epochs: 0`` is the paper's training-free P-ClArC: nothing is fine-tuned and the vanilla
model is evaluated with the projection.
"""

from __future__ import annotations

from torch import Tensor, nn

from debiasbench.methods.clarc import ClArCMethod, shift_to_length
from debiasbench.core.hparams import HParam
from debiasbench.contract.method import Batch
from debiasbench.models.latent import LatentModel


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
    description = ("Fine-tune the head on CE alone, then project the artifact CAV out of the latent "
                   "at test time (P-ClArC, as the RR-ClArC authors run it; epochs: 0 skips the fine-tune).")
    hparams = {
        **ClArCMethod.hparams,
        "shift": HParam("both", choices=("both", "down"),
                        help="both: every sample to the clean length (paper, authors' code); "
                             "down: only samples above it"),
    }

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The unprojected model's cross-entropy: the projection is only for evaluation."""
        ce = self.cross_entropy(model(batch.x), batch.y)
        return ce, {"ce": ce.detach()}

    def eval_model(self, model: LatentModel) -> nn.Module:
        return ProjectedModel(model, self.cav, self.clean_length, only_down=self.hp["shift"] == "down")
