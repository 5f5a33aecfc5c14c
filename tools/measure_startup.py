"""What a tiny ``debiasbench run`` costs as a process, against importing torch and MLflow.

    python tools/measure_startup.py [--rounds 7] [--fresh-store] [--other-tree DIR]
                                    [--sweep JOBS] [--importtime FILE]

Each round starts, in fresh processes with ``OMP_NUM_THREADS=1``:

- A: ``python -c "import torch, mlflow"`` (what any run process must import);
- B: ``debiasbench run`` of a tiny job (vanilla on ``synthetic_artifacts``, 100 / 40 / 40
  images of 16x16 pixels, 1 epoch, CPU, no model logged, ``--rerun``) into an sqlite
  store made by a first, untimed run, so B is a run on a store that exists;
- B0 (with ``--other-tree DIR``): B with the package of another checkout, e.g. ``git
  worktree add /tmp/before <commit>``: before and after a change, side by side;
- C (with ``--fresh-store``): B into a new sqlite file each round, so C also builds the
  store's schema;
- S (with ``--sweep JOBS``): ``debiasbench sweep --workers 2`` of JOBS tiny jobs (B's job,
  seeds new in each round) into B's store: two worker processes each importing what a job
  imports, then the jobs; S0 (with ``--other-tree`` too): S with the other checkout;
- A1 (with ``--paused-baseline``): A with Python's garbage collector disabled, as a run
  imports torch and MLflow (``debiasbench.core.startup``): what the imports cost without
  the collections that A makes while they run.

The members take turns (A B ... in even rounds, ... B A in odd ones), so load that comes
and goes hits them alike. Each process is timed by the wall clock and by the CPU time it
used (user + system, all its threads: less affected by other processes on a loaded
machine). Each round gives every member's ratio to A (and B / B0); the script prints the
median of the rounds' ratios with their minimum and maximum, each member's seconds, and
the 1-minute load average before the first round and after each. Nothing here is
asserted: it is a measurement. ``--importtime FILE`` runs B once more under
``python -X importtime`` and writes what it imports beyond A, slowest first.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

TINY = ["--method", "vanilla", "--dataset", "synthetic_artifacts", "--set", "dataset_params.n_train=100",
        "--set", "dataset_params.n_val=40", "--set", "dataset_params.n_test=40",
        "--set", "dataset_params.image_size=16", "--set", "dataset_params.patch_size=3", "--set", "epochs=1",
        "--set", "device=cpu", "--set", "log_model=false", "--no-progress", "--rerun"]
IMPORTS = [sys.executable, "-c", "import torch, mlflow"]
PAUSED_IMPORTS = [sys.executable, "-c", "import gc; gc.disable(); import torch, mlflow"]
#: What the ``debiasbench`` console script runs.
CONSOLE_SCRIPT = "import sys; from debiasbench.cli import main; sys.exit(main())"


def command() -> list[str]:
    """The ``debiasbench`` console script beside this interpreter (as a user starts it), or
    ``python -m debiasbench.cli`` where there is none."""
    script = Path(sys.executable).with_name("debiasbench")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "debiasbench.cli"]


def run_command(folder: Path, store: str, module: bool = False) -> list[str]:
    """The tiny run into ``folder/store``; ``module``: started as ``python -c`` running what the
    console script runs, so that ``PYTHONPATH`` picks the package (``--other-tree``)."""
    start = [sys.executable, "-c", CONSOLE_SCRIPT] if module else command()
    return [*start, "run", *TINY, "--tracking-uri", f"sqlite:///{folder / store}",
            "--set", f"checkpoint_dir={folder / 'checkpoints'}"]


def sweep_command(folder: Path, name: str, first_seed: int, jobs: int, module: bool = False) -> list[str]:
    """``debiasbench sweep --workers 2`` of B's job with seeds ``first_seed`` on (new to the
    store, so every job runs) into B's store, from a sweep file ``folder/name.yaml``."""
    sets = [TINY[i + 1].split("=", 1) for i, flag in enumerate(TINY) if flag == "--set"]
    params = {key.split(".", 1)[1]: value for key, value in sets if key.startswith("dataset_params.")}
    path = folder / f"{name}.yaml"
    path.write_text(f"methods: [vanilla]\ndatasets: [synthetic_artifacts]\n"
                    f"seeds: [{', '.join(str(first_seed + i) for i in range(jobs))}]\n"
                    f"overrides:\n  epochs: 1\n  device: cpu\n  log_model: false\n"
                    f"  checkpoint_dir: {folder / 'checkpoints'}\n"
                    f"  dataset_params: {{{', '.join(f'{k}: {v}' for k, v in params.items())}}}\n")
    start = [sys.executable, "-c", CONSOLE_SCRIPT] if module else command()
    return [*start, "sweep", str(path), "--workers", "2", "--tracking-uri", f"sqlite:///{folder / 'store.db'}"]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall-clock seconds of the process and the CPU seconds (user + system, every thread)
    it used: the growth of this process's children's usage, one child at a time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def import_times(text: str) -> dict[str, tuple[int, int]]:
    """``-X importtime`` output: module -> (self, cumulative) microseconds."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def write_importtime(path: Path, env: dict[str, str], folder: Path) -> None:
    """What B imports beyond A, by cumulative time, into ``path``."""
    def profile(argv: list[str]) -> dict[str, tuple[int, int]]:
        done = subprocess.run(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=folder, check=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return import_times(done.stderr)

    base = profile(IMPORTS)
    run = profile(run_command(folder, "store.db"))
    extra = {name: times for name, times in run.items() if name not in base}
    def total(times: dict[str, tuple[int, int]]) -> str:
        return f"{sum(own for own, _ in times.values()) / 1e6:.2f} s"

    lines = [f"imports of A: {total(base)} (self times summed); of B: {total(run)}; B beyond A: {total(extra)}",
             "cumulative ms, self ms, module (imported by B, not by A)"]
    lines += [f"{cumulative / 1e3:9.1f} {own / 1e3:9.1f}  {name}"
              for name, (own, cumulative) in sorted(extra.items(), key=lambda kv: -kv[1][1])]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def ratios(values: list[float], base: list[float]) -> str:
    """The rounds' ratios of ``values`` to ``base``, as ``spread`` shows them."""
    return spread([v / b for v, b in zip(values, base)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fresh-store", action="store_true", help="also time C: a run that creates its store")
    parser.add_argument("--other-tree", type=Path, metavar="DIR",
                        help="also time B0: B with the debiasbench of this checkout (PYTHONPATH=DIR), e.g. a "
                             "git worktree of an earlier commit")
    parser.add_argument("--paused-baseline", action="store_true",
                        help="also time A1: A with the garbage collector disabled")
    parser.add_argument("--sweep", type=int, metavar="JOBS",
                        help="also time S: debiasbench sweep --workers 2 of JOBS tiny jobs (S0 with --other-tree)")
    parser.add_argument("--importtime", type=Path, metavar="FILE", help="write B's imports beyond A's here")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        first = timed(run_command(folder, "store.db"), env, folder)  # creates the store; not counted
        members: dict[str, tuple[str, Callable[[int], list[str]], dict[str, str]]] = {
            "A": ("import torch, mlflow", lambda _: IMPORTS, env),
            "B": ("debiasbench run, existing store", lambda _: run_command(folder, "store.db"), env)}
        if args.other_tree:
            other = {**env, "PYTHONPATH": str(args.other_tree.resolve())}
            members["B0"] = (f"the same run, debiasbench of {args.other_tree}",
                             lambda _: run_command(folder, "store.db", module=True), other)
        if args.paused_baseline:
            members["A1"] = ("import torch, mlflow, garbage collector disabled", lambda _: PAUSED_IMPORTS, env)
        if args.sweep:
            members["S"] = (f"debiasbench sweep --workers 2, {args.sweep} jobs",
                            lambda r: sweep_command(folder, f"S{r}", r * args.sweep, args.sweep), env)
            if args.other_tree:
                members["S0"] = (f"the same sweep, debiasbench of {args.other_tree}",
                                 lambda r: sweep_command(folder, f"S0{r}", (args.rounds + r) * args.sweep, args.sweep,
                                                         module=True), other)
        if args.fresh_store:
            members["C"] = ("debiasbench run, new store", lambda r: run_command(folder, f"fresh-{r}.db"), env)
        wall: dict[str, list[float]] = {member: [] for member in members}
        cpu: dict[str, list[float]] = {member: [] for member in members}
        loads = [load_average()]
        for round_ in range(args.rounds):
            for member in list(members) if round_ % 2 == 0 else list(reversed(members)):
                _, argv, member_env = members[member]
                seconds, used = timed(argv(round_), member_env, folder)
                wall[member].append(seconds)
                cpu[member].append(used)
            loads.append(load_average())
        if args.importtime:
            write_importtime(args.importtime, env, folder)
    known = [float(x) for x in loads if x != "?"]
    load = f"{min(known):.2f}-{max(known):.2f}" if known else "unknown"
    print(f"{args.rounds} rounds (A B ... then ... B A), OMP_NUM_THREADS=1, {os.cpu_count()} cores, load average "
          f"{load} (1-minute, before the first round and after each); the first run, which created the store, "
          f"took {first[0]:.2f} s")
    print("seconds, median (min-max): wall clock / CPU (user + system)")
    for member, (what, _, _) in members.items():
        print(f"  {member} ({what}): {spread(wall[member])} / {spread(cpu[member])}")
    print("ratios, median of the rounds' ratios (min-max): wall clock / CPU")
    for member in members:
        if member != "A":
            print(f"  {member} / A: {ratios(wall[member], wall['A'])} / {ratios(cpu[member], cpu['A'])}")
    for member, base in (("B", "B0"), ("B", "A1"), ("S", "S0")):
        if base in members:
            print(f"  {member} / {base}: {ratios(wall[member], wall[base])} / {ratios(cpu[member], cpu[base])}")


if __name__ == "__main__":
    main()
