"""Heartbeats of RUNNING runs: a run is marked KILLED only when its holder is provably gone.

Claims (``debiasbench.run.claims``) are locks on files under ``checkpoint_dir``: they
exclude processes that share that folder, and nothing else. Two processes started from
two working directories (each with its own relative ``checkpoint_dir``), or on two
machines, against one store both took their claim, and the second marked the first's
run, still alive, KILLED: both then finished, two FINISHED runs of one job.

So the store itself says who runs a job. Every run is created with the tags

- ``debiasbench.holder``: ``<host>:<pid>`` of the process that runs it,
- ``debiasbench.holder_space``: where that pid means something (the kernel's boot id and
  the process's pid namespace: two containers on one host differ),
- ``debiasbench.heartbeat``: the Unix time of its last beat,

and a daemon thread of the holder refreshes the heartbeat every ``interval()`` seconds
(``DEBIASBENCH_HEARTBEAT_SECONDS``, 10 by default: one tag write, about 10 ms on an sqlite
store) until the run ends. A RUNNING run's holder is gone (``holder_gone``) where its
heartbeat is older than ``timeout()`` (3 intervals), or at once where the holder is a
process of this machine and pid namespace that no longer exists. Only then is the run
taken over (marked KILLED and run again); while its holder is alive the job is busy,
as a claim another process holds is. Runs made before heartbeats (no tag) are taken
over by the holder of the claim, as before.

Clocks of the machines sharing a store must agree to well within ``timeout()`` (NTP).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from debiasbench.core.environment import seconds_setting
from debiasbench.core.errors import JobBusy

HEARTBEAT_TAG = "debiasbench.heartbeat"
HOLDER_TAG = "debiasbench.holder"
HOLDER_SPACE_TAG = "debiasbench.holder_space"
#: Seconds between beats, unless ``INTERVAL_VARIABLE`` sets them.
HEARTBEAT_INTERVAL = 10.0
INTERVAL_VARIABLE = "DEBIASBENCH_HEARTBEAT_SECONDS"
#: Intervals without a beat after which a run's holder is taken for gone.
TIMEOUT_INTERVALS = 3


class RunHeld(JobBusy):
    """Another process, which may use another claim folder, runs this job: the store holds
    a RUNNING run of it whose holder may be alive (``holder_gone`` is None)."""


#: Runs this process beats for (its own runs are alive while they are here).
_BEATING: set[str] = set()


def interval() -> float:
    """Seconds between two beats: ``DEBIASBENCH_HEARTBEAT_SECONDS`` (0.1 to 3600), else 10."""
    return seconds_setting(INTERVAL_VARIABLE, HEARTBEAT_INTERVAL, 0.1, 3600)


def timeout() -> float:
    """Seconds without a beat after which a RUNNING run's holder is taken for gone."""
    return TIMEOUT_INTERVALS * interval()


def process_space() -> str:
    """Where this process's pid names this process: the boot id of the kernel and the pid
    namespace (the host name where they cannot be read)."""
    parts = []
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            parts.append(handle.read().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts = [socket.gethostname()]
    return " ".join(parts)


def holder_tags() -> dict[str, str]:
    """The tags a run is created with: its holder, where that holder's pid means something,
    and a first beat."""
    return {HOLDER_TAG: f"{socket.gethostname()}:{os.getpid()}", HOLDER_SPACE_TAG: process_space(),
            HEARTBEAT_TAG: f"{time.time():.3f}"}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def holder_gone(run: Any, now: float | None = None) -> str | None:
    """Why ``run``'s holder is provably gone, or None while it may be alive: its heartbeat
    is older than ``timeout()``; or it is a process of this machine and pid namespace that
    no longer exists (this process, where it no longer beats for the run). A run without a
    heartbeat (made before heartbeats) counts as gone: the claim's holder takes it over."""
    tags = run.data.tags
    beat = tags.get(HEARTBEAT_TAG)
    if beat is None:
        return "it has no heartbeat (made before heartbeats)"
    try:
        beat_at = float(beat)
    except ValueError:
        return f"its heartbeat {beat!r} is not a time"
    holder = tags.get(HOLDER_TAG, "")
    if tags.get(HOLDER_SPACE_TAG) == process_space():
        try:
            pid = int(holder.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            pid = None
        if pid == os.getpid() and run.info.run_id not in _BEATING:
            return f"its holder, this process ({holder}), no longer runs it"
        if pid is not None and pid != os.getpid() and not _pid_exists(pid):
            return f"its holder, process {holder} of this machine, has ended"
    age = (time.time() if now is None else now) - beat_at
    if age > timeout():
        return f"its holder ({holder or 'unknown'}) sent no heartbeat for {age:.0f} s"
    return None


def describe(run: Any, now: float | None = None) -> str:
    """``run``'s holder and heartbeat's age, for a message: 'host:pid, heartbeat 3 s ago'."""
    tags = run.data.tags
    try:
        age = f", heartbeat {(time.time() if now is None else now) - float(tags[HEARTBEAT_TAG]):.0f} s ago"
    except (KeyError, ValueError):
        age = ""
    return f"{tags.get(HOLDER_TAG, 'unknown')}{age}"


class Heartbeat:
    """Refreshes ``HEARTBEAT_TAG`` of run ``run_id`` every ``interval()`` seconds from a
    daemon thread, until ``stop``. A beat that cannot be written is skipped (the next one
    may be; a holder that cannot write for ``timeout()`` may be taken over)."""

    def __init__(self, client: Any, run_id: str):
        self.client, self.run_id = client, run_id
        self.seconds = interval()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"debiasbench-heartbeat-{run_id[:8]}", daemon=True)
        _BEATING.add(run_id)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopping.wait(self.seconds):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception:  # the store is busy or gone for a moment: the next beat may pass
                pass

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        _BEATING.discard(self.run_id)
