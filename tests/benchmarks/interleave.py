"""Interleaved comparisons: how every group of ``make bench`` is measured.

A group times a baseline and one or more candidates. Timing them one after another lets
whatever the machine does meanwhile (another process, a frequency change, a warmer
allocator) land on one member and not on the other, which produced ratios below 1.0 for
candidates that do strictly more work than their baseline. Here the members take turns
instead:

1. torch's intra-op threads and the BLAS / OpenMP pools numpy and scikit-learn use
   (through threadpoolctl) are pinned to ``threads`` (``BENCH_THREADS``, default 1) for the
   whole comparison and restored afterwards;
2. every member is called ``warmup`` times (not counted), then calibrated: the number of
   calls of one *sample* is raised until a sample lasts at least ``min_sample_s``. A member
   whose last warm-up call took that long is called once per sample without being
   called again to find out;
3. ``rounds`` rounds follow. A round times one sample of every member back to back, in the
   given order on even rounds and in reverse order on odd rounds (A B B A ...), so that no
   member always runs first or right after a given other one;
4. each round gives, per candidate, the ratio of its time per call to the baseline's in
   the same round. A candidate's ratio is the median over rounds; its *spread* is the
   10th to 90th percentile of the rounds' ratios (linear interpolation between rounds;
   with fewer than ten rounds this is close to their minimum and maximum). A spread that
   contains 1.0, or comes within 1% of it, is no measurable difference, whatever the
   median says.

A sample's duration is wall-clock time, or, for groups whose members compute in this
process only (``clock="cpu"``), the CPU time of this process: time the scheduler gives
other processes is not counted, so those ratios stay steady on a loaded machine (on a 2-core
machine at a load average of 9, identical steps measured 0.79-1.19 by the wall clock and
0.96-1.01 in CPU time). ``BENCH_CLOCK=wall`` times every group by the wall clock.

The 1-minute load average is read before the first round and after every round; its
lowest and highest reading are kept with the results, as are the thread count and the
rounds. ``compare`` runs all of it inside one ``benchmark.pedantic`` round and stores
the figures in ``benchmark.extra_info`` (so ``--benchmark-json`` keeps them);
``tests/benchmarks/conftest.py`` prints one line per ratio at the end of the session.

Under ``--benchmark-disable`` (``make test``) ``compare`` calls every member once and
measures nothing, so the groups stay smoke tests of what they time.

A member that runs on a GPU must synchronise inside the callable, or its sample ends
before the device's work does.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

#: Environment variables: the rounds of a group and torch's intra-op threads while timing.
ROUNDS_ENV, THREADS_ENV = "BENCH_ROUNDS", "BENCH_THREADS"
DEFAULT_ROUNDS, DEFAULT_THREADS = 15, 1
#: A sample (the calls timed as one) lasts at least this long once calibrated.
MIN_SAMPLE_S = 0.05
#: The spread: these percentiles of the rounds' ratios.
SPREAD_PERCENTILES = (10.0, 90.0)
SPREAD_TEXT = "10th-90th percentile of the rounds' ratios"
#: A spread that comes this close to 1.0 counts as reaching it: the benchmark does not
#: resolve differences that small (3 rounds of an epoch fed by the device loader, which does
#: strictly more than slicing, once measured 0.91x-1.00x of the sliced epoch, "1.01x faster").
RESOLUTION = 0.01

Clock = Callable[[], float]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (0 <= q <= 100), interpolating linearly between
    the two nearest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass(frozen=True)
class Ratio:
    """One candidate against the baseline: the median of the rounds' ratios and their
    spread (``low``-``high``, ``SPREAD_PERCENTILES``)."""

    median: float
    low: float
    high: float
    per_round: tuple[float, ...]

    @classmethod
    def of(cls, per_round: Sequence[float]) -> Ratio:
        low, high = (percentile(per_round, q) for q in SPREAD_PERCENTILES)
        return cls(percentile(per_round, 50.0), low, high, tuple(per_round))

    @property
    def no_difference(self) -> bool:
        """The spread reaches 1.0, or comes within ``RESOLUTION`` of it: neither faster nor
        slower, as far as this measures."""
        return self.low <= 1.0 + RESOLUTION and self.high >= 1.0 - RESOLUTION

    def verdict(self) -> str:
        if self.no_difference:
            return "no measurable difference"
        if self.median < 1.0:
            return f"{1.0 / self.median:.{2 if self.median > 0.5 else 1}f}x faster"
        return "slower"


@dataclass
class Comparison:
    """What ``measure`` / ``compare`` found. ``results``: each member's return value from
    its last call. ``ratios``: per candidate; empty when nothing was timed (disabled)."""

    baseline: str
    results: dict[str, Any]
    ratios: dict[str, Ratio] = field(default_factory=dict)
    rounds: int = 0
    threads: int | None = None
    #: The name of the clock in ``CLOCKS`` (``measure`` only knows the function).
    clock: str | None = None
    load: tuple[float, float] | None = None
    iterations: dict[str, int] = field(default_factory=dict)
    #: Seconds per call, per member, one entry per round.
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def extra_info(self) -> dict[str, Any]:
        """What ``benchmark.extra_info`` keeps (JSON types only)."""
        return {
            "baseline": self.baseline,
            "ratios": {name: {"median": r.median, "low": r.low, "high": r.high, "per_round": list(r.per_round),
                              "verdict": r.verdict()} for name, r in self.ratios.items()},
            "spread": SPREAD_TEXT,
            "rounds": self.rounds,
            "threads": self.threads,
            "clock": self.clock,
            "load_1min": list(self.load) if self.load else None,
            "iterations": dict(self.iterations),
            "median_seconds_per_call": {name: percentile(s, 50.0) for name, s in self.seconds.items() if s},
        }


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The members in the order round ``round_index`` times them: as given on even rounds,
    reversed on odd ones."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def timed(fn: Callable[[], Any], calls: int, clock: Clock) -> tuple[float, Any]:
    """Seconds of ``calls`` calls of ``fn`` back to back, and the last one's result."""
    result = None
    start = clock()
    for _ in range(calls):
        result = fn()
    return clock() - start, result


def calibrate(fn: Callable[[], Any], min_sample_s: float, clock: Clock, one_call: float | None = None,
              max_calls: int = 1_000_000) -> int:
    """The number of calls of ``fn`` whose total lasts at least ``min_sample_s``: 1 when a
    single call does (``one_call``: the seconds of a call already timed, which spares
    calling a slow member again), else the estimate from the last try with 20% to spare,
    tried until it holds."""
    calls, elapsed = 1, one_call
    while True:
        if elapsed is None:
            elapsed, _ = timed(fn, calls, clock)
        if elapsed >= min_sample_s or calls >= max_calls:
            return calls
        estimate = calls * 10 if elapsed <= 0 else math.ceil(calls * min_sample_s / elapsed * 1.2)
        calls, elapsed = min(max(estimate, calls + 1), calls * 10, max_calls), None


def load_average() -> float | None:
    """The 1-minute load average, where the system gives one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measure(baseline: str, members: Mapping[str, Callable[[], Any]], *, rounds: int,
            min_sample_s: float = MIN_SAMPLE_S, warmup: int = 1, clock: Clock = time.perf_counter,
            loadavg: Callable[[], float | None] = load_average) -> Comparison:
    """Warm up, calibrate and time ``members`` (``baseline`` among them) in ``rounds``
    interleaved rounds; see the module's docstring."""
    if baseline not in members:
        raise ValueError(f"the baseline {baseline!r} is not among the members {list(members)}")
    if len(members) < 2 or rounds < 1:
        raise ValueError("a comparison needs a baseline, a candidate and at least one round")
    names = [baseline, *(name for name in members if name != baseline)]
    results: dict[str, Any] = {}
    last_warmup: dict[str, float | None] = dict.fromkeys(names)
    for name in names:
        for _ in range(warmup):
            last_warmup[name], results[name] = timed(members[name], 1, clock)
    iterations = {name: calibrate(members[name], min_sample_s, clock, last_warmup[name]) for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    loads = [loadavg()]
    for index in range(rounds):
        for name in round_order(names, index):
            elapsed, results[name] = timed(members[name], iterations[name], clock)
            seconds[name].append(elapsed / iterations[name])
        loads.append(loadavg())
    ratios = {name: Ratio.of([c / b for c, b in zip(seconds[name], seconds[baseline])])
              for name in names[1:]}
    readings = [value for value in loads if value is not None]
    return Comparison(baseline, results, ratios, rounds=rounds, iterations=iterations, seconds=seconds,
                      load=(min(readings), max(readings)) if readings else None)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    number = int(value)
    if number < 1:
        raise ValueError(f"{name}={value}: must be a positive integer")
    return number


def bench_threads() -> int:
    """torch's intra-op threads while a group is timed: ``BENCH_THREADS``, default 1."""
    return env_int(THREADS_ENV, DEFAULT_THREADS)


def rounds_to_run(rounds: int | None) -> int:
    """``BENCH_ROUNDS`` (default 15) rounds; a group that names fewer (its members take
    seconds) keeps its number when that is smaller."""
    default = env_int(ROUNDS_ENV, DEFAULT_ROUNDS)
    return default if rounds is None else min(rounds, default)


#: What a sample's duration is read from: wall-clock time, or the CPU time of this process
#: (all its threads; not its child processes, not time spent waiting for the CPU or a disk).
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.process_time}
#: ``BENCH_CLOCK=wall`` times every group by the wall clock, whatever the group chose.
CLOCK_ENV = "BENCH_CLOCK"


def clock_to_use(clock: str) -> str:
    """The group's ``clock``, unless ``BENCH_CLOCK=wall`` asks for the wall clock everywhere."""
    forced = os.environ.get(CLOCK_ENV, "").strip()
    if forced not in ("", "wall"):
        raise ValueError(f"{CLOCK_ENV}={forced}: the only value it takes is 'wall'")
    if clock not in CLOCKS:
        raise ValueError(f"clock {clock!r}: one of {sorted(CLOCKS)}")
    return forced or clock


def compare(benchmark: Any, baseline: Callable[[], Any], candidates: Mapping[str, Callable[[], Any]], *,
            baseline_name: str = "baseline", rounds: int | None = None, threads: int | None = None,
            min_sample_s: float = MIN_SAMPLE_S, warmup: int = 1, clock: str = "wall") -> Comparison:
    """Time ``baseline`` against each of ``candidates`` in interleaved rounds inside
    pytest-benchmark's ``benchmark`` fixture (one pedantic round for the whole comparison),
    keeping the ratios, spreads, load, threads and rounds in ``benchmark.extra_info``.

    ``rounds``: the group's own cap on ``BENCH_ROUNDS`` (for members taking seconds).
    ``clock``: ``"wall"``, or ``"cpu"`` for members that compute in this process only (no
    child processes, no waiting on files): the process's CPU time does not count the time
    other processes hold the CPU, so it stays steady on a loaded machine.
    ``threads``: torch's intra-op threads and the BLAS / OpenMP pools while timing
    (default ``BENCH_THREADS`` or 1).
    With the fixture disabled, every member is called once and nothing is timed.
    """
    import torch

    if baseline_name in candidates:
        raise ValueError(f"a candidate is named like the baseline: {baseline_name!r}")
    members = {baseline_name: baseline, **candidates}
    clock = clock_to_use(clock)
    threads = threads or bench_threads()
    before = torch.get_num_threads()
    pools = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn

        pools.enter_context(threadpool_limits(limits=threads))
    except ImportError:
        pass
    torch.set_num_threads(threads)
    try:
        if getattr(benchmark, "disabled", False):  # pedantic calls it once, timing nothing
            return benchmark.pedantic(lambda: Comparison(baseline_name, {name: fn() for name, fn in members.items()},
                                                         threads=threads), rounds=1, iterations=1)
        count = rounds_to_run(rounds)
        comparison: Comparison = benchmark.pedantic(
            lambda: measure(baseline_name, members, rounds=count, min_sample_s=min_sample_s, warmup=warmup,
                            clock=CLOCKS[clock]),
            rounds=1, iterations=1)
    finally:
        torch.set_num_threads(before)
        pools.close()
    comparison.threads, comparison.clock = threads, clock
    benchmark.extra_info.update(comparison.extra_info())
    return comparison


def format_number(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:.0f}"
    if ratio >= 10:
        return f"{ratio:.1f}"
    if ratio >= 0.1:
        return f"{ratio:.2f}"
    return f"{ratio:.3f}"


def summary_lines(group: str, info: Mapping[str, Any]) -> list[str]:
    """One line per candidate of a group's ``extra_info``:
    ``group: candidate / baseline = 1.03x (0.98-1.09, 15 rounds, 1 thread, CPU time, load 2.1-2.3):
    no measurable difference``."""
    lines = []
    threads = info.get("threads")
    load = info.get("load_1min")
    rounds = info.get("rounds")
    context = [f"{rounds} round{'s' if rounds != 1 else ''}"]
    if threads is not None:
        context.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if info.get("clock"):
        context.append({"cpu": "CPU time", "wall": "wall clock"}.get(info["clock"], info["clock"]))
    if load:
        context.append(f"load {load[0]:.1f}-{load[1]:.1f}")
    for name, figures in info.get("ratios", {}).items():
        ratio = Ratio(figures["median"], figures["low"], figures["high"], tuple(figures.get("per_round", ())))
        spread = f"{format_number(ratio.low)}-{format_number(ratio.high)}"
        lines.append(f"{group}: {name} / {info['baseline']} = {format_number(ratio.median)}x "
                     f"({', '.join([spread, *context])}): {ratio.verdict()}")
    return lines
