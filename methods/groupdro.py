"""GroupDRO: group distributionally robust optimisation (Sagawa, Koh, Hashimoto & Liang,
ICLR 2020, "Distributionally Robust Neural Networks for Group Shifts").

Minimises the worst expected loss over groups (class x bias attribute) with the paper's
online algorithm: group weights ``q`` on the simplex, updated every step by exponentiated
gradient ascent on the groups' mean losses in the batch,
``q_g <- q_g * exp(eta * loss_g)``, renormalised; the model then descends
``sum_g q_g * loss_g`` with the updated ``q``. A group that keeps a high loss gains weight
until the model fits it, so the few bias-conflicting groups are not drowned by the
bias-aligned ones.

Paper (Algorithm 1) and the authors' code (kohpangwei/group_DRO@cbbc1c5; ``run_expt.py:31,37,39``
for the defaults below), and the choices here:
- the update uses the batch's per-group mean losses; a group absent from the batch has
  loss 0 there (its weight keeps its value but shrinks relative to the others), as in
  the code; ``eta`` = 0.01 is the code's default ``robust_step_size``;
- ``adjustment`` C (the paper's generalisation adjustment, Section 3.3) adds
  ``C / sqrt(n_g)`` to each group's loss in the weight update only (``n_g`` = training
  samples of the group); 0 (off) by default as in the code;
- ``q`` starts uniform over the groups that have training samples. The paper's datasets
  have every group in training; here (e.g. coloured digits) most of the classes x colours
  cells are empty, and a weight on a group that never appears would only scale the loss
  down. Empty groups keep weight 0;
- ``sampling``: ``uniform`` shuffles as vanilla does (the algorithm as written);
  ``balanced`` draws every sample with probability ~ 1/n_g (with replacement), the
  code's ``--reweight_groups`` option, so that every batch holds rare groups;
- the paper pairs GroupDRO with strong L2 regularisation or early stopping: those are
  the runner's ``weight_decay`` and ``selection`` keys, not hparams of the method.
``q`` is method state: it is saved in each epoch's checkpoint and restored on resume.
"""

from __future__ import annotations

import torch
from torch import Tensor

from debiasbench.core.errors import UserError
from debiasbench.core.hparams import Choice, HParam, LogUniform
from debiasbench.contract.method import Batch, Method, RunContext
from debiasbench.train.samplers import ImportanceSampler
from debiasbench.models.latent import LatentModel


def group_losses(per_sample: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Mean loss of every group in the batch [G] (0 where absent) and the counts [G]."""
    counts = torch.bincount(groups, minlength=num_groups)
    sums = torch.zeros(num_groups, dtype=per_sample.dtype, device=per_sample.device)
    sums = sums.index_add(0, groups, per_sample)
    return sums / counts.clamp_min(1).to(per_sample.dtype), counts


def update_group_weights(q: Tensor, losses: Tensor, eta: float, adjustment: Tensor | None = None) -> Tensor:
    """One exponentiated-gradient step: ``q * exp(eta * (loss + adjustment))``, normalised.

    Computed in log space (a softmax), so repeated steps neither overflow nor lose the
    groups' relative weights; groups at weight 0 stay at 0.
    """
    step = losses.detach().to(q.dtype)
    if adjustment is not None:
        step = step + adjustment
    return torch.softmax(q.log() + eta * step, dim=0)


class GroupDRO(Method):
    name = "groupdro"
    description = "Minimise the worst group's loss with online exponentiated-gradient group weights (GroupDRO)."
    requires = frozenset({"bias_labels"})
    hparams = {
        "eta": HParam(0.01, LogUniform(1e-3, 1e-1), low=0.0, help="step size of the group-weight update"),
        "adjustment": HParam(0.0, Choice((0.0, 1.0, 2.0, 4.0)), low=0.0,
                             help="generalisation adjustment C: C / sqrt(n_g) added in the update"),
        "sampling": HParam("uniform", choices=("uniform", "balanced"),
                           help="plain shuffle, or draws ~ 1/group size (code's reweight_groups)"),
    }

    q: Tensor  # group weights on the simplex [G], on the device
    adjust: Tensor  # C / sqrt(n_g) per group [G] (0 for empty groups)
    counts: Tensor  # training samples per group [G]

    def prepare(self, ctx: RunContext) -> None:
        train, num_bias = ctx.dataset.splits["train"], ctx.dataset.num_bias
        self.num_bias = num_bias
        self.num_groups = ctx.dataset.num_classes * num_bias
        groups = train.groups(num_bias)
        if bool((groups < 0).any()):
            raise UserError(f"groupdro: {int((groups < 0).sum())} training samples of "
                            f"{ctx.config.dataset!r} have no bias label; GroupDRO needs one for every sample")
        self.train_groups = groups
        self.counts = torch.bincount(groups, minlength=self.num_groups).float()
        present = self.counts > 0
        self.q = present.float() / present.sum()
        self.adjust = torch.where(present, self.hp["adjustment"] / self.counts.clamp_min(1).sqrt(),
                                  torch.zeros_like(self.counts))
        ctx.log_metrics({"groupdro_train_groups": float(present.sum())})

    def sampler(self, ctx: RunContext) -> ImportanceSampler | None:
        if self.hp["sampling"] == "uniform":
            return None
        weights = 1.0 / self.counts[self.train_groups]
        return ImportanceSampler(weights / weights.sum())

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(batch.x)
        per_sample = self.cross_entropy(logits.float(), batch.y, reduction="none")
        groups = batch.y * self.num_bias + batch.bias
        losses, _ = group_losses(per_sample, groups, self.num_groups)
        with torch.no_grad():
            self.q = update_group_weights(self.q, losses, self.hp["eta"], self.adjust)
        robust = (self.q * losses).sum()
        return robust, {"ce": per_sample.mean().detach(), "q_max": self.q.max(),
                        "worst_group_loss": losses.max().detach()}

    def state_dict(self) -> dict[str, Tensor]:
        return {"q": self.q}

    def load_state_dict(self, state) -> None:
        if "q" in state:
            self.q = state["q"].to(self.q.device, self.q.dtype)
