"""The benchmark table of docs/performance.md, from the JSON files of ``make bench`` runs.

    make bench PYTEST_ARGS="--benchmark-json=quiet.json"
    make bench PYTEST_ARGS="--benchmark-json=loaded.json"   # beside another make bench
    python tools/bench_table.py quiet.json loaded.json --labels quiet loaded

prints one row per ratio (group, candidate / baseline) with each run's median and spread,
and under the table each run's commit, date, load average and threads, so no figure is
copied by hand. Where two runs' spreads do not overlap, the row says so; ``--check`` then
exits 1 (the suite disagreeing with itself is what issue 30 asked to rule out).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ratio:
    median: float
    low: float
    high: float
    rounds: int
    clock: str
    load: tuple[float, float]
    threads: int


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def read_run(path: Path) -> tuple[dict[tuple[str, str, str], Ratio], dict[str, str]]:
    """``(group, candidate, baseline) -> Ratio`` of one ``--benchmark-json`` file, and the
    run's conditions (commit, date, load range, threads)."""
    data = json.loads(path.read_text())
    ratios: dict[tuple[str, str, str], Ratio] = {}
    loads: list[float] = []
    threads: set[int] = set()
    for bench in data["benchmarks"]:
        info = bench.get("extra_info") or {}
        if "ratios" not in info:
            continue
        load = tuple(info.get("load_1min") or (float("nan"), float("nan")))
        loads.extend(load)
        threads.add(int(info.get("threads", 0)))
        for candidate, ratio in info["ratios"].items():
            ratios[(bench["group"], candidate, info["baseline"])] = Ratio(
                ratio["median"], ratio["low"], ratio["high"], int(info["rounds"]), info["clock"],
                (load[0], load[-1]), int(info.get("threads", 0)))
    commit = (data.get("commit_info") or {}).get("id", "")[:7]
    conditions = {"commit": commit, "date": data.get("datetime", "")[:10],
                  "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?",
                  "threads": "/".join(str(t) for t in sorted(threads))}
    return ratios, conditions


def table(runs: list[tuple[str, Path]]) -> tuple[str, bool]:
    """The markdown table and whether every row's spreads overlap across the runs."""
    read = [(label, *read_run(path)) for label, path in runs]
    keys: list[tuple[str, str, str]] = []
    for _, ratios, _ in read:
        keys += [key for key in ratios if key not in keys]
    header = "| group | candidate / baseline | clock | " + " | ".join(label for label, _, _ in read) + " | |"
    lines = [header, "|" + "---|" * (4 + len(read))]
    agree = True
    for key in keys:
        found = [ratios.get(key) for _, ratios, _ in read]
        cells = [f"{_number(r.median)}x ({_number(r.low)}-{_number(r.high)})" if r else "-" for r in found]
        present = [r for r in found if r is not None]
        overlap = not present or max(r.low for r in present) <= min(r.high for r in present)
        agree &= overlap
        clock = next((r.clock for r in present), "")
        lines.append(f"| `{key[0]}` | {key[1]} / {key[2]} | {'CPU' if clock == 'cpu' else 'wall'} | "
                     + " | ".join(cells) + f" | {'' if overlap else 'ranges do not overlap'} |")
    lines.append("")
    for label, _, conditions in read:
        lines.append(f"- {label}: commit {conditions['commit']}, {conditions['date']}, "
                     f"1-minute load average {conditions['load']}, torch threads {conditions['threads']}")
    return "\n".join(lines), agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--check", action="store_true", help="exit 1 where two runs' spreads do not overlap")
    args = parser.parse_args(argv)
    labels = args.labels or [path.stem for path in args.files]
    if len(labels) != len(args.files):
        parser.error("give one label per file")
    text, agree = table(list(zip(labels, args.files)))
    print(text)
    return 1 if args.check and not agree else 0


if __name__ == "__main__":
    sys.exit(main())
