"""Device samplers that several methods share (see ``debiasbench.data.dataset.Sampler``).

A sampler draws one epoch's training indices on the device, so re-weighting by sampling
(PGD's gradient norms, GroupDRO's group-balanced batches) never touches the host.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ImportanceSampler:
    """``num_samples`` indices drawn with replacement from ``probs`` per epoch, on its device."""

    def __init__(self, probs: Tensor, num_samples: int | None = None):
        self.probs = probs
        self.num_samples = len(probs) if num_samples is None else num_samples

    def indices(self, epoch: int, generator: torch.Generator) -> Tensor:
        return torch.multinomial(self.probs, self.num_samples, replacement=True, generator=generator)

    def __len__(self) -> int:
        return self.num_samples
