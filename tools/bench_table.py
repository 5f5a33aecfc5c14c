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
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def _interleave() -> ModuleType:
    """The suite's own ``tests/benchmarks/interleave.py`` (its ``Ratio`` and numbers as
    ``make bench`` prints them; standard library only at import)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "benchmarks" / "interleave.py"
    spec = importlib.util.spec_from_file_location("debiasbench_bench_interleave", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


interleave = _interleave()
format_number = interleave.format_number


def read_run(path: Path) -> tuple[dict[tuple[str, str, str], tuple[Any, str]], dict[str, str]]:
    """``(group, candidate, baseline) -> (interleave.Ratio, clock)`` of one
    ``--benchmark-json`` file, and the run's conditions (commit, date, load range, threads)."""
    data = json.loads(path.read_text())
    ratios: dict[tuple[str, str, str], tuple[Any, str]] = {}
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
            ratios[(bench["group"], candidate, info["baseline"])] = (interleave.Ratio(
                ratio["median"], ratio["low"], ratio["high"], tuple(ratio.get("per_round", ()))), info["clock"])
    commit = (data.get("commit_info") or {}).get("id", "")[:7]
    conditions = {"commit": commit, "date": data.get("datetime", "")[:10],
                  "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?",
                  "threads": "/".join(str(t) for t in sorted(threads))}
    return ratios, conditions


def _cell(ratio: Any) -> str:
    return f"{format_number(ratio.median)}x ({format_number(ratio.low)}-{format_number(ratio.high)})"


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
        present = [item[0] for item in found if item]
        cells = [_cell(item[0]) if item else "-" for item in found]
        overlap = not present or max(r.low for r in present) <= min(r.high for r in present)
        agree &= overlap
        clock = next((item[1] for item in found if item), "")
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
