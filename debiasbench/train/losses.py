"""Losses shared by methods.

Generalised cross-entropy (GCE; Zhang & Sabuncu, 2018) trains the *biased* auxiliary
models of LfF, PGD and Gradient Alignment's peers: ``(1 - p_y^q) / q`` weights each
sample's cross-entropy gradient by ``p_y^q``, so confidently predicted (easy,
bias-aligned) samples dominate and the model latches onto the shortcut on purpose.

The authors' code of LfF (alinlab/LfF@e66796e ``module/loss.py:20-24``), copied by PGD
(sumyeongahn/PGD@0265520 ``trainer/module/loss.py:20-23``) and Gradient Alignment
(bwbwzhao/Combating-Unknown-Bias@687309f ``utils/loss.py:20-24``), weights the
cross-entropy by ``q * p_y^q`` (detached): the gradient of ``1 - p_y^q``, i.e. ``q`` times
the gradient of the paper's GCE. ``scale=q`` gives that gradient. Adam (LfF's and GA's
optimiser) absorbs a constant factor; SGD (PGD's, ``trainer/utils/pre_conf.py:4-6``)
takes ``q`` times smaller steps with it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def generalized_cross_entropy(logits: Tensor, y: Tensor, q: float = 0.7, reduction: str = "mean",
                              scale: float = 1.0) -> Tensor:
    """GCE ``scale * (1 - p_y^q) / q`` per sample (``reduction`` "none"), or its mean / sum.

    ``scale=1`` is the paper's loss; ``scale=q`` (``1 - p_y^q``) has the gradient of the
    authors' code of LfF and PGD, ``q p_y^q`` times cross-entropy's (its value differs from
    the code's surrogate ``q p_y^q CE``, which is not a GCE value). Tends to cross-entropy
    as ``q -> 0`` at ``scale=1``, and to the MAE-like ``1 - p_y`` at ``q = 1``. Computed from
    log-probabilities (``p_y^q = exp(q log p_y)``) so it stays finite for confident wrong
    predictions.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"GCE q must be in (0, 1], got {q}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    loss = -((q * log_p).expm1()) * (scale / q)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
