"""One optimiser update of one model, written once: the run's model, auxiliary models
(biased models, identifiers) and LfF's twin all step through ``TrainingStep``.

What a step does is the run config's: the optimiser (``optimizer``, ``lr``, ``momentum``,
``weight_decay``), the schedule (``constant`` or ``cosine`` over the steps a model takes),
gradient clipping (``grad_clip`` > 0: global norm) and bf16 autocast on CUDA (``amp``).
Backward always runs outside autocast (autocast covers the forward only). The step also
watches the loss for NaN or infinity without a host sync per step: it ORs a device flag
and reads it every ``NONFINITE_CHECK_EVERY`` steps and when asked (end of an epoch).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, ContextManager, Iterable, Mapping

import torch
from torch import Tensor, nn

from debiasbench.core.errors import RunFailed

if TYPE_CHECKING:
    from debiasbench.contract.config import RunConfig

__all__ = ["NONFINITE_CHECK_EVERY", "TrainingStep", "autocast_for", "make_optimizer", "make_schedule"]

#: Steps between host reads of the divergence flag (each read waits for the device).
NONFINITE_CHECK_EVERY = 50


def make_optimizer(config: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimiser over ``params``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    optimizer_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: RunConfig, optimizer: torch.optim.Optimizer,
                  total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The run's learning-rate schedule over ``total_steps`` updates."""
    if config.schedule == "constant" or total_steps == 0:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))


def autocast_for(device: torch.device, enabled: bool) -> ContextManager[Any]:
    """bf16 autocast on CUDA where ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _autocast_off(device: torch.device) -> ContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class TrainingStep:
    """Updates ``params`` from a loss: zero the gradients, backward, clip, step, schedule.

    ``what`` names the loss in the non-finite message ("loss", "biased model's loss") and
    ``phase`` says where training is ("in epoch 3"; the caller keeps it current).
    """

    def __init__(self, params: Iterable[nn.Parameter], optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler | None = None, grad_clip: float = 0.0,
                 amp: bool = False, device: torch.device | None = None, what: str = "loss"):
        self.params = list(params)
        self.optimizer = optimizer
        self.schedule = schedule
        self.grad_clip = grad_clip
        self.device = device if device is not None else (
            self.params[0].device if self.params else torch.device("cpu"))
        self.amp = amp and self.device.type == "cuda"
        self.what = what
        self.phase = ""
        self.steps = 0
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    @classmethod
    def from_config(cls, config: RunConfig, params: Iterable[nn.Parameter], total_steps: int,
                    device: torch.device, *, schedule: bool = True, clip: bool = True, amp: bool = True,
                    what: str = "loss") -> TrainingStep:
        """A step with the run's optimiser, and unless switched off its schedule over
        ``total_steps`` updates, its gradient clipping and its autocast."""
        params = list(params)
        optimizer = make_optimizer(config, params)
        return cls(params, optimizer, make_schedule(config, optimizer, total_steps) if schedule else None,
                   grad_clip=config.grad_clip if clip else 0.0, amp=config.amp and amp, device=device,
                   what=what)

    def autocast(self) -> ContextManager[Any]:
        """The context the loss's forward pass runs in."""
        return autocast_for(self.device, self.amp)

    def update(self, loss: Tensor) -> None:
        """One update from ``loss``; raises ``RunFailed`` when a checked loss was not finite."""
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast_off(self.device):
            loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        self.steps += 1
        if self.steps % NONFINITE_CHECK_EVERY == 0:
            self.check_finite(f"by step {self.steps}")

    def check_finite(self, detail: str = "") -> None:
        """Raise ``RunFailed`` if any loss since the start was not finite (reads the flag)."""
        if bool(self._nonfinite):
            where = f" {self.phase}" if self.phase else ""
            raise RunFailed(f"non-finite {self.what}{where}" + (f" ({detail})" if detail else ""))

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps,
                **({"schedule": self.schedule.state_dict()} if self.schedule is not None else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state.get("steps", 0))
        if self.schedule is not None and "schedule" in state:
            self.schedule.load_state_dict(state["schedule"])
