"""What this machine has: memory available now, for checks made before anything is built,
and the cores this process may use."""

from __future__ import annotations

import os

from debiasbench.core.errors import ConfigError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``, else the
    free physical pages); None where neither can be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, as set by ``taskset`` or a batch
    scheduler's cgroup), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Torch threads of a run given no ``--threads``: the cores this process may use, but
    never more than torch has now, so that a caller that set fewer (a test worker beside
    others, ``OMP_NUM_THREADS``) keeps them: two processes of two threads each on two
    cores run a small model several times slower than of one thread each."""
    import torch

    return max(1, min(available_cores(), torch.get_num_threads()))


def check_threads(threads: int) -> int:
    """``threads`` as given to ``--threads``: a positive count (more than the cores is
    allowed, and slower)."""
    if threads < 1:
        raise ConfigError(f"--threads: expected a positive number of torch threads, got {threads}")
    return threads


def check_memory(needed: int, what: str) -> None:
    """A ``ConfigError`` when ``what`` would need more than the memory available now:
    one line with both figures, instead of a process killed by the kernel mid-build."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{what} needs {_gib(needed)} of memory and this machine has {_gib(available)} "
                          "available; choose smaller sizes")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"
