"""A sweep's jobs while they run: their progress, live bars and the sweep's ETA.

``SweepMonitor`` receives the jobs' ``JobEvent``s (``debiasbench.sweep.events``: each
job's start and the epochs and steps of every phase it trains, auxiliary models
included) and the ended jobs, and estimates the time left (``estimate_eta``, a pure
function); a view shows it: a bar per running job at a terminal (``SweepBars``), else
a line per job epoch now and then (``SweepLines``).

The ETA adds up what is known instead of extrapolating from jobs ended per minute (which
jumped with every slow or quick job that ended):

* a running job's time left is the epochs left of the phase it trains at the seconds
  per epoch measured there (blended, over its first epoch, with that phase's pace in
  ended jobs of its method and dataset), then the run's own epochs if it is still in an
  auxiliary model's (at their pace in ended jobs, else at the pace it trains now), then
  evaluation as ended jobs took it; before any epoch is measured, what its kind took;
* a queued job takes what ended jobs of its method and dataset took on average, else
  what running jobs of its kind are heading for, else what any ended job took;
* queued jobs go, in order, to the slot (worker) that frees first.
"""

from __future__ import annotations

import contextlib
import heapq
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

from debiasbench.run.display import bar_columns, bar_fields, duration
from debiasbench.sweep.events import STARTED, JobEvent

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from debiasbench.contract.config import RunConfig
    from debiasbench.sweep.launchers import JobResult

__all__ = ["JobHistory", "JobState", "SweepBars", "SweepLines", "SweepMonitor", "estimate_eta", "job_label",
           "job_remaining", "sweep_view"]

#: Seconds between two progress lines of one job where progress is shown as lines.
LINE_INTERVAL = 10.0


# The estimate, as pure functions ------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """What is known of a running job at one moment."""

    group: tuple[str, str]
    #: Seconds since it started.
    elapsed: float
    #: Share of its known epochs done (auxiliary models' and its own), 0..1.
    fraction: float = 0.0
    #: The phase it trains now (``"identification model"``, ``"train"``), "" before any.
    phase: str = ""
    #: Epochs of that phase left.
    phase_left: float = 0.0
    #: Seconds per epoch measured in that phase (else in the phase before); None: none yet.
    pace: float | None = None
    #: Epochs of that phase measured (how far ``pace`` is to be trusted).
    measured: float = 0.0
    #: The run's own epochs, where it has not started them yet (it trains an auxiliary model).
    own_left: int = 0
    #: Seconds since its training ended (it is evaluating); None while it trains.
    since_training: float | None = None


OWN = "train"  # the phase of a run's own epochs (``debiasbench.train.progress.phase_of``)


@dataclass
class JobHistory:
    """What ended jobs took, by (method, dataset): in all, after their training
    (evaluation), and per epoch of each phase."""

    totals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    tails: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    paces: dict[tuple[tuple[str, str], str], list[float]] = field(default_factory=dict)

    def add(self, group: tuple[str, str], seconds: float, tail: float | None = None,
            paces: Mapping[str, float] | None = None) -> None:
        self.totals.setdefault(group, []).append(seconds)
        if tail is not None:
            self.tails.setdefault(group, []).append(tail)
        for phase, pace in (paces or {}).items():
            self.paces.setdefault((group, phase), []).append(pace)

    @staticmethod
    def _mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    def total(self, group: tuple[str, str]) -> float | None:
        """Mean seconds of an ended job of ``group``, else of any ended job."""
        return self._mean(self.totals.get(group) or [v for vs in self.totals.values() for v in vs])

    def tail(self, group: tuple[str, str]) -> float:
        """Mean seconds after training (evaluation, explanations), 0 where none is known."""
        return self._mean(self.tails.get(group) or [v for vs in self.tails.values() for v in vs]) or 0.0

    def pace(self, group: tuple[str, str], phase: str) -> float | None:
        """Mean seconds per epoch of ``phase`` in ended jobs of ``group``."""
        return self._mean(self.paces.get((group, phase), []))


def job_remaining(job: JobState, history: JobHistory) -> float | None:
    """Seconds ``job`` has left (None: nothing is known yet): the epochs left of the phase
    it trains, at its measured pace (blended with the pace ended jobs of its kind had in
    that phase over its first epoch), then its own epochs at their pace in ended jobs
    (else at the pace it trains now), then evaluation as ended jobs took it. Before any
    epoch is measured: what its kind took, less what it ran."""
    tail = history.tail(job.group)
    if job.since_training is not None:
        return max(tail - job.since_training, 0.0)
    known = history.pace(job.group, job.phase)
    if job.pace is None:
        pace = known
    elif known is None:
        pace = job.pace
    else:
        weight = min(job.measured, 1.0)
        pace = weight * job.pace + (1.0 - weight) * known
    if pace is None:
        total = history.total(job.group)
        return None if total is None else max(total - job.elapsed, 0.0)
    own = history.pace(job.group, OWN) if job.own_left else None
    return job.phase_left * pace + job.own_left * (own if own is not None else pace) + tail


def estimate_eta(running: Sequence[JobState], queued: Sequence[tuple[str, str]], history: JobHistory,
                 slots: int) -> float | None:
    """Seconds until the sweep ends: the running jobs' time left, then the queued jobs,
    in order, each on the slot that frees first, at its expected duration. A job of a
    kind no job has ended of yet is expected to take what running jobs of its kind (else
    any) are heading for; None while nothing at all is known of some job's duration."""
    left = [job_remaining(job, history) for job in running]
    heading: dict[tuple[str, str], list[float]] = {}
    for job, value in zip(running, left):
        if value is not None and job.fraction > 0:
            heading.setdefault(job.group, []).append(job.elapsed + value)

    def expected(group: tuple[str, str]) -> float | None:
        if group in history.totals:
            return history.total(group)
        if group in heading:
            return sum(heading[group]) / len(heading[group])
        if history.totals:
            return history.total(group)
        guesses = [v for vs in heading.values() for v in vs]
        return sum(guesses) / len(guesses) if guesses else None

    frees = []
    for job, value in zip(running, left):
        if value is None:  # nothing measured yet: what its kind takes, less what it ran
            total = expected(job.group)
            if total is None:
                return None
            value = max(total - job.elapsed, 0.0)
        frees.append(value)
    heap = frees + [0.0] * max(slots - len(frees), 0)
    heapq.heapify(heap)
    for group in queued:
        total = expected(group)
        if total is None:
            return None
        heapq.heapreplace(heap, heap[0] + total)
    return max(heap) if heap else 0.0


# The monitor ---------------------------------------------------------------------------


@dataclass
class _Phase:
    epochs: int
    done: float = 0.0  # epochs done, fractions included
    began: float = 0.0  # clock of its first event in this process's run of it
    first: float | None = None  # epochs it had done then (a resumed run's checkpointed ones)
    measured_at: float = 0.0  # clock of the last event

    @property
    def measured(self) -> float:
        return self.done - self.first if self.first is not None else 0.0

    @property
    def pace(self) -> float | None:
        return (self.measured_at - self.began) / self.measured if self.measured > 0 else None


@dataclass
class _Job:
    config: RunConfig
    began: float
    phases: dict[str, _Phase] = field(default_factory=dict)
    current: str = ""
    training_ended: float | None = None


def _unprefixed(phase: str) -> str:
    """``"jtt · identification model"`` -> ``"identification model"``."""
    return phase.split(" · ", 1)[-1]


class SweepMonitor:
    """What a running sweep knows: the jobs started and their progress (``on_event``,
    from any thread), the jobs ended (``on_result``) and, from that, ``eta()``. A view,
    where given, is told of both."""

    def __init__(self, jobs: Sequence[RunConfig], slots: int = 1, view: SweepView | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.configs = {config.run_key(): config for config in jobs}
        self.slots = max(int(slots), 1)
        self.view, self.clock = view, clock
        self.history = JobHistory()
        self.running: dict[str, _Job] = {}
        self.ended: set[str] = set()
        self.peak = 0  # the most jobs seen running at once
        self.began = clock()
        self.busy = 0.0  # seconds of the ended jobs, together
        self.lock = threading.RLock()

    @staticmethod
    def group(config: RunConfig) -> tuple[str, str]:
        return config.method, config.dataset

    def on_event(self, event: JobEvent) -> None:
        with self.lock:
            config = self.configs.get(event.run_key)
            if config is None or event.run_key in self.ended:
                return
            now = self.clock()
            job = self.running.get(event.run_key)
            if job is None or event.phase == STARTED:
                job = self.running[event.run_key] = _Job(config, now)
                self.peak = max(self.peak, len(self.running))
            if event.phase != STARTED:
                self._progress(job, event, now)
            if self.view is not None:
                self.view.job_event(self, config, event)

    def _progress(self, job: _Job, event: JobEvent, now: float) -> None:
        if event.epochs == 0:
            if job.training_ended is None and event.phase == f"{job.config.method} · test":
                job.training_ended = now
            return
        job.current = event.phase
        phase = job.phases.get(event.phase)
        if phase is None or phase.epochs != event.epochs:
            phase = job.phases[event.phase] = _Phase(event.epochs, began=now)
        phase.done = event.epoch - 1 + (event.step / event.steps if event.steps else 1.0)
        if phase.first is None:
            phase.first = phase.done
        phase.measured_at = now

    def on_result(self, result: JobResult) -> None:
        """A job ended; a BUSY one (another process held it) or a RESTARTED one (its worker
        ended under it) is queued again."""
        with self.lock:
            key = result.config.run_key()
            job = self.running.pop(key, None)
            if result.status in ("BUSY", "RESTARTED"):
                return
            self.ended.add(key)
            self.busy += result.seconds
            if result.status == "FINISHED" and result.seconds > 0:
                tail, paces = None, {}
                if job is not None:
                    if job.training_ended is not None:
                        tail = self.clock() - job.training_ended
                    paces = {self._name(job, name): phase.pace for name, phase in job.phases.items()
                             if phase.pace is not None and phase.measured >= 1}
                self.history.add(self.group(result.config), result.seconds, tail, paces)
            if self.view is not None:
                self.view.job_ended(self, result)

    @staticmethod
    def _name(job: _Job, phase: str) -> str:
        """A phase of the job without its method's prefix (a nested base run's keeps it)."""
        prefix = f"{job.config.method} · "
        return phase[len(prefix):] if phase.startswith(prefix) else phase

    def state(self, job: _Job, now: float) -> JobState:
        """What is known of ``job`` now (``JobState``)."""
        own = f"{job.config.method} · {OWN}"
        epochs = {name: phase.epochs for name, phase in job.phases.items()}
        epochs.setdefault(own, job.config.epochs)
        known = sum(epochs.values())
        done = sum(phase.done for phase in job.phases.values())
        since = now - job.training_ended if job.training_ended is not None else None
        own_left = 0 if own in job.phases else job.config.epochs
        current = job.phases.get(job.current)
        if current is None:
            return JobState(self.group(job.config), now - job.began, done / known if known else 0.0,
                            own_left=own_left, since_training=since)
        pace = current.pace
        if pace is None:  # its first steps: the pace of the phase before, where there was one
            pace = next((p.pace for p in reversed(job.phases.values()) if p.pace is not None), None)
        return JobState(self.group(job.config), now - job.began, done / known if known else 0.0,
                        self._name(job, job.current), current.epochs - current.done, pace, current.measured,
                        own_left, since)

    def eta(self) -> float | None:
        """Seconds until every job of the sweep has ended (``estimate_eta``). Jobs run on
        the launcher's slots or as many as were seen running at once; where no job reports
        (a launcher without events), on as many as the ended jobs' seconds per second of
        the sweep say were busy."""
        with self.lock:
            now = self.clock()
            running = [self.state(job, now) for job in self.running.values()]
            queued = [self.group(config) for key, config in self.configs.items()
                      if key not in self.ended and key not in self.running]
            slots = max(self.slots, self.peak)
            if self.peak == 0 and now > self.began:
                slots = max(slots, round(self.busy / (now - self.began)))
            return estimate_eta(running, queued, self.history, slots)

    def counts(self) -> tuple[int, int]:
        """Jobs ended and in all."""
        return len(self.ended), len(self.configs)


def job_label(config: RunConfig) -> str:
    return f"{config.method} on {config.dataset} ({config.model}, seed {config.seed})"


def short_label(config: RunConfig) -> str:
    """A job in a bar: ``jtt/synthetic_artifacts/small_cnn/s0``."""
    return f"{config.method}/{config.dataset}/{config.model}/s{config.seed}"


# Views -------------------------------------------------------------------------------


class SweepView:
    """What a view is told; both are called with the monitor's lock held."""

    def job_event(self, monitor: SweepMonitor, config: RunConfig, event: JobEvent) -> None: ...

    def job_ended(self, monitor: SweepMonitor, result: JobResult) -> None: ...


class SweepLines(SweepView):
    """Plain lines: per job, its phase's epoch now and then (``LINE_INTERVAL``), with
    the sweep's ETA, so a log shows a long job is moving."""

    def __init__(self, log: Callable[[str], None], interval: float | None = None):
        self.log = log
        self.interval = LINE_INTERVAL if interval is None else interval
        self.last: dict[str, float] = {}

    def job_event(self, monitor: SweepMonitor, config: RunConfig, event: JobEvent) -> None:
        if event.epochs == 0 or event.step != event.steps:
            return
        now = monitor.clock()
        key = event.run_key
        if key in self.last and now - self.last[key] < self.interval:
            return
        self.last[key] = now
        self.log(f"  {job_label(config)} · {event.phase.split(' · ', 1)[-1]} epoch {event.epoch}/{event.epochs} "
                 f"[sweep ETA {duration(monitor.eta())}]")

    def job_ended(self, monitor: SweepMonitor, result: JobResult) -> None:
        self.last.pop(result.config.run_key(), None)


class SweepBars(SweepView):
    """At a terminal: one line for the sweep (jobs ended, ETA) and a bar per running job
    (its phase, epoch, steps, rate and the phase's time left), on ``console``."""

    def __init__(self, console: Console):
        from rich.progress import Progress

        self.bar = Progress(*bar_columns(), console=console, transient=True, refresh_per_second=4)
        self.sweep = self.bar.add_task("sweep", total=None, steps="")
        self.tasks: dict[str, tuple[str, TaskID]] = {}  # run key -> (phase, task id)
        self.last_eta = 0.0
        self.monitor: SweepMonitor | None = None

    def __enter__(self) -> SweepBars:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def _sweep_line(self, monitor: SweepMonitor) -> None:
        ended, total = monitor.counts()
        self.bar.update(self.sweep, description=f"sweep: {ended}/{total} jobs ended · "
                        f"{len(monitor.running)} running · ETA {duration(monitor.eta())}")

    def job_event(self, monitor: SweepMonitor, config: RunConfig, event: JobEvent) -> None:
        key = event.run_key
        fields = bar_fields(f"{short_label(config)} · {event.phase.split(' · ', 1)[-1] if event.phase else 'starting'}",
                            event.epoch, event.epochs, event.step, event.steps)
        phase, task = self.tasks.get(key, (None, None))
        if task is None or phase != event.phase:
            if task is not None:
                self.bar.remove_task(task)
            task = self.bar.add_task(fields.pop("description"), total=event.epochs * event.steps or None,
                                     completed=fields.pop("completed", 0), steps=fields.pop("steps"))
            self.tasks[key] = (event.phase, task)
        self.bar.update(task, **fields)
        now = monitor.clock()
        if now - self.last_eta >= 1.0:  # the ETA line once a second, not per event
            self.last_eta = now
            self._sweep_line(monitor)

    def job_ended(self, monitor: SweepMonitor, result: JobResult) -> None:
        _, task = self.tasks.pop(result.config.run_key(), (None, None))
        if task is not None:
            self.bar.remove_task(task)
        self._sweep_line(monitor)


@contextlib.contextmanager
def sweep_view(console: Console, enabled: bool = True) -> Iterator[SweepView | None]:
    """How a sweep shows its running jobs on ``console``: bars at a terminal, else lines
    (``SweepLines``); None where not ``enabled``."""
    if not enabled:
        yield None
    elif console.is_terminal:
        with SweepBars(console) as bars:
            yield bars
    else:
        yield SweepLines(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
