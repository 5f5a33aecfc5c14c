"""Class weights of the training cross-entropy (run key ``class_weights``).

The RR-ClArC authors train vanilla models and every correction with
``CrossEntropyLoss(weight=w)``, ``w_c = max_k n_k / n_c`` and ``w_c = 0`` for a class with
no samples (frederikpahde/rrclarc@222d917 ``datasets/base_dataset.py:55-56``, used by
``model_training/start_training.py:117`` and ``model_training/start_model_correction.py:141``).
On an imbalanced dataset such as ISIC this changes the gradient a lot (the rare classes'
share grows tenfold), and with it the effective strength of every penalty added to the CE,
so it is one run key applied to every method alike.

Deviation: the authors count the classes over the whole dataset (all splits); here they are
counted over the training split, the only labels a method may look at. On the random,
stratified-by-chance splits of the real datasets the two differ by sampling noise.
"""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_frequency(labels: Tensor, num_classes: int) -> Tensor:
    """``max_k n_k / n_c`` per class (0 where ``n_c`` = 0), float32 on ``labels``' device."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    return torch.where(counts > 0, counts.max() / counts.clamp(min=1), torch.zeros_like(counts))


def class_weights(kind: str, labels: Tensor, num_classes: int) -> Tensor | None:
    """The weights the run key ``class_weights`` = ``kind`` asks for; None for plain CE."""
    if kind == "none":
        return None
    if kind == "inverse_frequency":
        return inverse_frequency(labels, num_classes)
    raise ValueError(f"unknown class_weights {kind!r}")
