"""The arithmetic of ``make bench``'s interleaved comparisons (tests/benchmarks/interleave.py)
with a fake clock: members take turns in A B B A order, ratios are taken within a round,
the spread is the 10th-90th percentile, and a spread containing 1.0 (or within 1% of it)
is reported as no measurable difference."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from benchmarks.interleave import (Comparison, Ratio, calibrate, clock_to_use, compare, measure, percentile,
                                   round_order, rounds_to_run, summary_lines)


class FakeMachine:
    """A clock that only moves when a member runs; ``slowdown`` scales every member's time
    (the machine's load), and each call and each end of a round (where ``measure`` reads
    the load average) is logged."""

    def __init__(self, seconds: dict[str, float]):
        self.now, self.slowdown = 0.0, 1.0
        self.log: list[str] = []
        self.seconds = seconds
        self.loads: list[float] = []

    def clock(self) -> float:
        return self.now

    def member(self, name: str) -> Callable[[], str]:
        def call() -> str:
            self.now += self.seconds[name] * self.slowdown
            self.log.append(name)
            return name

        return call

    def members(self) -> dict[str, Callable[[], str]]:
        return {name: self.member(name) for name in self.seconds}

    def loadavg(self) -> float:
        self.log.append("|")
        self.loads.append(self.slowdown)
        return self.slowdown


def test_rounds_alternate_forward_and_reverse_order():
    assert round_order(["b", "x", "y"], 0) == ["b", "x", "y"]
    assert round_order(["b", "x", "y"], 1) == ["y", "x", "b"]
    assert round_order(["b", "x", "y"], 2) == ["b", "x", "y"]


def test_calibration_makes_a_sample_last_the_minimum():
    machine = FakeMachine({"fast": 0.001, "slow": 0.2})
    assert calibrate(machine.member("fast"), 0.05, machine.clock) * 0.001 >= 0.05
    assert calibrate(machine.member("fast"), 0.05, machine.clock) <= 70  # not far beyond it
    assert calibrate(machine.member("slow"), 0.05, machine.clock) == 1
    assert calibrate(machine.member("fast"), 0.05, machine.clock, one_call=0.001) * 0.001 >= 0.05
    machine.log.clear()
    assert calibrate(machine.member("slow"), 0.05, machine.clock, one_call=0.2) == 1
    assert machine.log == []  # a slow member timed once already is not called again


def test_a_slow_member_is_called_once_to_warm_up_then_once_per_round():
    machine = FakeMachine({"base": 0.3, "cand": 0.6})
    measure("base", machine.members(), rounds=2, clock=machine.clock, loadavg=machine.loadavg)
    assert machine.log == ["base", "cand", "|", "base", "cand", "|", "cand", "base", "|"]


def test_members_take_turns_abba_after_warmup_and_calibration():
    machine = FakeMachine({"base": 0.01, "cand": 0.02})
    result = measure("base", machine.members(), rounds=4, min_sample_s=0.05, warmup=1, clock=machine.clock,
                     loadavg=machine.loadavg)
    n_base, n_cand = result.iterations["base"], result.iterations["cand"]
    assert n_base * 0.01 >= 0.05 and n_cand * 0.02 >= 0.05 and n_base > n_cand
    # warm-up, calibration (the count estimated from the warm-up call, timed), then the load
    # is read once before the first round and after each round.
    first = machine.log.index("|")
    assert machine.log[:first] == ["base", "cand"] + ["base"] * n_base + ["cand"] * n_cand
    rounds = " ".join(machine.log[first:]).split("|")[1:-1]
    forward, reverse = ["base"] * n_base + ["cand"] * n_cand, ["cand"] * n_cand + ["base"] * n_base
    assert [r.split() for r in rounds] == [forward, reverse, forward, reverse]
    assert result.results == {"base": "base", "cand": "cand"}
    assert result.seconds["base"] == pytest.approx([0.01] * 4)
    assert result.ratios["cand"].per_round == pytest.approx((2.0,) * 4)


def test_ratios_are_taken_within_a_round_so_a_changing_load_cancels():
    machine = FakeMachine({"base": 0.01, "same_work": 0.01, "more_work": 0.015})
    members = machine.members()

    def loadavg() -> float:
        load = machine.loadavg()
        machine.slowdown *= 1.7  # every round runs on a busier machine than the last
        return load

    result = measure("base", members, rounds=5, min_sample_s=0.05, clock=machine.clock, loadavg=loadavg)
    assert result.ratios["same_work"].median == pytest.approx(1.0)
    assert result.ratios["more_work"].low == pytest.approx(1.5)
    assert result.ratios["more_work"].high == pytest.approx(1.5)
    assert result.seconds["base"][-1] > 5 * result.seconds["base"][0]  # the load changed a lot
    assert result.load == (1.0, pytest.approx(1.7 ** 5))


def test_measure_needs_the_baseline_a_candidate_and_a_round():
    members = FakeMachine({"a": 0.01, "b": 0.01}).members()
    with pytest.raises(ValueError, match="baseline"):
        measure("c", members, rounds=3)
    with pytest.raises(ValueError, match="round"):
        measure("a", members, rounds=0)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [0.5, 4.0, 1.0, 2.5, 0.7, 9.0, 1.1]])
@pytest.mark.parametrize("q", [0, 10, 50, 90, 100])
def test_percentile_interpolates_as_numpy_does(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_spread_is_the_10th_to_90th_percentile_and_decides_the_verdict():
    ratio = Ratio.of([1.0 + i / 100 for i in range(11)])  # 1.00 ... 1.10
    assert (ratio.median, ratio.low, ratio.high) == pytest.approx((1.05, 1.01, 1.09))
    assert ratio.verdict() == "no measurable difference"  # 1.01: within 1% of 1.0
    assert Ratio.of([1.0 + i / 100 for i in range(2, 13)]).verdict() == "slower"  # 1.03 ... 1.11
    assert Ratio.of([0.96, 0.99, 1.02, 0.98, 1.01]).verdict() == "no measurable difference"
    # a median below 1.0 is still no speed-up when some rounds measured slower
    assert Ratio.of([0.80, 0.85, 0.90, 1.05, 1.10]).verdict() == "no measurable difference"
    # within 1% of 1.0 is too close to call
    assert Ratio.of([0.93, 0.99, 0.999]).verdict() == "no measurable difference"  # 0.93-0.997
    assert Ratio.of([1.005, 1.02, 1.04]).verdict() == "no measurable difference"
    assert Ratio.of([1.02, 1.03, 1.04]).verdict() == "slower"
    assert Ratio.of([0.4, 0.5, 0.6]).verdict() == "2.0x faster"
    assert Ratio.of([0.78, 0.8, 0.82]).verdict() == "1.25x faster"


def test_summary_line_names_group_members_ratio_spread_rounds_threads_and_load():
    comparison = Comparison("baseline_vanilla", {}, {"ga": Ratio(1.03, 0.98, 1.09, ()),
                                                      "lff": Ratio(2.14, 2.05, 2.2, ())},
                            rounds=15, threads=1, load=(2.06, 2.31))
    assert summary_lines("ga-step", comparison.extra_info()) == [
        "ga-step: ga / baseline_vanilla = 1.03x (0.98-1.09, 15 rounds, 1 thread, load 2.1-2.3): "
        "no measurable difference",
        "ga-step: lff / baseline_vanilla = 2.14x (2.05-2.20, 15 rounds, 1 thread, load 2.1-2.3): slower",
    ]
    assert summary_lines("cav-fit", {**comparison.extra_info(), "threads": 2, "load_1min": None})[0] == \
        "cav-fit: ga / baseline_vanilla = 1.03x (0.98-1.09, 15 rounds, 2 threads): no measurable difference"
    comparison.clock = "cpu"
    assert summary_lines("ga-step", comparison.extra_info())[0] == \
        "ga-step: ga / baseline_vanilla = 1.03x (0.98-1.09, 15 rounds, 1 thread, CPU time, load 2.1-2.3): " \
        "no measurable difference"
    assert "wall clock, load" in summary_lines("ga-step", {**comparison.extra_info(), "clock": "wall"})[0]
    assert summary_lines("sweep", {**comparison.extra_info(), "rounds": 1})[1].startswith(
        "sweep: lff / baseline_vanilla = 2.14x (2.05-2.20, 1 round, 1 thread, CPU time, load 2.1-2.3)")
    assert summary_lines("not-interleaved", {}) == []


def test_a_group_chooses_its_clock_unless_bench_clock_asks_for_the_wall_clock(monkeypatch):
    monkeypatch.delenv("BENCH_CLOCK", raising=False)
    assert clock_to_use("cpu") == "cpu" and clock_to_use("wall") == "wall"
    monkeypatch.setenv("BENCH_CLOCK", "wall")
    assert clock_to_use("cpu") == "wall"
    monkeypatch.setenv("BENCH_CLOCK", "cpu")
    with pytest.raises(ValueError, match="BENCH_CLOCK"):
        clock_to_use("wall")


def test_rounds_come_from_the_environment_and_a_group_may_only_lower_them(monkeypatch):
    monkeypatch.delenv("BENCH_ROUNDS", raising=False)
    assert rounds_to_run(None) == 15 and rounds_to_run(3) == 3
    monkeypatch.setenv("BENCH_ROUNDS", "4")
    assert rounds_to_run(None) == 4 and rounds_to_run(3) == 3 and rounds_to_run(10) == 4
    monkeypatch.setenv("BENCH_ROUNDS", "0")
    with pytest.raises(ValueError, match="BENCH_ROUNDS"):
        rounds_to_run(None)


class FakeBenchmark:
    """pytest-benchmark's fixture as ``compare`` uses it."""

    def __init__(self, disabled: bool):
        self.disabled, self.pedantic_calls = disabled, 0
        self.extra_info: dict[str, Any] = {}

    def pedantic(self, target, rounds: int, iterations: int):
        assert (rounds, iterations) == (1, 1)
        self.pedantic_calls += 1
        return target()


def test_compare_pins_threads_records_them_and_restores_them(monkeypatch):
    monkeypatch.delenv("BENCH_CLOCK", raising=False)
    monkeypatch.setenv("BENCH_ROUNDS", "2")
    monkeypatch.setenv("BENCH_THREADS", "1")
    before = torch.get_num_threads()
    pools_before = [pool["num_threads"] for pool in threadpool_info()]
    seen = []

    def member() -> int:
        seen.append(torch.get_num_threads())
        seen.extend(pool["num_threads"] for pool in threadpool_info())
        return 7

    benchmark = FakeBenchmark(disabled=False)
    result = compare(benchmark, member, {"other": member}, baseline_name="baseline_x", min_sample_s=1e-4)
    assert set(seen) == {1} and len(seen) > 2  # torch and the BLAS / OpenMP pools
    assert torch.get_num_threads() == before
    assert [pool["num_threads"] for pool in threadpool_info()] == pools_before
    assert benchmark.pedantic_calls == 1 and result.results == {"baseline_x": 7, "other": 7}
    info = benchmark.extra_info
    assert info["baseline"] == "baseline_x" and info["rounds"] == 2 and info["threads"] == 1
    assert info["clock"] == "wall"
    assert set(info["ratios"]) == {"other"} and len(info["ratios"]["other"]["per_round"]) == 2


def test_compare_disabled_calls_each_member_once_and_times_nothing():
    calls = []
    benchmark = FakeBenchmark(disabled=True)
    result = compare(benchmark, lambda: calls.append("b"), {"c": lambda: calls.append("c")})
    assert calls == ["b", "c"] and benchmark.pedantic_calls == 1 and result.ratios == {}
    assert benchmark.extra_info == {}
