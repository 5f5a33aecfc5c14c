"""Claims on jobs: at most one process runs a run key at a time.

Two sweeps (or a sweep and a ``debiasbench run``) that share a store and a checkpoint
folder may reach the same job. Without a claim both would run it, and the second would
resume from the first one's *live* checkpoint. A claim is an exclusive ``flock`` on
``<checkpoint_dir>/claims/<run key>.lock``, held for as long as the job runs. The kernel
drops it when its holder exits, however it exits (SIGKILL, out of memory), so a claim
is a lease that expires with its holder and never needs cleaning up by hand.

Claims are seen by every process that uses the same checkpoint folder (the default,
``.debiasbench/checkpoints``, is relative to the working directory: sweeps started from
one folder, or given an absolute ``checkpoint_dir``, share it); they are the fast, local
path. Processes that share the store but not the folder (another working directory,
another machine) see each other through the store: a RUNNING run whose holder keeps its
heartbeat fresh makes the job busy (``RunHeld``), and only a run whose holder is provably
gone is marked KILLED (``debiasbench.track.heartbeat``). On a cluster, a folder on a
filesystem whose locks all nodes see (NFSv4, Lustre, GPFS) also lets a job resume on
another node from its checkpoints. The lock files
are left in place (empty): removing one while another process waits on it would let two
processes hold "the same" claim.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from debiasbench.core.errors import UserError

CLAIMS_FOLDER = "claims"


class JobBusy(UserError):
    """Another process holds the claim on this job, or runs it (``RunHeld``)."""


class RunHeld(JobBusy):
    """Another process, which may use another claim folder, runs this job: the store holds
    a RUNNING run of it whose holder may be alive (``debiasbench.track.heartbeat``)."""


class Claim:
    """The claim on one run key; ``acquire`` then ``release`` (or use it as a context
    manager, which waits)."""

    def __init__(self, checkpoint_dir: str | Path, run_key: str):
        self.path = Path(checkpoint_dir) / CLAIMS_FOLDER / f"{run_key}.lock"
        self.run_key = run_key
        self._fd: int | None = None

    def acquire(self, wait: bool) -> bool:
        """Take the claim; without ``wait``, False at once where another process holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"checkpoint_dir: cannot write {str(self.path.parent)!r} ({exc.strerror}); "
                            "set checkpoint_dir to a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the process that last took the claim ('' if unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Claim:
        self.acquire(wait=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
