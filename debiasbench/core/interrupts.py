"""SIGTERM taken as Ctrl-C.

Schedulers (Slurm, Kubernetes), ``docker stop`` and ``kill`` send SIGTERM, whose default
action ends a process on the spot: its run stayed RUNNING with no reason, and the
semaphores of its worker queues were reported leaked. ``sigterm_as_interrupt`` (for a
block: a command) and ``take_interrupts_once`` (a sweep's worker inside a job) make
SIGTERM raise ``KeyboardInterrupt`` in the main thread, as SIGINT does, so the same path
runs: the run ends KILLED with its reason (``interrupt_reason``), a sweep stops
its workers, queues are closed, and the command exits with ``exit_code()``: 143
(128 + SIGTERM, what a shell reports for a process SIGTERM ended) instead of 130.

Only the first SIGTERM interrupts; later ones are ignored while the interrupted run is
recorded (a scheduler that will not wait sends SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Iterator

#: Exit code after SIGTERM (128 + 15); Ctrl-C's is ``INTERRUPT_EXIT``.
TERMINATED_EXIT = 128 + signal.SIGTERM
INTERRUPT_EXIT = 130

_terminated = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    if _terminated:
        return  # the first one is being handled: let the run be recorded
    _terminated = True
    raise KeyboardInterrupt("SIGTERM")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises ``KeyboardInterrupt`` in this process's main thread
    (nothing changes in other threads: Python delivers signals to the main thread only);
    the handler before it comes back after."""
    global _terminated
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def take_sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises ``KeyboardInterrupt`` in this process (its main thread),
    the first time; later ones are ignored while the run is recorded."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def take_interrupts_once() -> None:
    """From now on the first SIGINT or SIGTERM raises ``KeyboardInterrupt`` in this
    process's main thread; later ones are noted (``terminated``) but raise nothing, so that
    they cannot cut short the recording of the interrupted run: a sweep's worker inside a
    job, which gets a signal sent to the sweep's process group and then the sweep's own
    SIGINT (``launchers._stop_workers``)."""
    global _interrupted
    _interrupted = False
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)


_interrupted = False


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    global _terminated, _interrupted
    if signum == signal.SIGTERM:
        _terminated = True
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


def terminated() -> bool:
    """Whether this process was interrupted by SIGTERM (``take_sigterm_as_interrupt``)."""
    return _terminated


def interrupt_reason() -> str:
    """Why a run was interrupted, as its failure tag says it."""
    return "interrupted by SIGTERM" if _terminated else "interrupted by the user"


def exit_code() -> int:
    """The exit code of an interrupted command: 143 after SIGTERM, else 130."""
    return TERMINATED_EXIT if _terminated else INTERRUPT_EXIT


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM wait and are handled when it ends, by the handlers
    they had: a write that an interrupt would cut short and turn into another error (torch's
    checkpoint writer reports ``RuntimeError: [enforce fail at inline_container.cc]``) ends
    first, and the interrupt is raised after it. (Blocking the signals would not do: the
    kernel delivers them to another thread, and Python runs the handler in this one.) Only
    in the main thread, where handlers can be set; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    before = {signum: handler for signum, handler in before.items() if handler is not None}  # None: set in C
    for signum in before:
        signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        for number in received:
            handler = before[signal.Signals(number)]
            if callable(handler):
                handler(number, None)  # raises KeyboardInterrupt where it would have
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)
