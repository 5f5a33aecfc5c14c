"""A sweep job's progress on its way to the sweep, from wherever the job runs.

A job run by a launcher (``launchers.execute_job``) says it started and reports its
training progress (``debiasbench.train.progress``: every phase, auxiliary models
included) as ``JobEvent``s to this process's sink, where there is one: in the sweep's
own process a function (``sending``), in a local worker process the queue the pool
drains into the sweep (``set_process_sink``), in a Ray task a Ray queue.
``debiasbench.sweep.monitor`` makes sense of them.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

from debiasbench.train.progress import reporting

__all__ = ["STARTED", "JobEvent", "Sink", "job_progress", "job_sink", "sending", "set_process_sink"]

#: ``JobEvent.phase`` of the event that says a job started.
STARTED = ""


@dataclass(frozen=True)
class JobEvent:
    """A job (by run key) started (``phase == STARTED``) or reports progress: the fields
    of ``ProgressReporter.on_progress``. Small and picklable: it crosses processes."""

    run_key: str
    phase: str = STARTED
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0


Sink = Callable[[JobEvent], None]
_SINK: ContextVar[Sink | None] = ContextVar("debiasbench_job_sink", default=None)
_PROCESS_SINK: Sink | None = None


def job_sink() -> Sink | None:
    """Where this process sends its jobs' events: a ``sending`` block's sink, else the
    process's (a worker's queue), else nowhere."""
    return _SINK.get() or _PROCESS_SINK


def set_process_sink(sink: Sink | None) -> None:
    global _PROCESS_SINK
    _PROCESS_SINK = sink


@contextlib.contextmanager
def sending(sink: Sink | None) -> Iterator[None]:
    """Jobs run in this thread inside the block send their events to ``sink``."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


class _JobReporter:
    """A ``ProgressReporter`` that sends one job's progress as ``JobEvent``s."""

    def __init__(self, sink: Sink, run_key: str):
        self.sink, self.run_key = sink, run_key

    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        try:
            self.sink(JobEvent(self.run_key, phase, epoch, epochs, step, steps))
        except Exception:  # progress must never fail a run (a closed queue, a gone driver)
            pass


@contextlib.contextmanager
def job_progress(run_key: str) -> Iterator[None]:
    """Around one job in a worker: say it started, and send its progress, where this
    process has a sink."""
    sink = job_sink()
    if sink is None:
        yield
        return
    reporter = _JobReporter(sink, run_key)
    reporter.on_progress(STARTED, 0, 0, 0, 0)
    with reporting(reporter):
        yield
