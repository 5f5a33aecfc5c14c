"""Losses shared by methods.

Generalised cross-entropy (GCE; Zhang & Sabuncu, 2018) trains the *biased* auxiliary
models of LfF, PGD and Gradient Alignment's peers: ``(1 - p_y^q) / q`` weights each
sample's cross-entropy gradient by ``p_y^q``, so confidently predicted (easy,
bias-aligned) samples dominate and the model latches onto the shortcut on purpose.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def generalized_cross_entropy(logits: Tensor, y: Tensor, q: float = 0.7, reduction: str = "mean") -> Tensor:
    """GCE ``(1 - p_y^q) / q`` per sample (``reduction`` "none"), or its mean / sum.

    Tends to cross-entropy as ``q -> 0`` and to the MAE-like ``1 - p_y`` at ``q = 1``.
    Computed from log-probabilities (``p_y^q = exp(q log p_y)``) so it stays finite for
    confident wrong predictions.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"GCE q must be in (0, 1], got {q}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    loss = -((q * log_p).expm1()) / q
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
