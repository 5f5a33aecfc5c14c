"""Bias-conflicting sample mining by peer-picking and epoch-ensemble (Zhao et al., arXiv 2111.13108).

Two auxiliary models ("peers") of the run's architecture are trained on the same batches
to be *biased*: each learns only from samples both peers predict confidently, and is
pushed away (a tiny gradient ascent) from samples it alone is confident on, which are
likely bias-conflicting samples it has started to memorise. After every epoch both peers
score the whole training split; a sample's bias-conflicting score is one minus its true
class probability averaged over the two peers and over the epochs (the epoch-ensemble),
and a threshold picks the mined set. Everything is batched on the device.

Confidence is ``p_y`` divided by its maximum over the batch's samples of the same class
(as in the authors' code), so ``eta`` is relative to the best-fitted sample of a class.
The peers use plain cross-entropy by default, as the authors' code does (their
``det_peer.py``): the confidence mask already restricts the peers to easy, bias-aligned
samples, which is what GCE's ``p_y^q`` weighting would otherwise do. ``loss="gce"``
trains them with generalised cross-entropy instead, scaled as the authors' GCE class
(Combating-Unknown-Bias@687309f ``utils/loss.py:20-24``, LfF's) scales it (``scale=q``;
the peers' Adam absorbs the factor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from debiasbench.train.auxiliary import fresh_model, predict_proba
from debiasbench.data.dataset import Loader
from debiasbench.train.losses import generalized_cross_entropy
from debiasbench.contract.method import Batch, RunContext
from debiasbench.train.loop import Epoch, train_epochs
from debiasbench.train.step import TrainingStep

__all__ = ["MiningResult", "class_normalised", "peer_weights", "mine_conflicting", "precision_recall"]


@dataclass
class MiningResult:
    """``conflicting``: the mined bias-conflicting mask [N]; ``scores``: bias-conflicting score [N]."""

    conflicting: Tensor
    scores: Tensor


def class_normalised(p: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``p`` divided by the largest ``p`` among the samples of the same class (in this batch)."""
    peak = torch.zeros(num_classes, dtype=p.dtype, device=p.device)
    peak = peak.scatter_reduce(0, y, p, reduce="amax", include_self=True)
    return p / peak[y].clamp_min(torch.finfo(p.dtype).tiny)


def peer_weights(conf_a: Tensor, conf_b: Tensor, eta: float, ascent: float) -> Tensor:
    """Loss weights of peer a: 1 where both peers are confident (> eta), ``-ascent`` where
    only a is, 0 elsewhere. Peer b's weights are ``peer_weights(conf_b, conf_a, ...)``."""
    sure_a, sure_b = conf_a > eta, conf_b > eta
    return (sure_a & sure_b).to(conf_a.dtype) - ascent * (sure_a & ~sure_b).to(conf_a.dtype)


def _true_class_proba(logits: Tensor, y: Tensor) -> Tensor:
    return logits.detach().float().softmax(1).gather(1, y[:, None]).squeeze(1)


def _per_sample_loss(logits: Tensor, y: Tensor, loss: str, q: float) -> Tensor:
    if loss == "gce":
        return generalized_cross_entropy(logits, y, q=q, reduction="none", scale=q)
    return F.cross_entropy(logits.float(), y, reduction="none")


def mine_conflicting(ctx: RunContext, epochs: int, eta: float = 0.5, tau: float = 0.8,
                     ascent: float = 1e-4, loss: str = "ce", q: float = 0.7,
                     streams: str = "mining") -> MiningResult:
    """Peer-picking on ``ctx.dataset.splits["train"]`` for ``epochs`` epochs (the authors'
    code: 50, bwbwzhao/Combating-Unknown-Bias@687309f ``mining/det_peer.py:111``).

    The peers are Adam-trained at the run's ``lr`` and ``batch_size``. As in the authors'
    code the ascent starts after the first epoch (the peers are not yet biased before).
    A sample is mined as bias-conflicting when its score is at least ``tau``
    (``debiasing/main_ecsga.py:105-107``). The score is one minus the two peers' mean
    true-class probability, averaged over every epoch (``det_peer.py:182, 193-195``;
    ``main_ecsga.py:96``). ``streams`` prefixes the names of the random streams the peers'
    initialisations and the training order draw from.
    """
    train = ctx.dataset.splits["train"]
    num_classes = ctx.dataset.num_classes
    peers = [fresh_model(ctx, f"{streams}.peer{i}_init") for i in (0, 1)]
    steps = [TrainingStep(m.parameters(), torch.optim.Adam(m.parameters(), lr=ctx.config.lr), device=ctx.device,
                          what=f"mining peer {i}'s loss") for i, m in enumerate(peers)]
    loader = Loader(train, ctx.config.batch_size, ctx.stream(f"{streams}.order"))
    confidence_sum = torch.zeros(len(train), device=train.y.device)
    step_ascent = 0.0  # from the second epoch on: ``ascent``

    def batch_loss(batch: Batch) -> tuple[tuple[Tensor, Tensor], dict[str, Tensor]]:
        """Both peers' weighted losses of the same batch (peer 0's first)."""
        logits = [model(batch.x) for model in peers]
        losses = [_per_sample_loss(z, batch.y, loss, q) for z in logits]
        conf = [class_normalised(_true_class_proba(z, batch.y), batch.y, num_classes) for z in logits]
        weights = (peer_weights(conf[0], conf[1], eta, step_ascent),
                   peer_weights(conf[1], conf[0], eta, step_ascent))
        return ((weights[0] * losses[0]).mean(), (weights[1] * losses[1]).mean()), {}

    def after_epoch(epoch: Epoch) -> None:
        """The epoch-ensemble: both peers score the whole training split."""
        nonlocal confidence_sum, step_ascent
        p_y = [predict_proba(m, train, ctx.config.eval_batch_size).gather(1, train.y[:, None]).squeeze(1)
               for m in peers]
        confidence_sum += 0.5 * (p_y[0] + p_y[1])
        step_ascent = ascent

    train_epochs(loader, steps, batch_loss, epochs, models=peers, after_epoch=after_epoch, phase="mining peers")
    scores = 1.0 - confidence_sum / max(epochs, 1)
    return MiningResult(conflicting=scores >= tau, scores=scores)


def precision_recall(mined: Tensor, truth: Tensor) -> dict[str, float]:
    """Precision and recall of the mined mask against the true bias-conflicting flags."""
    hits = (mined & truth).sum()
    counts = torch.stack([hits, mined.sum(), truth.sum()]).float().cpu().tolist()
    return {"mining_precision": counts[0] / counts[1] if counts[1] else 0.0,
            "mining_recall": counts[0] / counts[2] if counts[2] else 0.0,
            "mining_selected": counts[1]}
