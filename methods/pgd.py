"""PGD: Per-sample Gradient-based Debiasing (Ahn, Kim & Yun, ICLR 2023, arXiv 2205.15704).

(1) Train a biased model with generalised cross-entropy (GCE, ``q``) and uniform sampling;
(2) score every training sample by the norm of its per-sample cross-entropy gradient under
that model (bias-conflicting samples are the ones it gets wrong, so their gradients are
large) and make the sampling probability proportional to ``norm ** power``; (3) train the
run's model with plain cross-entropy on N draws with replacement per epoch from those
probabilities. No bias labels are needed; where the dataset has them, the share of the
probability mass on truly conflicting samples is logged as ``pgd_conflicting_mass``.

Paper versus the authors' code (sumyeongahn/PGD), and what is the default here:
- gradient of the last linear layer's *weight* only (``grad_params=last_layer``, the
  code; ``all`` takes every parameter, batched with ``torch.func``);
- norm order ``norm_p`` = 0.7, the code's ``norm_scale`` default (an entrywise
  quasi-norm); the paper ablates L1 / L2 / Linf (``norm_p`` 1, 2, inf);
- probability proportional to the norm (``power`` = 1, paper and code);
- GCE q = 0.7 (paper and code); the biased model trains as many epochs as the run
  unless ``bias_epochs`` is set (the code uses the same epoch count for both stages);
- GCE as the code defines it (sumyeongahn/PGD@0265520 ``trainer/module/loss.py:20-23``,
  LfF's class): cross-entropy weighted by ``q p_y^q``, whose gradient is ``q`` times the
  paper's ``(1 - p_y^q) / q`` (``generalized_cross_entropy(..., scale=q)``). The code trains
  with SGD (``trainer/utils/pre_conf.py:4-13``: lr 0.02, momentum 0.9, weight decay 1e-3,
  batch 128, lr x0.1 every 40 epochs), where the factor is a ``q`` times smaller step;
- the biased model trains with the run's optimiser kind, lr, momentum and weight decay,
  as the code builds both stages' optimisers from the same arguments
  (``trainer/learner.py:64-93``), at a constant lr and unclipped: the code's step decay
  (x0.1 every 40 epochs) is constant over the first 40 epochs and it clips nothing. The
  run's cosine schedule is not applied to it: on unknown_bias_digits it cut both the
  conflicting digits' sampling mass and their test accuracy (see docs/methods.md, "Measurements
  behind the defaults"). Under the run's default Adam this is the Adam biased model this
  project trained before (whatever the run's optimiser); with ``optimizer=sgd`` it is
  the code's SGD;
- the final model starts from scratch (the paper: "train the model"); the code
  warm-starts it from the biased model, which is ``init=biased``.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from debiasbench.train.auxiliary import fresh_model, predict_proba, train_model
from debiasbench.core.hparams import Choice, HParam, IntUniform, OpenFloat, Uniform
from debiasbench.train.losses import generalized_cross_entropy
from debiasbench.contract.method import Batch, Method, RunContext
from debiasbench.models.latent import LatentModel
from debiasbench.train.per_sample_grad import per_sample_grad_norms
from debiasbench.train.samplers import ImportanceSampler
from debiasbench.train.step import TrainingStep

#: Random streams of the biased model's initialisation and of its training order.
BIASED_INIT, BIASED_ORDER = "pgd.biased_init", "pgd.biased_order"


def biased_loss(model: LatentModel, batch: Batch, q: float) -> Tensor:
    """The authors' GCE (gradient ``q p_y^q`` times cross-entropy's; ``loss.py:20-23``)."""
    return generalized_cross_entropy(model(batch.x), batch.y, q, scale=q)


def train_biased(ctx: RunContext, model: LatentModel, epochs: int, q: float) -> None:
    """Train ``model`` on uniform batches of the training split with the authors' GCE and
    the run's optimiser (kind, lr, momentum, weight decay) at a constant lr, unclipped."""
    config = ctx.config
    step = TrainingStep.from_config(config, model.parameters(), 0, ctx.device, schedule=False, clip=False,
                                    amp=False, what="biased model's loss")
    train_model(model, ctx.dataset.splits["train"], lambda m, batch: biased_loss(m, batch, q), epochs,
                config.batch_size, step, ctx.stream(BIASED_ORDER))


class PGD(Method):
    name = "pgd"
    description = "Importance sampling by per-sample gradient norms of a GCE-biased model (PGD)."
    hparams = {
        "q": OpenFloat(0.7, Uniform(0.1, 1.0), low=0.0, high=1.0, help="GCE q of the biased model"),
        "bias_epochs": HParam(None, IntUniform(1, 20), type=int, low=1,
                              help="epochs of the biased model; null = the run's epochs"),
        "grad_params": HParam("last_layer", choices=("last_layer", "all"),
                              help="parameters whose per-sample gradient norm is the score"),
        "norm_p": OpenFloat(0.7, Choice((0.7, 1.0, 2.0, math.inf)), low=0.0, allow_inf=True,
                            help="order of the entrywise gradient norm (authors' code: 0.7)"),
        "power": HParam(1.0, Uniform(0.5, 2.0), low=0.0, help="probability ~ norm ** power (0 = uniform)"),
        "init": HParam("scratch", choices=("scratch", "biased"),
                       help="final model from scratch (paper) or from the biased weights (code)"),
    }

    probs: Tensor  # sampling probability of each training sample, on the device
    biased_model: LatentModel

    def prepare(self, ctx: RunContext) -> None:
        config, train = ctx.config, ctx.dataset.splits["train"]
        self.biased_model = biased = fresh_model(ctx, BIASED_INIT)
        q = self.hp["q"]
        epochs = self.hp["bias_epochs"] if self.hp["bias_epochs"] is not None else config.epochs
        train_biased(ctx, biased, epochs, q)
        began = time.perf_counter()
        params = self.hp["grad_params"]
        norms = per_sample_grad_norms(biased, train, train.y, params=params, p=self.hp["norm_p"],
                                      method="closed_form" if params == "last_layer" else "vmap")
        weights = norms.clamp_min(1e-8).pow(self.hp["power"])
        self.probs = weights / weights.sum()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        score_seconds = time.perf_counter() - began
        if self.hp["init"] == "biased":
            ctx.model.load_state_dict(biased.state_dict())
        self.log_statistics(ctx, biased, score_seconds)

    def log_statistics(self, ctx: RunContext, biased: LatentModel, score_seconds: float) -> None:
        """How concentrated the sampling is, and (with bias labels) how much of it is on BC samples."""
        train, probs, n = ctx.dataset.splits["train"], self.probs, len(self.probs)
        accuracy = (predict_proba(biased, train, ctx.config.eval_batch_size).argmax(1) == train.y)
        stats = {"pgd_biased_train_acc": accuracy.float().mean(), "pgd_max_weight": probs.max() * n,
                 "pgd_effective_sample_share": 1.0 / (probs.square().sum() * n)}
        if {"bias_labels", "artifact_labels"} & ctx.dataset.provides:
            conflicting = train.conflicting
            stats["pgd_conflicting_mass"] = probs[conflicting].sum()
            stats["pgd_conflicting_share"] = conflicting.float().mean()
        values = torch.stack([v.float() for v in stats.values()]).tolist()
        ctx.log_metrics({**dict(zip(stats, values)), "pgd_score_seconds": score_seconds})

    def sampler(self, ctx: RunContext) -> ImportanceSampler:
        return ImportanceSampler(self.probs)

    def loss(self, model: LatentModel, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self.cross_entropy(model(batch.x), batch.y)
        return loss, {"ce": loss.detach()}
