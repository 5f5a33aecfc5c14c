"""LfF: Learning from Failure (Nam et al., NeurIPS 2020, arXiv 2007.02561).

Two models train on the same batches: a *biased* model with generalised cross-entropy
(GCE, ``q``), which amplifies its reliance on the easy shortcut, and the *debiased* one
(the run's model), whose per-sample cross-entropy is weighted by the relative difficulty
``W = L_b / (L_b + L_d)``: high where the biased model fails and the debiased one does
not yet, i.e. on bias-conflicting samples. No bias labels are needed. The model
evaluated is the debiased one.

``L_b`` and ``L_d`` are per-sample exponential moving averages (``momentum``) of the two
models' cross-entropy over the iterations that saw the sample, each divided by the
largest average among the training samples of the same class (``normalise=class``). The
paper states W with the two cross-entropies; the moving averages (momentum 0.7) and the
class-wise normalisation follow the authors' code (alinlab/LfF@e66796e ``train.py:136-137``
EMA with alpha 0.7, ``train.py:216-222`` division by the class maximum and the weight):
a sample's first update sets its average to the loss itself (``util.py:42``), and the
class maximum runs over the whole training split (``util.py:45``).
``normalise=none`` skips the division.
The biased model's GCE is the code's (alinlab/LfF@e66796e ``module/loss.py:20-24``):
cross-entropy weighted by ``q p_y^q``, whose gradient is ``q`` times that of the paper's
``(1 - p_y^q) / q`` (``generalized_cross_entropy(..., scale=q)``; PGD uses the same). The
code trains with Adam (``config.py:37-39``), which absorbs the factor; with
``optimizer=sgd`` here it is a ``q`` times smaller step for the biased model.

On colored_digits the gain is small: with short training LfF ties vanilla; with longer
training and smaller batches it was ahead on every seed on version 1 of the data and ties
on version 2 (see docs/results.md, "JTT and LfF here"). With so few conflicting digits
both models fit the colour at about the same pace, so aligned samples keep weights close
to those of conflicting ones (the paper's Colored MNIST has 60,000 digits and trains 100
epochs).

Why the biased model has its own optimiser, stepped inside ``loss``: the runner builds
its optimiser from ``trainable_parameters(model)`` filtered to the run model's own
parameters, so the biased model cannot join it without making it a submodule of the run
model, which would put it into the evaluated model, its checkpoint and the logged
weights. Returning the summed losses and stepping later would lose the last batch's
gradient and lag the biased model one step. So ``loss`` takes the biased model's step
itself (after both forward passes, as the code does: both models see the batch before
either updates), with the run's optimiser kind, lr, weight decay, schedule and gradient
clipping, outside autocast; it returns only the debiased loss to the runner. The biased
model, its optimiser and schedule and the moving averages are in ``state_dict`` so a
resumed run ends as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from debiasbench.train.auxiliary import fresh_model
from debiasbench.core.hparams import HParam, OpenFloat, Uniform
from debiasbench.train.loop import lay_out, run_loader, run_steps
from debiasbench.train.losses import generalized_cross_entropy
from debiasbench.contract.method import Batch, Method, RunContext
from debiasbench.models.latent import LatentModel
from debiasbench.train.step import TrainingStep

#: Random stream of the biased model's initialisation.
BIASED_INIT = "lff.biased_init"
_EPS = 1e-8


class LossEMA:
    """Per-sample exponential moving average of a loss over the iterations that saw it.

    ``update`` sets a sample's first value to the loss itself and then
    ``ema = momentum * ema + (1 - momentum) * loss``; ``class_max`` is the largest average
    among the training samples of each class (samples not yet seen count as 0).
    """

    def __init__(self, labels: Tensor, num_classes: int, momentum: float):
        self.labels = labels
        self.num_classes = num_classes
        self.momentum = momentum
        self.value = torch.zeros(len(labels), device=labels.device)
        self.seen = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)

    def update(self, index: Tensor, loss: Tensor) -> None:
        keep = torch.where(self.seen[index], self.momentum, 0.0)
        self.value[index] = keep * self.value[index] + (1 - keep) * loss.detach().float()
        self.seen[index] = True

    def class_max(self) -> Tensor:
        peak = torch.zeros(self.num_classes, device=self.value.device)
        return peak.scatter_reduce(0, self.labels, self.value, reduce="amax", include_self=True)

    def normalised(self, index: Tensor, by_class: bool) -> Tensor:
        value = self.value[index]
        if not by_class:
            return value
        return value / self.class_max()[self.labels[index]].clamp_min(_EPS)

    def state_dict(self) -> dict[str, Tensor]:
        return {"value": self.value, "seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.value.copy_(state["value"])
        self.seen.copy_(state["seen"])


def relative_difficulty(loss_b: Tensor, loss_d: Tensor) -> Tensor:
    """LfF's weight ``L_b / (L_b + L_d)``: near 1 where only the biased model fails."""
    return loss_b / (loss_b + loss_d + _EPS)


class LfF(Method):
    name = "lff"
    description = "Learning from Failure: weight CE by how much harder a sample is for a GCE-biased twin."
    requires = frozenset()
    hparams = {
        "q": OpenFloat(0.7, Uniform(0.1, 1.0), low=0.0, high=1.0, help="GCE q of the biased model"),
        "momentum": HParam(0.7, Uniform(0.5, 0.99), low=0.0, high=0.999,
                           help="per-sample loss moving average (authors' code: 0.7)"),
        "normalise": HParam("class", choices=("class", "none"),
                            help="divide the averages by their class maximum (code) or not"),
    }

    biased_model: LatentModel

    def prepare(self, ctx: RunContext) -> None:
        config, train = ctx.config, ctx.dataset.splits["train"]
        # laid out as the run's model; one step per batch of the run's loader (building it draws nothing)
        self.biased_model = lay_out(fresh_model(ctx, BIASED_INIT).train(), config, ctx.device)
        steps = run_steps(config, run_loader(config, ctx.dataset, ctx.generator, self.sampler(ctx)))
        # the run's optimiser, schedule and clipping; the forward runs in the run's autocast
        self.biased_step = TrainingStep.from_config(config, self.biased_model.parameters(), steps, ctx.device,
                                                    amp=False, what="biased model's loss")
        num_classes = ctx.dataset.num_classes
        self.ema_b = LossEMA(train.y, num_classes, self.hp["momentum"])
        self.ema_d = LossEMA(train.y, num_classes, self.hp["momentum"])

    def weights(self, index: Tensor, ce_b: Tensor, ce_d: Tensor) -> Tensor:
        """Update both moving averages with this batch's losses; the batch's weights."""
        self.ema_b.update(index, ce_b)
        self.ema_d.update(index, ce_d)
        by_class = self.hp["normalise"] == "class"
        return relative_difficulty(self.ema_b.normalised(index, by_class), self.ema_d.normalised(index, by_class))

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits_b = self.biased_model(batch.x).float()
        logits_d = model(batch.x).float()
        ce_b = F.cross_entropy(logits_b.detach(), batch.y, reduction="none")
        ce_d = F.cross_entropy(logits_d.detach(), batch.y, reduction="none")  # plain: relative difficulty
        w = self.weights(batch.index, ce_b, ce_d)
        gce = generalized_cross_entropy(logits_b, batch.y, self.hp["q"], scale=self.hp["q"])  # the code's GCE
        self.biased_step.update(gce)
        loss = (w * self.cross_entropy(logits_d, batch.y, reduction="none")).mean()
        return loss, {"ce": ce_d.mean(), "ce_biased": ce_b.mean(), "gce_biased": gce.detach(),
                      "lff_weight": w.mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"biased_model": self.biased_model.state_dict(), "biased_step": self.biased_step.state_dict(),
                "ema_b": self.ema_b.state_dict(),
                "ema_d": self.ema_d.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.biased_model.load_state_dict(state["biased_model"])
        self.biased_step.load_state_dict(state["biased_step"])
        self.ema_b.load_state_dict(state["ema_b"])
        self.ema_d.load_state_dict(state["ema_d"])
