"""How a run's progress is shown (``debiasbench.train.progress`` reports it).

At a terminal a rich bar on stderr per phase: ``jtt · identification model epoch 2/5``,
the steps of the phase's epochs, steps per second and the phase's time left; it is
removed when the run ends. Elsewhere (piped, CI, a log file) one plain line per epoch
and per phase without epochs, so logs show how far a run got.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from debiasbench.train.progress import ProgressReporter

__all__ = ["EpochBar", "EpochLines", "bar_columns", "bar_fields", "console_progress", "duration", "epoch_line"]


def duration(seconds: float | None) -> str:
    """``45s``, ``3m07s``, ``2h05m``; ``?`` where unknown."""
    if seconds is None:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def epoch_line(phase: str, epoch: int, epochs: int, steps: int, seconds: float, phase_seconds: float) -> str:
    """``phase epoch k/K: S steps in 1.2s (33.3 it/s), phase ETA 4s``: the phase's time
    left at the mean pace of its epochs so far."""
    rate = steps / seconds if seconds > 0 else 0.0
    left = phase_seconds / epoch * (epochs - epoch) if epoch else 0.0
    return (f"{phase} epoch {epoch}/{epochs}: {steps} steps in {seconds:.1f}s ({rate:.1f} it/s)"
            + (f", ETA {duration(left)}" if epoch < epochs else ""))


class EpochLines:
    """One line per ended epoch and per phase without epochs, written with ``write``."""

    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.phase = ""
        self.phase_began = self.epoch_began = time.monotonic()

    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.phase, self.phase_began = phase, now
            if epochs == 0:
                self.write(phase)
        if epochs == 0:
            return
        if step == 0:
            self.epoch_began = now
        if step == steps:
            self.write(epoch_line(phase, epoch, epochs, steps, now - self.epoch_began, now - self.phase_began))


class _Rate(ProgressColumn):
    """Steps per second of the task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} it/s" if speed else "- it/s", style="progress.data.speed")


def bar_columns() -> list[ProgressColumn]:
    """Description, bar, ``step s/S``, rate and time left: a run's bar and a sweep job's."""
    return [TextColumn("{task.description}"), BarColumn(bar_width=30),
            TextColumn("{task.fields[steps]}"), _Rate(), TimeRemainingColumn()]


def bar_fields(phase: str, epoch: int, epochs: int, step: int, steps: int) -> dict:
    """What ``Progress.update`` gets for one event: the phase's steps over its epochs."""
    if epochs == 0:
        return {"description": phase, "steps": ""}
    return {"description": f"{phase} epoch {epoch}/{epochs}", "steps": f"step {step}/{steps}",
            "completed": (epoch - 1) * steps + step}


class EpochBar:
    """A rich bar per phase on ``console``: the phase's steps over all its epochs."""

    def __init__(self, console: Console):
        self.bar = Progress(*bar_columns(), console=console, transient=True, refresh_per_second=4)
        self.phase: str | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> EpochBar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def on_progress(self, phase: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        fields = bar_fields(phase, epoch, epochs, step, steps)
        if phase != self.phase or self.task is None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.phase = phase
            self.task = self.bar.add_task(fields.pop("description"), total=epochs * steps or None,
                                          completed=fields.pop("completed", 0), steps=fields.pop("steps"))
        self.bar.update(self.task, **fields)


@contextlib.contextmanager
def console_progress(console: Console, enabled: bool = True) -> Iterator[ProgressReporter | None]:
    """The reporter that shows a run's progress on ``console``: a bar at a terminal, else
    plain lines; None where not ``enabled``."""
    if not enabled:
        yield None
    elif console.is_terminal:
        with EpochBar(console) as bar:
            yield bar
    else:
        yield EpochLines(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
