"""Progress of a run while it trains: which phase, which epoch, which step.

The epoch loop (``train_epochs``) reports to a ``ProgressReporter``: at the start of each
epoch (step 0), every ``INTERVAL`` seconds within it and at its last step. Per step it
only counts and, where a reporter listens, reads the monotonic clock: no host sync, no
tensor is read. Phases without epochs (a run's test evaluation, its explanations) are
reported with ``epochs == 0``.

Who listens is ambient rather than passed down: methods train auxiliary models
(JTT's identification model, PGD's biased model, mining peers) through ``train_epochs``
from their own code, which knows nothing of progress. ``reporting(reporter, prefix)``
makes ``reporter`` the one every ``train_epochs`` inside the block reports to, with
phases named ``"<prefix> · <phase>"`` (``"jtt · identification model"``). A process
may also have a default (a sweep's worker process sends its events to the sweep).
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Iterator, Protocol, Sequence

__all__ = ["INTERVAL", "Prefixed", "ProgressReporter", "Ticker", "announce", "current", "decided", "phase_of",
           "reporting", "set_process_reporter"]

#: Seconds between two reports within an epoch (the first and last step always report).
INTERVAL = 0.25


class ProgressReporter(Protocol):
    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        """``phase`` is in epoch ``epoch`` of ``epochs`` (from 1) and has taken ``step`` of
        the epoch's ``steps`` optimiser steps; ``step == steps`` ends the epoch. A phase
        without epochs (evaluation) has ``epochs == 0``."""


class Prefixed:
    """``reporter`` with phases named ``"<prefix> · <phase>"``."""

    def __init__(self, reporter: ProgressReporter, prefix: str):
        self.reporter, self.prefix = reporter, prefix

    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        self.reporter.on_progress(f"{self.prefix} · {phase}", epoch, epochs, step, steps)


_UNSET = object()
_CURRENT: ContextVar[object] = ContextVar("debiasbench_progress", default=_UNSET)
_PROCESS_DEFAULT: ProgressReporter | None = None


def current() -> ProgressReporter | None:
    """The reporter of the innermost ``reporting`` block, else this process's default."""
    reporter = _CURRENT.get()
    return _PROCESS_DEFAULT if reporter is _UNSET else reporter  # type: ignore[return-value]


def set_process_reporter(reporter: ProgressReporter | None) -> None:
    """The reporter of this process outside any ``reporting`` block (a sweep's worker)."""
    global _PROCESS_DEFAULT
    _PROCESS_DEFAULT = reporter


@contextlib.contextmanager
def reporting(reporter: ProgressReporter | None, prefix: str | None = None) -> Iterator[ProgressReporter | None]:
    """Inside the block, progress goes to ``reporter`` (None: nowhere), phases prefixed
    with ``prefix``; yields the reporter as it is called."""
    if reporter is not None and prefix:
        reporter = Prefixed(reporter, prefix)
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


def announce(phase: str, reporter: ProgressReporter | None = None) -> None:
    """Report a phase without epochs (``epochs == 0``) to ``reporter`` or the current one."""
    reporter = reporter if reporter is not None else current()
    if reporter is not None:
        reporter.on_progress(phase, 0, 0, 0, 0)


def phase_of(whats: Sequence[str]) -> str:
    """A phase named after the losses of its training steps (``TrainingStep.what``): the
    run's own ``loss`` is ``train``, ``"biased model's loss"`` is ``biased model``."""
    what = whats[0] if whats else "loss"
    return "train" if what == "loss" else what.removesuffix("'s loss").removesuffix(" loss")


class Ticker:
    """What the epoch loop calls: ``begin`` an epoch, ``tick`` per step. Reports at most
    every ``interval`` seconds between an epoch's first and last step."""

    def __init__(self, reporter: ProgressReporter | None, phase: str, epochs: int, steps: int,
                 interval: float | None = None):
        self.reporter, self.phase, self.epochs, self.steps = reporter, phase, epochs, steps
        self.interval = INTERVAL if interval is None else interval
        self.epoch = self.done = 0
        self.next_at = 0.0

    def begin(self, index: int) -> None:
        """Epoch ``index`` (from 0) starts."""
        self.epoch, self.done = index + 1, 0
        if self.reporter is not None:
            self.next_at = time.monotonic() + self.interval
            self.reporter.on_progress(self.phase, self.epoch, self.epochs, 0, self.steps)

    def tick(self) -> None:
        """One step taken."""
        self.done += 1
        if self.reporter is None:
            return
        if self.done >= self.steps:
            self.reporter.on_progress(self.phase, self.epoch, self.epochs, self.done, max(self.steps, self.done))
            return
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + self.interval
            self.reporter.on_progress(self.phase, self.epoch, self.epochs, self.done, self.steps)


def decided() -> bool:
    """Whether a ``reporting`` block or this process's default says where progress goes
    (else a run decides for itself: a bar at a terminal)."""
    return _CURRENT.get() is not _UNSET or _PROCESS_DEFAULT is not None
